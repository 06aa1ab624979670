"""Virtual-time event heap: callbacks run in (time, insertion order), so runs are reproducible."""

from __future__ import annotations

import heapq
from typing import Any, Callable


class EventLoop:
    """A discrete-event scheduler in virtual seconds."""

    __slots__ = ("now", "_heap", "_counter")

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._counter = 0

    def call_at(self, when: float, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback(*args)` at virtual time `when` (never earlier than now)."""
        self._counter += 1
        heapq.heappush(self._heap, (max(when, self.now), self._counter, callback, args))

    def next_time(self) -> float | None:
        """Time of the earliest pending event, or None when idle."""
        return self._heap[0][0] if self._heap else None

    def run_next(self) -> None:
        """Advance the clock to the earliest event and run it."""
        when, _, callback, args = heapq.heappop(self._heap)
        self.now = when
        callback(*args)
