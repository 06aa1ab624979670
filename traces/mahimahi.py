"""Mahimahi mm-link traces: one delivery opportunity of 1504 bytes per line, at an integer ms time.

mm-link replays the file in a loop whose period is the last timestamp, so a trace with N lines
and last timestamp T delivers N * 1504 * 8 / T kbps on average.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from testbed.traces.errors import TraceError
from testbed.traces.textfile import read_lines

BYTES_PER_OPPORTUNITY = 1504  # mm-link's PACKET_SIZE
BITS_PER_OPPORTUNITY = 8 * BYTES_PER_OPPORTUNITY

_TIMESTAMP = re.compile(r"[0-9]+")
# mm-link parses each line with strtol into a 64-bit long.
_MAX_TIMESTAMP = int(np.iinfo(np.int64).max)
_MAX_DIGITS = len(str(_MAX_TIMESTAMP))


def read_mahimahi_trace(path: str | Path) -> np.ndarray:
    """Read an mm-link trace into an int64 array of delivery-opportunity times in ms."""
    timestamps: list[int] = []
    for line, text in enumerate(read_lines(path), start=1):
        if not text:
            raise TraceError(path, line, "empty line")
        # Stricter than mm-link's strtol, which also skips leading blanks and takes a sign
        # (turning "-5" into a huge unsigned time); neither belongs in a trace.
        if not _TIMESTAMP.fullmatch(text):
            raise TraceError(path, line, f"expected a non-negative integer timestamp in ms, got {text!r}")
        # Count digits before calling int(), which refuses strings of over 4300 digits.
        significant = text.lstrip("0") or "0"
        value = int(significant) if len(significant) <= _MAX_DIGITS else _MAX_TIMESTAMP + 1
        if value > _MAX_TIMESTAMP:
            raise TraceError(path, line, f"timestamp too large: {text!r}")
        if timestamps and value < timestamps[-1]:
            raise TraceError(path, line, f"timestamps must be non-decreasing: {value} after {timestamps[-1]}")
        timestamps.append(value)
    if not timestamps:
        raise TraceError(path, None, "no timestamps")
    if timestamps[-1] == 0:
        raise TraceError(path, None, "trace must last a nonzero amount of time")
    return np.array(timestamps, dtype=np.int64)


def write_mahimahi_trace(path: str | Path, opportunities_ms: Sequence[int]) -> None:
    """Write delivery-opportunity times (ms) one per line, refusing a trace mm-link would reject."""
    times = np.asarray(opportunities_ms)
    if times.size == 0:
        raise ValueError("a trace needs at least one delivery opportunity")
    # Signed integers only: floats would be silently truncated, and values beyond int64 arrive as objects.
    if times.ndim != 1 or times.dtype.kind != "i":
        raise ValueError("opportunities_ms must be a flat sequence of int64-sized integers")
    if times.min() < 0:
        raise ValueError("opportunity times must be >= 0")
    if np.any(times[1:] < times[:-1]):
        raise ValueError("opportunity times must be non-decreasing")
    if times[-1] == 0:
        raise ValueError("the trace must last a nonzero amount of time")
    # newline="\n": mm-link rejects the "\r" a Windows newline translation would add.
    Path(path).write_text("".join(f"{time}\n" for time in times.tolist()), encoding="ascii", newline="\n")


def constant_rate_trace(kbps: float, duration_ms: int) -> np.ndarray:
    """Generate an mm-link trace delivering `kbps` on average over a loop of at most `duration_ms`.

    Rule: with P = 1504 * 8 / kbps ms per opportunity, opportunity k = 1..N sits at floor(k * P) ms,
    where N = floor(duration_ms / P) is the number of opportunities whose exact time fits in the
    duration. Starting at k = 1 (not 0) makes the loop period, the last timestamp T = floor(N * P),
    hold exactly N opportunities, so the mean rate N * 1504 * 8 / T lies in [kbps, kbps * (1 + 1/T)).
    """
    if not (math.isfinite(kbps) and kbps > 0):
        raise ValueError(f"kbps must be finite and > 0, got {kbps!r}")
    if duration_ms < 1:
        raise ValueError(f"duration_ms must be >= 1, got {duration_ms!r}")
    count = math.floor(duration_ms * kbps / BITS_PER_OPPORTUNITY)
    k = np.arange(1, count + 1, dtype=np.float64)
    times = np.floor(k * BITS_PER_OPPORTUNITY / kbps).astype(np.int64)
    # Too slow a rate fits no packet; sub-millisecond spacing over 1 ms can end at 0 ms.
    if times.size == 0 or times[-1] == 0:
        raise ValueError(f"{kbps!r} kbps over {duration_ms} ms gives no valid trace; lengthen duration_ms")
    return times
