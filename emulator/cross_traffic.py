"""Cross traffic on the bottleneck: when a competing flow of a dumbbell sends, as a deterministic schedule.

A cross-traffic flow enters the forward link beside the scheme's own packets and meets the same loss model,
FIFO, serializer and delay. It sends fixed-size packets evenly spaced at `rate_kbps` while it is on.
Always on (``on_s`` None) it is a constant-bitrate probe; otherwise it alternates on and off periods,
of fixed length or drawn from exponential distributions with those means (the classic on/off source).
The schedule depends only on the parameters, the seed and the flow's key, so both backends send the same
packets at the same planned times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from testbed.emulator.random_stream import UniformStream

PERIODS = ("fixed", "exponential")
MAX_CROSS_FLOWS = 4  # each flow gets its own pair of hosts on the `mininet` backend
CROSS_ROLE_PREFIX = "cross-"


def cross_roles(index: int) -> tuple[str, str]:
    """Roles (hosts and agents) of the sender and receiver of the `index`-th cross-traffic flow, 1-based."""
    return f"{CROSS_ROLE_PREFIX}sender-{index}", f"{CROSS_ROLE_PREFIX}receiver-{index}"


@dataclass(frozen=True)
class CrossTrafficParams:
    """One competing flow: packet size and rate while on, and its on/off pattern."""

    rate_kbps: float
    packet_bytes: int = 1200
    start_s: float = 0.0
    on_s: float | None = None  # None: always on after start_s
    off_s: float = 0.0
    periods: str = "fixed"  # "fixed" | "exponential" (on/off lengths with means on_s / off_s)

    @property
    def interval_s(self) -> float:
        """Gap between two packets while the flow is on."""
        return self.packet_bytes * 8 / (self.rate_kbps * 1000)


def on_periods(params: CrossTrafficParams, end_s: float, seed: int, *key: str) -> list[tuple[float, float]]:
    """The [start, end) intervals in which the flow is on, clipped to `end_s`."""
    if params.on_s is None:
        return [(params.start_s, end_s)] if params.start_s < end_s else []
    draws = UniformStream(seed, *key, "on-off") if params.periods == "exponential" else None

    def length(mean: float) -> float:
        if draws is None:
            return mean
        return -mean * math.log1p(-draws.next())  # inverse CDF of the exponential distribution

    periods = []
    t = params.start_s
    while t < end_s:
        on = length(params.on_s)
        periods.append((t, min(t + on, end_s)))
        t += on + length(params.off_s)
    return periods


def send_times(params: CrossTrafficParams, end_s: float, seed: int, *key: str) -> np.ndarray:
    """Planned send time of every packet of the flow before `end_s`, ascending (seconds)."""
    interval = params.interval_s
    parts = []
    for start, stop in on_periods(params, end_s, seed, *key):
        count = math.ceil((stop - start) / interval - 1e-9)  # packets at start + k * interval < stop
        parts.append(start + interval * np.arange(max(count, 0)))
    return np.concatenate(parts) if parts else np.empty(0)
