"""Collects a run's per-packet rows into an Arrow table with the packets.parquet schema."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from testbed.analysis.log_schema import PACKETS_SCHEMA


def _ms(seconds: list[float | None]) -> pa.Array:
    """Seconds to milliseconds, rounded to the microsecond so logs read cleanly; None stays null."""
    values = np.array([np.nan if s is None else s for s in seconds], dtype=np.float64)
    rounded = np.round(values * 1000.0, 3)
    return pa.array(rounded, type=pa.float64(), from_pandas=True)


class PacketLog:
    """Per-packet rows of one run, in send order; sequence numbers count per flow."""

    def __init__(self) -> None:
        self._next_seq: dict[str, int] = {}
        self.flow: list[str] = []
        self.seq: list[int] = []
        self.frame_id: list[int | None] = []
        self.size: list[int] = []
        self.sent_s: list[float] = []
        self.arrived_s: list[float | None] = []
        self.drop: list[str | None] = []
        self.ge_state: list[str | None] = []

    def add(self, flow: str, frame_id: int | None, size: int, sent_s: float, arrived_s: float | None,
            drop: str | None, ge_state: str | None) -> int:
        """Append one packet and return its sequence number within the flow."""
        seq = self._next_seq.get(flow, 0)
        self._next_seq[flow] = seq + 1
        self.flow.append(flow)
        self.seq.append(seq)
        self.frame_id.append(frame_id)
        self.size.append(size)
        self.sent_s.append(sent_s)
        self.arrived_s.append(arrived_s)
        self.drop.append(drop)
        self.ge_state.append(ge_state)
        return seq

    def to_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table:
        """The rows as an Arrow table with PACKETS_SCHEMA."""
        n = len(self.seq)
        columns = [
            pa.array([scheme] * n, pa.string()),
            pa.array([network] * n, pa.string()),
            pa.array([video] * n, pa.string()),
            pa.array([seed] * n, pa.int64()),
            pa.array(self.flow, pa.string()),
            pa.array(self.seq, pa.int64()),
            pa.array(self.frame_id, pa.int64()),
            pa.array(self.size, pa.int64()),
            _ms(self.sent_s),
            _ms(self.arrived_s),
            pa.array(self.drop, pa.string()),
            pa.array(self.ge_state, pa.string()),
        ]
        return pa.Table.from_arrays(columns, schema=PACKETS_SCHEMA)
