"""Turns encoded video frames into protected datagram bodies and back: no FEC, block FEC, streaming FEC.

The sender side (`FrameProtector`) yields per-datagram FEC fields and payloads; the receiver side
(`FrameAssembler`) takes parsed media packets and reports video frames that became complete, whether
every datagram arrived or FEC recovered the missing ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from testbed.codecs.fec.block_code import MAX_BLOCK_PACKETS, BlockDecoder, BlockEncoder, BlockPacket
from testbed.codecs.fec.streaming_code import (
    MAX_FEC_FRAME_BYTES,
    StreamingDecoder,
    StreamingEncoder,
    StreamingPacket,
)
from testbed.codecs.framing import BlockFields, MediaPacket, StreamingFields


@dataclass(frozen=True, slots=True)
class ProtectedFragment:
    """One datagram body of a frame: its FEC fields (an int = plain frame size) and payload."""

    fec: StreamingFields | BlockFields | int
    parity: bool
    payload: bytes


class FrameProtector:
    """Sender-side FEC for one stream; `ratio` may change between frames."""

    def __init__(self, kind: str, mtu: int, tau: int = 3):
        self.kind = kind
        self.mtu = mtu
        self._streaming = StreamingEncoder(tau, max_stripes_per_packet=max(1, min(5, mtu // 256)))
        self._block = BlockEncoder()

    def protect(self, data: bytes, ratio: Fraction) -> list[ProtectedFragment]:
        """All datagram bodies of one encoded frame: data first, then parity."""
        if self.kind == "none":
            chunks = max(1, math.ceil(len(data) / self.mtu))
            return [ProtectedFragment(len(data), False, data[i * self.mtu:(i + 1) * self.mtu]) for i in range(chunks)]
        if self.kind == "block":
            return [_block_fragment(p) for p in self._block.encode(data, self._block_ratio(len(data), ratio),
                                                                     self.mtu)]
        parts = [data[i:i + MAX_FEC_FRAME_BYTES] for i in range(0, max(len(data), 1), MAX_FEC_FRAME_BYTES)]
        fragments = []
        for index, part in enumerate(parts):
            for packet in self._streaming.encode(part, ratio):
                fragments.append(_streaming_fragment(packet, index, len(parts)))
        return fragments

    def _block_ratio(self, size: int, ratio: Fraction) -> Fraction:
        """The ratio a GF(256) block code can give this frame: at most 255 packets, parity trimmed to fit."""
        data_packets = max(1, math.ceil(size / self.mtu))
        if data_packets > MAX_BLOCK_PACKETS:
            raise ValueError(f"a {size}-byte frame needs {data_packets} > {MAX_BLOCK_PACKETS} block-code packets at "
                             f"mtu {self.mtu}; use fec = \"streaming\" (it splits frames) or a larger mtu")
        parity_packets = min(math.ceil(data_packets * ratio), MAX_BLOCK_PACKETS - data_packets)
        return Fraction(parity_packets, data_packets)


def _block_fragment(packet: BlockPacket) -> ProtectedFragment:
    fields = BlockFields(packet.position, packet.data_packets, packet.parity_packets, packet.frame_size)
    return ProtectedFragment(fields, packet.position >= packet.data_packets, packet.payload)


def _streaming_fragment(packet: StreamingPacket, part: int, parts: int) -> ProtectedFragment:
    fields = StreamingFields(packet.fec_frame, part, parts, packet.position, packet.data_packets,
                             packet.parity_packets, packet.frame_size, packet.previous_sizes)
    return ProtectedFragment(fields, packet.position >= packet.data_packets, packet.payload)


class FrameAssembler:
    """Receiver-side reassembly and FEC decoding; `add` returns newly complete video frames."""

    def __init__(self, kind: str, tau: int = 3):
        self.kind = kind
        self._fragments: dict[int, dict[int, bytes]] = {}
        self._complete: set[int] = set()
        self._forgotten_below = 0
        self._block = BlockDecoder()
        self._streaming = StreamingDecoder(tau)
        self._parts: dict[int, tuple[int, int, int]] = {}  # FEC frame -> (video frame, part, parts)
        self._recovered_parts: dict[int, dict[int, bytes]] = {}

    def add(self, packet: MediaPacket) -> list[tuple[int, bytes]]:
        """Take one media packet; return (video frame id, frame bytes) of frames it completed."""
        fec = packet.fec
        if isinstance(fec, StreamingFields):
            # Every streaming packet goes to the decoder, even of complete or decided frames: their parity
            # is what rebuilds earlier lost frames.
            return self._add_streaming(packet, fec)
        if packet.frame_id in self._complete or packet.frame_id < self._forgotten_below:
            return []
        if isinstance(fec, BlockFields):
            data = self._block.receive(packet.frame_id, BlockPacket(
                fec.position, fec.data_packets, fec.parity_packets, fec.frame_size, packet.payload))
            return self._finish(packet.frame_id, data)
        fragments = self._fragments.setdefault(packet.frame_id, {})
        fragments[packet.fragment] = packet.payload
        if any(i not in fragments for i in range(packet.fragments)):
            return []
        data = b"".join(fragments[i] for i in range(packet.fragments))
        del self._fragments[packet.frame_id]
        return self._finish(packet.frame_id, data if len(data) == fec else None)

    @property
    def rejected(self) -> int:
        """Datagrams the FEC decoders refused as ill-formed or inconsistent with what they know."""
        return self._streaming.malformed + self._block.malformed

    def forget_before(self, frame_id: int) -> None:
        """Drop state of video frames older than `frame_id` (they were decided) and ignore them from now on."""
        self._forgotten_below = max(self._forgotten_below, frame_id)
        for table in (self._fragments, self._recovered_parts):
            for old in [f for f in table if f < frame_id]:
                del table[old]
        self._complete = {f for f in self._complete if f >= frame_id}
        self._parts = {fec: owner for fec, owner in self._parts.items() if owner[0] >= frame_id - 1}
        self._block.forget_before(frame_id)
        self._streaming.abandoned()  # the receiver's deadlines decide; only keep the decoder's list bounded

    def _finish(self, frame_id: int, data: bytes | None) -> list[tuple[int, bytes]]:
        if data is None:
            return []
        self._complete.add(frame_id)
        return [(frame_id, data)]

    def _add_streaming(self, packet: MediaPacket, fec: StreamingFields) -> list[tuple[int, bytes]]:
        first = fec.fec_frame - fec.part
        if packet.frame_id >= self._forgotten_below - 1:  # the frame just below helps place lost neighbours
            for part in range(fec.parts):
                self._parts.setdefault(first + part, (packet.frame_id, part, fec.parts))
        recovered = self._streaming.receive(StreamingPacket(
            fec.fec_frame, fec.position, fec.data_packets, fec.parity_packets, fec.frame_size,
            fec.previous_sizes, packet.payload))
        completed = []
        for fec_frame in recovered:
            owner = self._owner(fec_frame)
            data = self._streaming.frame_data(fec_frame)
            if owner is None or data is None:
                continue
            frame_id, part, parts = owner
            if frame_id < self._forgotten_below or frame_id in self._complete:
                continue
            parts_done = self._recovered_parts.setdefault(frame_id, {})
            parts_done[part] = data
            if len(parts_done) == parts:
                completed += self._finish(frame_id, b"".join(parts_done[i] for i in range(parts)))
        return completed

    def _owner(self, fec_frame: int) -> tuple[int, int, int] | None:
        """Video frame of a FEC frame; a frame whose datagrams were all lost is placed between neighbours."""
        if fec_frame in self._parts:
            return self._parts[fec_frame]
        before, after = self._parts.get(fec_frame - 1), self._parts.get(fec_frame + 1)
        # Only a single lost one-part frame between two known frames can be placed unambiguously.
        if before and after and before[1] == before[2] - 1 and after[1] == 0 and after[0] == before[0] + 2:
            return (before[0] + 1, 0, 1)
        return None
