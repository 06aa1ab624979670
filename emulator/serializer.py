"""Serializers: when does a FIFO link start and finish sending each packet.

A FIFO link's schedule for a packet depends only on earlier packets, so each packet's service
start and finish are computed the moment it is admitted (Lindley's recursion), with no events.
"""

from __future__ import annotations

import bisect
import math
from typing import Protocol

import numpy as np

MAHIMAHI_OPPORTUNITY_BYTES = 1504


class Serializer(Protocol):
    """Service schedule of a FIFO link."""

    def serve(self, size: int, now: float) -> tuple[float, float]:
        """Admit `size` bytes arriving at `now`; return (service start, finish), finish may be inf."""
        ...


class UnlimitedRate:
    """No rate limit: packets leave as they arrive."""

    __slots__ = ()

    def serve(self, size: int, now: float) -> tuple[float, float]:
        """Start and finish at once."""
        return now, now


class ConstantRate:
    """A link of fixed rate in kbit/s."""

    __slots__ = ("_seconds_per_byte", "_free_at")

    def __init__(self, kbps: float):
        self._seconds_per_byte = 8.0 / (kbps * 1000.0)
        self._free_at = 0.0

    def serve(self, size: int, now: float) -> tuple[float, float]:
        """Start when the link is free, finish one serialization time later."""
        start = now if now > self._free_at else self._free_at
        self._free_at = finish = start + size * self._seconds_per_byte
        return start, finish


class RateSchedule:
    """Piecewise-constant rate: `kbps[i]` holds from `times_s[i]` until the next entry, the last forever."""

    __slots__ = ("_times", "_bytes_per_s", "_free_at")

    def __init__(self, times_s: np.ndarray, kbps: np.ndarray):
        self._times = [float(t) for t in times_s]
        self._bytes_per_s = [float(k) * 1000.0 / 8.0 for k in kbps]
        self._free_at = 0.0

    def serve(self, size: int, now: float) -> tuple[float, float]:
        """Integrate the rate from the service start until `size` bytes have gone out."""
        start = now if now > self._free_at else self._free_at
        segment = max(bisect.bisect_right(self._times, start) - 1, 0)
        t, remaining = start, float(size)
        last = len(self._times) - 1
        while True:
            rate = self._bytes_per_s[segment]
            segment_end = self._times[segment + 1] if segment < last else math.inf
            if rate > 0:
                done_at = t + remaining / rate
                if done_at <= segment_end:
                    self._free_at = done_at
                    return start, done_at
                remaining -= (segment_end - t) * rate
            elif segment == last:
                self._free_at = math.inf
                return start, math.inf
            t = segment_end
            segment += 1


class DeliveryOpportunities:
    """Mahimahi link semantics: each trace line is one 1504-byte delivery opportunity at that ms.

    An opportunity is shared by several small packets or finishes part of a large one; bytes nobody
    is waiting for are wasted. A packet can only use opportunities strictly after its arrival (Mahimahi
    burns opportunities up to `now` before enqueueing). The trace repeats with period = last timestamp,
    unless `loop` is False, after which nothing is delivered.
    """

    __slots__ = ("_ms", "_count", "_period_ms", "_loop", "_next", "_last_time", "_left")

    def __init__(self, opportunities_ms: np.ndarray, loop: bool = True):
        self._ms = [int(x) for x in opportunities_ms]
        self._count = len(self._ms)
        self._period_ms = self._ms[-1]
        self._loop = loop
        self._next = 0  # global index of the first unused opportunity
        self._last_time = -math.inf  # time (s) of the last used opportunity
        self._left = 0  # bytes still free in that opportunity

    def opportunity_time(self, index: int) -> float:
        """Time in seconds of the opportunity with global index `index` (counting repeats)."""
        cycle, position = divmod(index, self._count)
        return (self._ms[position] + cycle * self._period_ms) / 1000.0

    def _first_after(self, now: float) -> int:
        """Global index of the first opportunity strictly later than `now`."""
        now_ms = now * 1000.0
        cycle = int(now_ms // self._period_ms)
        index = cycle * self._count + bisect.bisect_right(self._ms, now_ms - cycle * self._period_ms)
        # Settle on the same seconds values serve() returns: k/1000*1000 can round below k.
        while index > 0 and self.opportunity_time(index - 1) > now:
            index -= 1
        while self.opportunity_time(index) <= now:
            index += 1
        return index

    def serve(self, size: int, now: float) -> tuple[float, float]:
        """Consume opportunities for `size` bytes; finish is the opportunity carrying the last byte."""
        remaining = size
        if self._left > 0 and now < self._last_time:
            # The previous packet finished inside an opportunity we were already waiting for.
            start = self._last_time
            if remaining <= self._left:
                self._left -= remaining
                return start, start
            remaining -= self._left
            index = self._next
        else:
            index = max(self._next, self._first_after(now))
            start = self._time_or_inf(index)
        while True:
            time = self._time_or_inf(index)
            if time == math.inf:
                self._next, self._left = index, 0
                return start, math.inf
            index += 1
            if remaining <= MAHIMAHI_OPPORTUNITY_BYTES:
                self._next, self._last_time = index, time
                self._left = MAHIMAHI_OPPORTUNITY_BYTES - remaining
                return start, time
            remaining -= MAHIMAHI_OPPORTUNITY_BYTES

    def _time_or_inf(self, index: int) -> float:
        if not self._loop and index >= self._count:
            return math.inf
        return self.opportunity_time(index)
