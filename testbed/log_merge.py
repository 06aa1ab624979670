"""Merges the logs of a wall-clock run (agents and shaper) into the packets.parquet rows the `sim` backend writes.

Each agent logs what it sent (flow, frame, size, send time, payload digest) and what it received (digest,
arrival time); the userspace shaper logs its decision per packet (digest, drop cause, Gilbert-Elliott state).
A datagram is followed across the logs by its payload digest; identical payloads (a repeated feedback
message, say) are told apart by their order of occurrence, which every hop preserves unless jitter reorders.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from testbed.logs import PacketLog

# Why a packet that was sent did not arrive, beyond the shaper's own "loss" and "queue":
NOT_SEEN_BY_SHAPER = "host"  # it never reached the shaper (lost in the sending host)
LOST_AFTER_SHAPER = "socket"  # the shaper sent it on time, but the receiving agent never read it
UNATTRIBUTED = "unattributed"  # no per-packet shaper log (netem): the cause is unknown


def _text(value: object) -> str | None:
    """A string column's value, with pandas' missing markers (NaN, None) as None."""
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _occurrence(frame: pd.DataFrame) -> pd.DataFrame:
    """Number repeated digests 0, 1, 2, ... in log order, so (digest, occurrence) identifies a datagram."""
    frame = frame.reset_index(drop=True)
    return frame.assign(occurrence=frame.groupby("digest").cumcount())


def _with_arrivals(sent: pd.DataFrame, arrived: pd.DataFrame) -> pd.DataFrame:
    """Credit the k-th arrival of a digest to the k-th of `sent` carrying it."""
    arrivals = _occurrence(arrived)[["digest", "occurrence", "arrived_s"]]
    rows = _occurrence(sent).merge(arrivals, on=["digest", "occurrence"], how="left").drop(columns="occurrence")
    rows["arrived_s"] = rows["arrived_s"].astype("float64")
    return rows


def _direction(sent: pd.DataFrame, arrived: pd.DataFrame, shaper: pd.DataFrame | None, end_s: float,
               min_delay_s: float) -> pd.DataFrame:
    """The sent datagrams of one direction with arrival time, drop cause and GE state."""
    if shaper is None:
        rows = _with_arrivals(sent, arrived)
        rows["ge_state"] = None
        # A packet that could not have arrived by the end was in flight, as in `sim`; the rest were dropped.
        rows["drop"] = [UNATTRIBUTED if pd.isna(arrived_s) and sent_s + min_delay_s <= end_s else None
                        for arrived_s, sent_s in zip(rows["arrived_s"], rows["sent_s"])]
        return rows
    decisions = _occurrence(shaper)[["digest", "occurrence", "drop", "scheduled_s", "ge_state"]]
    rows = _occurrence(sent).merge(decisions, on=["digest", "occurrence"], how="left", indicator=True)
    rows = rows.drop(columns="occurrence")
    seen = rows.pop("_merge") == "both"
    passed = seen & rows["drop"].isna()
    # Only packets the shaper let through can have arrived: match arrivals among those alone.
    delivered = _with_arrivals(rows[passed], arrived)["arrived_s"].to_numpy()
    rows["arrived_s"] = float("nan")
    rows.loc[passed, "arrived_s"] = delivered
    lost = rows["arrived_s"].isna()
    drop = rows["drop"].astype(object)
    in_flight = rows["scheduled_s"].isna() | (rows["scheduled_s"] > end_s)
    drop[lost & ~seen] = NOT_SEEN_BY_SHAPER
    drop[lost & passed & ~in_flight] = LOST_AFTER_SHAPER
    drop[~lost] = None
    rows["drop"] = drop
    return rows.drop(columns=["scheduled_s"])


def merge_packet_logs(forward_sent: pd.DataFrame, forward_arrived: pd.DataFrame, reverse_sent: pd.DataFrame,
                      reverse_arrived: pd.DataFrame, shaper: pd.DataFrame | None, end_s: float,
                      min_delay_s: tuple[float, float], names: tuple[str, str, str, int]) -> pa.Table:
    """The packets.parquet rows of one run, in send order, from the agents' and shaper's logs.

    `shaper` has columns direction, digest, drop, scheduled_s, ge_state in arrival order (None: no shaper log);
    `min_delay_s` is the smallest possible one-way delay per direction, used to tell in-flight from dropped
    packets when there is no shaper log.
    """
    parts = []
    for direction, sent, arrived, floor in (("forward", forward_sent, forward_arrived, min_delay_s[0]),
                                            ("reverse", reverse_sent, reverse_arrived, min_delay_s[1])):
        decisions = None if shaper is None else shaper[shaper["direction"] == direction]
        parts.append(_direction(sent, arrived, decisions, end_s, floor))
    rows = pd.concat(parts, ignore_index=True).sort_values("sent_s", kind="stable")
    log = PacketLog()
    for row in rows.itertuples(index=False):
        frame_id = None if pd.isna(row.frame_id) else int(row.frame_id)
        arrived = None if pd.isna(row.arrived_s) else float(row.arrived_s)
        log.add(row.flow, frame_id, int(row.size), float(row.sent_s), arrived, _text(row.drop), _text(row.ge_state))
    return log.to_table(*names)
