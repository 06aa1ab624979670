"""Piecewise-constant rate schedules: CSV rows `time_s,kbps`, each rate holding until the next row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.traces.csv_pairs import read_number_pairs
from testbed.traces.errors import TraceError


def read_rate_schedule(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a `time_s,kbps` CSV into float64 (time_s, kbps) arrays; the last rate holds forever."""
    rows = read_number_pairs(path, ("time_s", "kbps"))
    if not rows:
        raise TraceError(path, None, "no rows")
    previous: float | None = None
    for line, time_s, kbps in rows:
        # The rate must be defined from the very start of the run.
        if previous is None and time_s != 0:
            raise TraceError(path, line, f"first time_s must be 0, got {time_s!r}")
        if previous is not None and time_s <= previous:
            raise TraceError(path, line, f"time_s must be increasing: {time_s!r} after {previous!r}")
        if kbps < 0:
            raise TraceError(path, line, f"kbps must be >= 0, got {kbps!r}")
        previous = time_s
    times = np.array([time_s for _, time_s, _ in rows], dtype=np.float64)
    rates = np.array([kbps for _, _, kbps in rows], dtype=np.float64)
    return times, rates
