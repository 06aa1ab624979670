"""Drop-tail FIFO in front of the serializer; the packet being serialized does not count."""

from __future__ import annotations

from collections import deque


class DropTailQueue:
    """Byte and/or packet limited FIFO; `None` limits mean unlimited (as Mahimahi's droptail)."""

    __slots__ = ("limit_bytes", "limit_packets", "_waiting", "_bytes")

    def __init__(self, limit_bytes: int | None = None, limit_packets: int | None = None):
        self.limit_bytes = limit_bytes
        self.limit_packets = limit_packets
        self._waiting: deque[tuple[float, int]] = deque()  # (service start, size) of queued packets
        self._bytes = 0

    @property
    def unlimited(self) -> bool:
        """True when neither limit is set, so nothing needs tracking."""
        return self.limit_bytes is None and self.limit_packets is None

    def occupancy(self, now: float) -> tuple[int, int]:
        """Bytes and packets waiting at `now`, not counting a packet already in service."""
        waiting = self._waiting
        while waiting and waiting[0][0] <= now:
            self._bytes -= waiting.popleft()[1]
        return self._bytes, len(waiting)

    def admits(self, size: int, now: float) -> bool:
        """Return True when a packet of `size` bytes arriving at `now` fits."""
        if self.unlimited:
            return True
        queued_bytes, queued_packets = self.occupancy(now)
        if self.limit_bytes is not None and queued_bytes + size > self.limit_bytes:
            return False
        return self.limit_packets is None or queued_packets + 1 <= self.limit_packets

    def enqueue(self, size: int, service_start: float) -> None:
        """Record an admitted packet that waits until `service_start`."""
        if not self.unlimited:
            self._waiting.append((service_start, size))
            self._bytes += size
