"""Wire format of media and feedback datagrams (big-endian, documented field by field).

Media datagram = MediaHeader (22 bytes) + FEC extension (by `fec`) + payload:

    u8  packet type (1 = media)      u32 sequence number (per sender, for loss reports)
    u32 video frame id               u8  flags: bit0 keyframe, bit1 parity, bits2-3 FEC kind
    u16 fragment index in the frame  u16 fragment count of the frame (data + parity datagrams)
    u64 send time in microseconds

    streaming FEC extension (17 + 4*tau bytes): u32 FEC frame number, u8 part of the video frame,
        u8 parts in the video frame, u16 position in the FEC frame, u16 data packets, u16 parity packets,
        u32 FEC frame size, u8 tau, tau x u32 sizes of the previous FEC frames (frame-size protection)
    block FEC extension (10 bytes): u16 position, u16 data packets, u16 parity packets, u32 frame size
    no FEC extension (4 bytes): u32 frame size

Feedback datagram (14 bytes): u8 packet type (2 = feedback), u8 kind (1 ACK of a complete frame,
2 keyframe request, 3 quality report), u32 frame id, u32 packets received, u32 packets lost (the last
two only in reports, counted since the previous report).
NACK datagram (8 + 4n bytes): u8 packet type (2), u8 kind (4 = NACK), u32 newest frame id seen,
u16 n (1..256), n x u32 sequence numbers to retransmit.

Parsers return None for anything malformed, truncated or hostile; they never raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

PACKET_MEDIA = 1
PACKET_FEEDBACK = 2

_MEDIA = struct.Struct("!BIIBHHQ")
_STREAMING = struct.Struct("!IBBHHHIB")
_BLOCK = struct.Struct("!HHHI")
_PLAIN = struct.Struct("!I")
_FEEDBACK = struct.Struct("!BBIII")
_NACK = struct.Struct("!BBIH")
MAX_NACK_SEQS = 256

FLAG_KEYFRAME = 0x01
FLAG_PARITY = 0x02
MAX_TAU = 16


class FecKind(IntEnum):
    """Which FEC extension follows the media header."""

    NONE = 0
    STREAMING = 1
    BLOCK = 2


class FeedbackKind(IntEnum):
    """What a feedback datagram says."""

    ACK = 1
    KEYFRAME_REQUEST = 2
    REPORT = 3
    NACK = 4


@dataclass(frozen=True, slots=True)
class StreamingFields:
    """Where a datagram sits in the streaming code (see codecs/fec/streaming_code.py)."""

    fec_frame: int
    part: int
    parts: int
    position: int
    data_packets: int
    parity_packets: int
    frame_size: int
    previous_sizes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BlockFields:
    """Where a datagram sits in its frame's block code."""

    position: int
    data_packets: int
    parity_packets: int
    frame_size: int


@dataclass(frozen=True, slots=True)
class MediaPacket:
    """One media datagram."""

    seq: int
    frame_id: int
    keyframe: bool
    parity: bool
    fragment: int
    fragments: int
    send_time_us: int
    fec: StreamingFields | BlockFields | int  # int: frame size of an unprotected frame
    payload: bytes

    @property
    def fec_kind(self) -> FecKind:
        """The FEC extension this packet carries."""
        if isinstance(self.fec, StreamingFields):
            return FecKind.STREAMING
        if isinstance(self.fec, BlockFields):
            return FecKind.BLOCK
        return FecKind.NONE

    def serialize(self) -> bytes:
        """The datagram bytes."""
        flags = (FLAG_KEYFRAME if self.keyframe else 0) | (FLAG_PARITY if self.parity else 0)
        flags |= self.fec_kind << 2
        header = _MEDIA.pack(PACKET_MEDIA, self.seq, self.frame_id, flags, self.fragment, self.fragments,
                             self.send_time_us)
        fec = self.fec
        if isinstance(fec, StreamingFields):
            tau = len(fec.previous_sizes)
            extension = _STREAMING.pack(fec.fec_frame, fec.part, fec.parts, fec.position, fec.data_packets,
                                        fec.parity_packets, fec.frame_size, tau)
            extension += struct.pack(f"!{tau}I", *fec.previous_sizes)
        elif isinstance(fec, BlockFields):
            extension = _BLOCK.pack(fec.position, fec.data_packets, fec.parity_packets, fec.frame_size)
        else:
            extension = _PLAIN.pack(fec)
        return header + extension + self.payload


@dataclass(frozen=True, slots=True)
class Feedback:
    """One feedback datagram from the receiver to the sender (`seqs` only in a NACK)."""

    kind: FeedbackKind
    frame_id: int
    received: int = 0
    lost: int = 0
    seqs: tuple[int, ...] = ()

    def serialize(self) -> bytes:
        """The datagram bytes."""
        if self.kind == FeedbackKind.NACK:
            header = _NACK.pack(PACKET_FEEDBACK, self.kind, self.frame_id, len(self.seqs))
            return header + struct.pack(f"!{len(self.seqs)}I", *self.seqs)
        return _FEEDBACK.pack(PACKET_FEEDBACK, self.kind, self.frame_id, self.received, self.lost)


def parse_media(data: bytes) -> MediaPacket | None:
    """Parse a media datagram; None if it is not a well-formed one."""
    if len(data) < _MEDIA.size:
        return None
    packet_type, seq, frame_id, flags, fragment, fragments, send_time_us = _MEDIA.unpack_from(data)
    if packet_type != PACKET_MEDIA or fragment >= fragments or flags >> 4:
        return None
    offset = _MEDIA.size
    fec: StreamingFields | BlockFields | int
    kind = (flags >> 2) & 0x3
    if kind == FecKind.STREAMING:
        if len(data) < offset + _STREAMING.size:
            return None
        fec_frame, part, parts, position, data_packets, parity_packets, size, tau = _STREAMING.unpack_from(
            data, offset)
        offset += _STREAMING.size
        if tau > MAX_TAU or len(data) < offset + 4 * tau or part >= parts:
            return None
        if position >= data_packets + parity_packets:
            return None
        previous = struct.unpack_from(f"!{tau}I", data, offset)
        offset += 4 * tau
        fec = StreamingFields(fec_frame, part, parts, position, data_packets, parity_packets, size, previous)
    elif kind == FecKind.BLOCK:
        if len(data) < offset + _BLOCK.size:
            return None
        position, data_packets, parity_packets, size = _BLOCK.unpack_from(data, offset)
        offset += _BLOCK.size
        if position >= data_packets + parity_packets:
            return None
        fec = BlockFields(position, data_packets, parity_packets, size)
    elif kind == FecKind.NONE:
        if len(data) < offset + _PLAIN.size:
            return None
        (fec,) = _PLAIN.unpack_from(data, offset)
        offset += _PLAIN.size
    else:
        return None
    return MediaPacket(seq, frame_id, bool(flags & FLAG_KEYFRAME), bool(flags & FLAG_PARITY), fragment,
                       fragments, send_time_us, fec, bytes(data[offset:]))


def parse_feedback(data: bytes) -> Feedback | None:
    """Parse a feedback datagram; None if it is not a well-formed one."""
    if len(data) >= _NACK.size and data[0] == PACKET_FEEDBACK and data[1] == FeedbackKind.NACK:
        _, _, frame_id, count = _NACK.unpack_from(data)
        if not 1 <= count <= MAX_NACK_SEQS or len(data) != _NACK.size + 4 * count:
            return None
        return Feedback(FeedbackKind.NACK, frame_id, seqs=struct.unpack_from(f"!{count}I", data, _NACK.size))
    if len(data) != _FEEDBACK.size:
        return None
    packet_type, kind, frame_id, received, lost = _FEEDBACK.unpack(data)
    if packet_type != PACKET_FEEDBACK or kind not in FeedbackKind._value2member_map_ or kind == FeedbackKind.NACK:
        return None
    return Feedback(FeedbackKind(kind), frame_id, received, lost)
