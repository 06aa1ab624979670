"""Per-frame systematic MDS erasure code over GF(256) (Reed-Solomon style, Cauchy generator).

A frame of `size` bytes becomes k equal-length data packets (the last zero-padded) and m parity packets;
any k distinct packets of the frame recover it. Empty data still yields one (empty) data packet so that
every frame is visible to the receiver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from testbed.codecs.fec import gf256

MAX_BLOCK_PACKETS = 255


@dataclass(frozen=True)
class BlockPacket:
    """One packet of a block-coded frame: positions 0..data_packets-1 are data, the rest parity."""

    position: int
    data_packets: int
    parity_packets: int
    frame_size: int
    payload: bytes


def cauchy_parity_matrix(data_packets: int, parity_packets: int) -> np.ndarray:
    """The m x k parity generator: entry (i, j) = 1 / (x_i + y_j) with x_i = k + i and y_j = j.

    All x_i and y_j are distinct, so every square submatrix is nonsingular, which makes the systematic
    code [I; C] MDS.
    """
    if data_packets < 1 or parity_packets < 0 or data_packets + parity_packets > MAX_BLOCK_PACKETS:
        raise ValueError(f"unsupported block code ({data_packets} data, {parity_packets} parity)")
    x = data_packets + np.arange(parity_packets)
    y = np.arange(data_packets)
    return gf256.inverse((x[:, None] ^ y[None, :]).astype(np.uint8))


def _payload_length(frame_size: int, data_packets: int) -> int:
    return -(-frame_size // data_packets)


class BlockEncoder:
    """Splits a frame into data packets and appends Cauchy parity packets."""

    def encode(self, data: bytes, parity_ratio: float | Fraction, max_payload: int) -> list[BlockPacket]:
        """Packets of one frame: k = ceil(len/max_payload) data, m = ceil(k * parity_ratio) parity."""
        if max_payload < 1:
            raise ValueError("max_payload must be positive")
        # Fraction keeps ceil exact: ceil(10 * 0.3) must be 3, not 4.
        ratio = Fraction(parity_ratio)
        if ratio < 0:
            raise ValueError("parity_ratio must be non-negative")
        data_packets = max(1, -(-len(data) // max_payload))
        parity_packets = math.ceil(data_packets * ratio)
        if data_packets + parity_packets > MAX_BLOCK_PACKETS:
            raise ValueError(f"{data_packets} + {parity_packets} packets exceed {MAX_BLOCK_PACKETS}")
        length = _payload_length(len(data), data_packets)
        padded = np.frombuffer(bytes(data).ljust(data_packets * length, b"\0"), dtype=np.uint8)
        rows = padded.reshape(data_packets, length)
        parity = gf256.matmul(cauchy_parity_matrix(data_packets, parity_packets), rows)
        payloads = [row.tobytes() for row in rows] + [row.tobytes() for row in parity]
        return [
            BlockPacket(position, data_packets, parity_packets, len(data), payload)
            for position, payload in enumerate(payloads)
        ]


@dataclass
class _PendingFrame:
    data_packets: int
    parity_packets: int
    frame_size: int
    payload_length: int
    payloads: dict[int, bytes] = field(default_factory=dict)

    def matches(self, packet: BlockPacket) -> bool:
        return (packet.data_packets, packet.parity_packets, packet.frame_size, len(packet.payload)) == (
            self.data_packets,
            self.parity_packets,
            self.frame_size,
            self.payload_length,
        )


def _well_formed(packet: BlockPacket) -> bool:
    try:
        k, m, size, position = packet.data_packets, packet.parity_packets, packet.frame_size, packet.position
        if not all(type(value) is int for value in (k, m, size, position)):
            return False
        if not isinstance(packet.payload, bytes):
            return False
        return (
            k >= 1
            and m >= 0
            and k + m <= MAX_BLOCK_PACKETS
            and 0 <= position < k + m
            and size >= 0
            and len(packet.payload) == _payload_length(size, k)
        )
    except AttributeError:
        return False


class BlockDecoder:
    """Collects packets per frame and returns each frame once, as soon as any k of its packets arrived.

    The first well-formed packet of a frame fixes its metadata; later packets that disagree with it,
    duplicates, malformed packets and packets of already decoded or forgotten frames are ignored.
    Decoded frame numbers are remembered until `forget_before` drops them: call it as frames expire.
    """

    def __init__(self) -> None:
        self.malformed = 0  # ill-formed packets, or ones contradicting their frame's first packet
        self._pending: dict[int, _PendingFrame] = {}
        self._decoded: set[int] = set()
        self._forgotten_below = 0

    def receive(self, frame_id: int, packet: BlockPacket) -> bytes | None:
        """The frame's bytes the first time it becomes decodable, else None."""
        if frame_id < self._forgotten_below or frame_id in self._decoded:
            return None
        if not _well_formed(packet):
            self.malformed += 1
            return None
        frame = self._pending.get(frame_id)
        if frame is None:
            frame = _PendingFrame(packet.data_packets, packet.parity_packets, packet.frame_size, len(packet.payload))
            self._pending[frame_id] = frame
        if not frame.matches(packet):
            self.malformed += 1
            return None
        if packet.position in frame.payloads:
            return None
        frame.payloads[packet.position] = packet.payload
        if len(frame.payloads) < frame.data_packets:
            return None
        del self._pending[frame_id]
        self._decoded.add(frame_id)
        return _decode(frame)

    def forget_before(self, frame_id: int) -> None:
        """Drop all state of frames below `frame_id` and ignore their packets from now on."""
        self._forgotten_below = max(self._forgotten_below, frame_id)
        self._pending = {key: value for key, value in self._pending.items() if key >= self._forgotten_below}
        self._decoded = {key for key in self._decoded if key >= self._forgotten_below}


def _decode(frame: _PendingFrame) -> bytes:
    k = frame.data_packets
    rows = np.zeros((k, frame.payload_length), dtype=np.uint8)
    for position, payload in frame.payloads.items():
        if position < k:
            rows[position] = np.frombuffer(payload, dtype=np.uint8)
    missing = [position for position in range(k) if position not in frame.payloads]
    if missing:
        known = [position for position in range(k) if position in frame.payloads]
        parity_positions = sorted(position for position in frame.payloads if position >= k)[: len(missing)]
        generator = cauchy_parity_matrix(k, frame.parity_packets)[[position - k for position in parity_positions]]
        parity = np.stack([np.frombuffer(frame.payloads[position], dtype=np.uint8) for position in parity_positions])
        # parity = C_known @ known + C_missing @ missing, so C_missing @ missing = parity - C_known @ known.
        rhs = parity ^ gf256.matmul(generator[:, known], rows[known])
        rows[missing] = gf256.solve(generator[:, missing], rhs)
    return rows.tobytes()[: frame.frame_size]
