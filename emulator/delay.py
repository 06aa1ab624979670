"""Propagation delay with optional uniform jitter that keeps packet order unless told otherwise."""

from __future__ import annotations

from testbed.emulator.random_stream import UniformStream


class PropagationDelay:
    """Adds `delay_s` (+ uniform jitter in [-jitter_s, jitter_s], never below zero) to departures."""

    __slots__ = ("delay_s", "jitter_s", "reorder", "_draws", "_last_arrival")

    def __init__(self, delay_s: float, jitter_s: float = 0.0, reorder: bool = False,
                 draws: UniformStream | None = None):
        if jitter_s > 0 and draws is None:
            raise ValueError("jitter needs a random stream")
        self.delay_s = delay_s
        self.jitter_s = jitter_s
        self.reorder = reorder
        self._draws = draws
        self._last_arrival = 0.0

    def arrival(self, departure: float) -> float:
        """Arrival time at the far end of a packet leaving the serializer at `departure`."""
        arrival = departure + self.delay_s
        if self.jitter_s > 0:
            arrival = max(departure, arrival + (2.0 * self._draws.next() - 1.0) * self.jitter_s)
            if not self.reorder:
                # netem reorders under jitter; a real path rarely does, so by default keep FIFO order.
                arrival = max(arrival, self._last_arrival)
                self._last_arrival = arrival
        return arrival
