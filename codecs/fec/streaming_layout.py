"""How a streaming-coded FEC frame is cut into 256-byte stripes and packets (Tambur's packetization)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

STRIPE_BYTES = 256
MAX_DATA_STRIPES = 64
MAX_FEC_FRAME_BYTES = MAX_DATA_STRIPES * STRIPE_BYTES
# Ratios above 1 are refused, so a frame never has more parity stripes than data stripes.
MAX_PARITY_STRIPES = MAX_DATA_STRIPES
MAX_STRIPES_PER_PACKET = 5


def data_stripe_count(frame_size: int) -> int:
    """Data stripes of a frame: ceil(size / 256), but at least one so that an empty frame is still sent."""
    return max(1, -(-frame_size // STRIPE_BYTES))


def is_u_stripe(stripe: int | np.ndarray) -> bool | np.ndarray:
    """Odd-indexed stripes are "u" (protected by their own frame and frame +tau), even ones "v"."""
    return stripe % 2 == 1


def stripes_per_packet(data_stripes: int, parity_stripes: int, limit: int = MAX_STRIPES_PER_PACKET) -> int:
    """The largest k <= limit dividing both stripe counts (a count of 0 is divisible by anything)."""
    return max(k for k in range(1, limit + 1) if data_stripes % k == 0 and parity_stripes % k == 0)


@dataclass(frozen=True)
class FrameLayout:
    """Stripe and packet counts of one FEC frame."""

    frame_size: int
    data_stripes: int
    parity_stripes: int
    stripes_per_packet: int

    @classmethod
    def for_frame(cls, frame_size: int, ratio: Fraction,
                  max_stripes_per_packet: int = MAX_STRIPES_PER_PACKET) -> FrameLayout:
        """Layout of a frame of `frame_size` bytes protected by ceil(stripes * ratio) parity stripes.

        Tambur allows 5 stripes (1280 bytes) per packet; a smaller MTU lowers `max_stripes_per_packet`.
        """
        if not 0 <= frame_size <= MAX_FEC_FRAME_BYTES:
            raise ValueError(f"FEC frame of {frame_size} bytes (at most {MAX_FEC_FRAME_BYTES}; split it)")
        if not 0 <= ratio <= 1:
            raise ValueError(f"parity ratio {ratio} outside [0, 1]")
        data_stripes = data_stripe_count(frame_size)
        parity_stripes = math.ceil(data_stripes * ratio)
        per_packet = stripes_per_packet(data_stripes, parity_stripes, max_stripes_per_packet)
        return cls(frame_size, data_stripes, parity_stripes, per_packet)

    @classmethod
    def from_packet_counts(cls, frame_size: int, data_packets: int, parity_packets: int) -> FrameLayout | None:
        """The layout a sender (with some stripes-per-packet limit <= 5) would use for these counts, else None."""
        if not 0 <= frame_size <= MAX_FEC_FRAME_BYTES or data_packets < 1 or parity_packets < 0:
            return None
        data_stripes = data_stripe_count(frame_size)
        if data_stripes % data_packets:
            return None
        per_packet = data_stripes // data_packets
        parity_stripes = parity_packets * per_packet
        limit_used = stripes_per_packet(data_stripes, parity_stripes, min(per_packet, MAX_STRIPES_PER_PACKET))
        if parity_stripes > data_stripes or limit_used != per_packet:
            return None
        return cls(frame_size, data_stripes, parity_stripes, per_packet)

    @property
    def data_packets(self) -> int:
        """Packets carrying data stripes (sent first)."""
        return self.data_stripes // self.stripes_per_packet

    @property
    def parity_packets(self) -> int:
        """Packets carrying parity stripes (sent after the data packets)."""
        return self.parity_stripes // self.stripes_per_packet

    @property
    def payload_bytes(self) -> int:
        """Payload length of every packet of the frame."""
        return self.stripes_per_packet * STRIPE_BYTES
