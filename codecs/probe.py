"""Probe scheme: a constant-bitrate datagram source and a receiver that records arrivals (our iperf)."""

from __future__ import annotations

import math
import struct
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


def probe_packet(seq: int, sent_s: float, packet_bytes: int) -> bytes:
    """Serialize one probe datagram of exactly `packet_bytes` bytes."""
    header = PROBE_HEADER.pack(PROBE_MAGIC, seq, round(sent_s * 1e6))
    return header + bytes(packet_bytes - PROBE_HEADER_BYTES)


def parse_probe_packet(data: bytes) -> tuple[int, float] | None:
    """Return (seq, send time in s) of a probe datagram, or None if it is not one."""
    if len(data) < PROBE_HEADER_BYTES:
        return None
    magic, seq, sent_us = PROBE_HEADER.unpack_from(data)
    if magic != PROBE_MAGIC:
        return None
    return seq, sent_us / 1e6


class ProbeSender:
    """Sends `packet_bytes`-byte datagrams evenly spaced to make `rate_kbps`, for `duration_s`."""

    def __init__(self, rate_kbps: float, packet_bytes: int, duration_s: float):
        if packet_bytes < PROBE_HEADER_BYTES:
            raise ValueError(f"packet_bytes must be at least {PROBE_HEADER_BYTES}")
        self.packet_bytes = packet_bytes
        self.interval_s = packet_bytes * 8 / (rate_kbps * 1000)
        self.packet_count = math.floor(duration_s / self.interval_s + 1e-9)
        self._next_seq = 0
        self._outbox: list[Datagram] = []

    def get_timer(self) -> float | None:
        """Send time of the next datagram, None when done."""
        if self._next_seq >= self.packet_count:
            return None
        return self._next_seq * self.interval_s

    def handle_timer(self, now: float) -> None:
        """Emit every datagram that is due by `now`."""
        while self._next_seq < self.packet_count and self._next_seq * self.interval_s <= now:
            self._outbox.append(Datagram(probe_packet(self._next_seq, now, self.packet_bytes)))
            self._next_seq += 1

    def receive_datagram(self, data: bytes, now: float) -> None:
        """The probe expects no feedback; anything arriving is ignored."""

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Hand over the due datagrams."""
        out, self._outbox = self._outbox, []
        return out


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
