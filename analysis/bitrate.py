"""Bitrate of the forward flows in fixed windows (1 s by default), from packets.parquet.

A packet sent at t ms falls in window floor(t / window_ms), so windows are aligned to time 0 and a packet
at 999.9 ms is in window 0, one at 1000.0 ms in window 1. Sent rates (media, fec, rtx, total) window packets by
send time; ``delivered_kbps`` windows the forward packets that arrived by their arrival time. Each run's
table runs from window 0 to the window holding its last send, empty windows included (zero kbps), and
every window is divided by its full width, the last (partial) one too. Arrivals after the end of that last
window (at most the path delay of the final packets) are outside the table.
Feedback flows (ack, report, keyframe-request, nack) travel the reverse path and are not counted.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.analysis.log_schema import FORWARD_FLOWS
from testbed.analysis.network_summary import RUN_KEYS

WINDOW_MS = 1000.0
BITRATE_COLUMNS = ["window", "start_s", "media_kbps", "fec_kbps", "rtx_kbps", "total_kbps", "delivered_kbps"]


def _window_kbps(times_ms: np.ndarray, sizes: np.ndarray, windows: int, window_ms: float) -> np.ndarray:
    """kbps per window of the bytes whose times fall in windows 0..windows-1 (later ones are dropped)."""
    index = np.floor(times_ms / window_ms).astype(np.int64)
    inside = index < windows
    bytes_per_window = np.bincount(index[inside], weights=sizes[inside], minlength=windows)
    # bits per millisecond are kbit/s.
    return 8.0 * bytes_per_window / window_ms


def _run_windows(run: pd.DataFrame, window_ms: float) -> dict[str, np.ndarray]:
    """The window columns of one run's forward packets."""
    sent = run["sent_ms"].to_numpy(dtype=float)
    sizes = run["bytes"].to_numpy(dtype=float)
    if (sent < 0).any():
        raise ValueError("send times must not be negative")
    windows = int(np.floor(sent.max() / window_ms)) + 1
    flow = run["flow"].to_numpy()
    arrived = run["arrived_ms"].to_numpy(dtype=float)
    delivered = ~np.isnan(arrived)
    media = _window_kbps(sent[flow == "media"], sizes[flow == "media"], windows, window_ms)
    fec = _window_kbps(sent[flow == "fec"], sizes[flow == "fec"], windows, window_ms)
    rtx = _window_kbps(sent[flow == "rtx"], sizes[flow == "rtx"], windows, window_ms)
    index = np.arange(windows)
    return {
        "window": index,
        "start_s": index * window_ms / 1000.0,
        "media_kbps": media,
        "fec_kbps": fec,
        "rtx_kbps": rtx,
        "total_kbps": media + fec + rtx,
        "delivered_kbps": _window_kbps(arrived[delivered], sizes[delivered], windows, window_ms),
    }


def bitrate_windows(packets: pd.DataFrame, window_ms: float = WINDOW_MS) -> pd.DataFrame:
    """One row per run and window: media, fec, rtx and total sent kbps, and delivered kbps by arrival time."""
    if not window_ms > 0:
        raise ValueError(f"window_ms must be positive, got {window_ms}")
    forward = packets[packets["flow"].isin(FORWARD_FLOWS)]
    tables = []
    for key, run in forward.groupby(RUN_KEYS, sort=False):
        columns = _run_windows(run, window_ms)
        table = pd.DataFrame(columns)
        for name, value in zip(RUN_KEYS, key):
            table.insert(RUN_KEYS.index(name), name, value)
        tables.append(table)
    if not tables:
        return pd.DataFrame(columns=[*RUN_KEYS, *BITRATE_COLUMNS])
    return pd.concat(tables, ignore_index=True)
