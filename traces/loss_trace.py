"""Loss traces: per-packet outcomes (0/1 lines) and lossy time intervals (CSV `start_s,end_s`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from testbed.traces.csv_pairs import read_number_pairs
from testbed.traces.errors import TraceError
from testbed.traces.textfile import content_lines


def read_packet_outcomes(path: str | Path) -> np.ndarray:
    """Read one outcome per line, 0 = delivered and 1 = lost, into a bool array (True = lost)."""
    outcomes = []
    for line, text in content_lines(path):
        if text not in ("0", "1"):
            raise TraceError(path, line, f"expected 0 or 1, got {text!r}")
        outcomes.append(text == "1")
    if not outcomes:
        raise TraceError(path, None, "no packet outcomes")
    return np.array(outcomes, dtype=bool)


def read_loss_intervals(path: str | Path) -> np.ndarray:
    """Read `start_s,end_s` rows, each a lossy interval [start, end), into an (n, 2) float64 array."""
    rows = read_number_pairs(path, ("start_s", "end_s"))
    if not rows:
        raise TraceError(path, None, "no intervals")
    # Starting at 0 lets the first interval pass the overlap check once its start is known >= 0.
    previous_end = 0.0
    for line, start, end in rows:
        if start < 0:
            raise TraceError(path, line, f"start_s must be >= 0, got {start!r}")
        if end <= start:
            raise TraceError(path, line, f"end_s must be > start_s, got [{start!r}, {end!r})")
        # Intervals are half-open, so one may begin exactly where the previous ended.
        if start < previous_end:
            raise TraceError(
                path, line, f"intervals must be sorted and non-overlapping: {start!r} < previous end {previous_end!r}"
            )
        previous_end = end
    return np.array([(start, end) for _, start, end in rows], dtype=np.float64).reshape(-1, 2)
