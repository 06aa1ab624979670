"""Windowed bitrate (testbed.analysis.bitrate) on hand-built packet logs.

125 bytes in a 1 s window is 1 kbps (1000 bits / 1 s), which keeps the expected numbers readable.
"""

from __future__ import annotations

import pandas as pd
import pytest

from testbed.analysis.bitrate import BITRATE_COLUMNS, bitrate_windows
from testbed.analysis.network_summary import RUN_KEYS

NAN = float("nan")


def packets_table(rows: list[tuple[str, float, float, int]], *, scheme: str = "s", network: str = "n",
                  video: str = "v", seed: int = 1) -> pd.DataFrame:
    """Packets of one run from (flow, sent_ms, arrived_ms or NaN, bytes) rows."""
    return pd.DataFrame({
        "scheme": scheme, "network": network, "video": video, "seed": seed,
        "flow": [r[0] for r in rows], "seq": range(len(rows)), "frame_id": 0,
        "bytes": [r[3] for r in rows], "sent_ms": [r[1] for r in rows], "arrived_ms": [r[2] for r in rows],
        "drop": [None if r[2] == r[2] else "loss" for r in rows], "ge_state": None,
    })


def column(table: pd.DataFrame, name: str) -> list[float]:
    return table[name].tolist()


def test_windows_are_aligned_to_zero_with_half_open_bounds() -> None:
    table = bitrate_windows(packets_table([
        ("media", 0.0, 50.0, 125), ("media", 999.9, 1049.9, 250), ("media", 1000.0, 1050.0, 500),
    ]))
    assert column(table, "window") == [0, 1]
    assert column(table, "start_s") == [0.0, 1.0]
    assert column(table, "media_kbps") == [3.0, 4.0]


def test_media_and_fec_are_split_and_summed() -> None:
    table = bitrate_windows(packets_table([
        ("media", 10.0, 60.0, 1250), ("fec", 20.0, 70.0, 625), ("media", 1500.0, 1550.0, 125),
        ("fec", 1600.0, NAN, 250),
    ]))
    assert column(table, "media_kbps") == [10.0, 1.0]
    assert column(table, "fec_kbps") == [5.0, 2.0]
    assert column(table, "total_kbps") == [15.0, 3.0]


def test_delivered_counts_arrived_forward_packets_by_arrival_time() -> None:
    table = bitrate_windows(packets_table([
        ("media", 900.0, 1100.0, 125),   # sent in window 0, arrives in window 1
        ("fec", 950.0, 999.0, 250),      # arrives in window 0
        ("media", 960.0, NAN, 1000),     # lost: sent, never delivered
        ("media", 1990.0, 2100.0, 500),  # arrives after the last send window: outside the table
    ]))
    assert column(table, "total_kbps") == [11.0, 4.0]
    assert column(table, "delivered_kbps") == [2.0, 1.0]


def test_empty_windows_up_to_the_last_send_are_present() -> None:
    table = bitrate_windows(packets_table([("media", 0.0, 50.0, 125), ("media", 3500.0, 3550.0, 125)]))
    assert column(table, "window") == [0, 1, 2, 3]
    assert column(table, "total_kbps") == [1.0, 0.0, 0.0, 1.0]
    assert column(table, "delivered_kbps") == [1.0, 0.0, 0.0, 1.0]


def test_feedback_flows_are_neither_counted_nor_extend_the_run() -> None:
    table = bitrate_windows(packets_table([
        ("media", 100.0, 150.0, 125), ("ack", 200.0, 250.0, 1000), ("report", 4200.0, 4250.0, 1000),
        ("keyframe-request", 300.0, 350.0, 1000),
    ]))
    assert column(table, "window") == [0]
    assert column(table, "total_kbps") == [1.0]
    assert column(table, "delivered_kbps") == [1.0]


def test_runs_are_separate_and_keep_their_keys() -> None:
    packets = pd.concat([
        packets_table([("media", 100.0, 150.0, 125)], scheme="a", seed=1),
        packets_table([("fec", 1100.0, 1150.0, 250)], scheme="b", seed=2),
    ], ignore_index=True)
    table = bitrate_windows(packets)
    assert list(table.columns) == [*RUN_KEYS, *BITRATE_COLUMNS]
    assert table[["scheme", "seed", "window"]].values.tolist() == [["a", 1, 0], ["b", 2, 0], ["b", 2, 1]]
    assert column(table, "fec_kbps") == [0.0, 0.0, 2.0]


def test_other_window_widths() -> None:
    table = bitrate_windows(packets_table([("media", 499.0, 499.5, 125), ("media", 500.0, 510.0, 125)]),
                            window_ms=500.0)
    assert column(table, "start_s") == [0.0, 0.5]
    assert column(table, "total_kbps") == [2.0, 2.0]
    assert column(table, "delivered_kbps") == [2.0, 2.0]
    with pytest.raises(ValueError, match="window_ms must be positive"):
        bitrate_windows(packets_table([("media", 0.0, 1.0, 1)]), window_ms=0.0)


def test_no_forward_packets_gives_an_empty_table() -> None:
    table = bitrate_windows(packets_table([("ack", 0.0, 50.0, 40)]))
    assert table.empty
    assert list(table.columns) == [*RUN_KEYS, *BITRATE_COLUMNS]
