"""Probe scheme: a constant-bitrate datagram source and a receiver that records arrivals (our iperf)."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from testbed.codecs.endpoint import Datagram

PROBE_MAGIC = b"TBPR"
# magic, sequence number, send time in microseconds; big-endian, then zero padding to packet_bytes.
PROBE_HEADER = struct.Struct("!4sIQ")
PROBE_HEADER_BYTES = PROBE_HEADER.size


@dataclass(frozen=True, slots=True)
class ProbeArrival:
    """One probe datagram as seen by the receiver."""

    seq: int
    sent_s: float
    arrived_s: float
    size: int


def probe_packet(seq: int, sent_s: float, packet_bytes: int, tag: int = 0) -> bytes:
    """Serialize one probe datagram of exactly `packet_bytes` bytes; a non-zero `tag` is the first padding byte."""
    header = PROBE_HEADER.pack(PROBE_MAGIC, seq, round(sent_s * 1e6))
    padding = bytearray(packet_bytes - PROBE_HEADER_BYTES)
    if tag:
        padding[0] = tag  # flows on the same schedule must not send identical payloads (logs match by digest)
    return header + bytes(padding)


def parse_probe_packet(data: bytes) -> tuple[int, float] | None:
    """Return (seq, send time in s) of a probe datagram, or None if it is not one."""
    if len(data) < PROBE_HEADER_BYTES:
        return None
    magic, seq, sent_us = PROBE_HEADER.unpack_from(data)
    if magic != PROBE_MAGIC:
        return None
    return seq, sent_us / 1e6


class ScheduledProbeSender:
    """Sends `packet_bytes`-byte probe datagrams at planned times (seconds); expects nothing back."""

    def __init__(self, times_s: Sequence[float], packet_bytes: int, flow: str = "media", tag: int = 0):
        if packet_bytes < PROBE_HEADER_BYTES + (1 if tag else 0):
            raise ValueError(f"packet_bytes must be at least {PROBE_HEADER_BYTES} (+1 for a tag)")
        if not 0 <= tag <= 255:
            raise ValueError(f"tag must be a byte, got {tag}")
        self.times_s = list(times_s)
        self.packet_bytes = packet_bytes
        self.flow = flow
        self.tag = tag
        self._next_seq = 0
        self._outbox: list[Datagram] = []

    def get_timer(self) -> float | None:
        """Planned time of the next datagram, None when done."""
        return self.times_s[self._next_seq] if self._next_seq < len(self.times_s) else None

    def handle_timer(self, now: float) -> None:
        """Emit every datagram planned by `now`, stamped with `now`."""
        while self._next_seq < len(self.times_s) and self.times_s[self._next_seq] <= now:
            payload = probe_packet(self._next_seq, now, self.packet_bytes, self.tag)
            self._outbox.append(Datagram(payload, flow=self.flow))
            self._next_seq += 1

    def receive_datagram(self, data: bytes, now: float) -> None:
        """The probe expects no feedback; anything arriving is ignored."""

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Hand over the due datagrams."""
        out, self._outbox = self._outbox, []
        return out


class ProbeSender(ScheduledProbeSender):
    """Sends `packet_bytes`-byte datagrams evenly spaced to make `rate_kbps`, for `duration_s`."""

    def __init__(self, rate_kbps: float, packet_bytes: int, duration_s: float):
        interval_s = packet_bytes * 8 / (rate_kbps * 1000)
        count = math.floor(duration_s / interval_s + 1e-9)
        super().__init__([seq * interval_s for seq in range(count)], packet_bytes)


class ProbeReceiver:
    """Records every probe arrival; counts (and drops) datagrams that are not probe packets."""

    def __init__(self) -> None:
        self.arrivals: list[ProbeArrival] = []
        self.malformed = 0

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Record one arrival."""
        parsed = parse_probe_packet(data)
        if parsed is None:
            self.malformed += 1
            return
        seq, sent_s = parsed
        self.arrivals.append(ProbeArrival(seq, sent_s, now, len(data)))

    def get_timer(self) -> float | None:
        """The probe receiver has no timers."""
        return None

    def handle_timer(self, now: float) -> None:
        """Nothing is ever due."""

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """The probe receiver sends no feedback."""
        return []
