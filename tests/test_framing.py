"""Wire format of media and feedback datagrams: exact byte layout, round trips, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from testbed.codecs.framing import (
    MAX_NACK_SEQS,
    BlockFields,
    FecKind,
    Feedback,
    FeedbackKind,
    MediaPacket,
    StreamingFields,
    parse_feedback,
    parse_media,
)

U8, U16, U32, U64 = 2**8 - 1, 2**16 - 1, 2**32 - 1, 2**64 - 1
HEADER = 22
STREAMING_FIXED = 17
BLOCK_EXTENSION = 10
PLAIN_EXTENSION = 4
FEEDBACK_BYTES = 14  # u8 + u8 + u32 + u32 + u32


def media(fec, payload=b"PAYLOAD", **overrides) -> MediaPacket:
    fields = dict(seq=0x01020304, frame_id=0x0A0B0C0D, keyframe=True, parity=False, fragment=0x0102,
                  fragments=0x0304, send_time_us=0x1122334455667788)
    fields.update(overrides)
    return MediaPacket(fec=fec, payload=payload, **fields)


def extension_length(packet: MediaPacket) -> int:
    if isinstance(packet.fec, StreamingFields):
        return STREAMING_FIXED + 4 * len(packet.fec.previous_sizes)
    if isinstance(packet.fec, BlockFields):
        return BLOCK_EXTENSION
    return PLAIN_EXTENSION


# --------------------------------------------------------------------------------------------------------
# Exact byte layout


def test_media_header_and_plain_extension_literal_bytes():
    packet = media(0xDEADBEEF, payload=b"xy")
    expected = bytes.fromhex(
        "01"                  # packet type media
        "01020304"            # sequence number
        "0a0b0c0d"            # frame id
        "01"                  # flags: keyframe, no parity, FEC kind 0
        "0102" "0304"         # fragment index, fragment count
        "1122334455667788"    # send time (us)
        "deadbeef"            # frame size
    ) + b"xy"
    assert packet.serialize() == expected
    assert packet.fec_kind == FecKind.NONE


def test_block_extension_literal_bytes():
    packet = media(BlockFields(position=0x0005, data_packets=0x0004, parity_packets=0x0002, frame_size=0x00012345),
                   payload=b"\x00\xff", keyframe=False, parity=True, fragment=5, fragments=6, seq=7, frame_id=9,
                   send_time_us=1)
    expected = bytes.fromhex(
        "01" "00000007" "00000009"
        "0a"                  # flags: parity (bit1) | BLOCK (2) << 2
        "0005" "0006" "0000000000000001"
        "0005" "0004" "0002" "00012345"
    ) + b"\x00\xff"
    assert packet.serialize() == expected
    assert packet.fec_kind == FecKind.BLOCK


def test_streaming_extension_literal_bytes():
    fields = StreamingFields(fec_frame=0x01000002, part=1, parts=3, position=0x0203, data_packets=0x0300,
                             parity_packets=0x0004, frame_size=0x00004000, previous_sizes=(1, 0xFFFFFFFF, 0x100))
    packet = media(fields, payload=b"P", keyframe=True, parity=True, fragment=0, fragments=1, seq=U32,
                   frame_id=0, send_time_us=U64)
    expected = bytes.fromhex(
        "01" "ffffffff" "00000000"
        "07"                  # flags: keyframe | parity | STREAMING (1) << 2
        "0000" "0001" "ffffffffffffffff"
        "01000002" "01" "03" "0203" "0300" "0004" "00004000"
        "03"                  # tau
        "00000001" "ffffffff" "00000100"
    ) + b"P"
    assert packet.serialize() == expected
    assert packet.fec_kind == FecKind.STREAMING


@pytest.mark.parametrize("keyframe", [False, True])
@pytest.mark.parametrize("parity", [False, True])
@pytest.mark.parametrize("kind", list(FecKind))
def test_flags_byte_and_field_offsets(kind, keyframe, parity):
    fec = {
        FecKind.NONE: 123456,
        FecKind.BLOCK: BlockFields(3, 4, 5, 6000),
        FecKind.STREAMING: StreamingFields(77, 2, 4, 8, 6, 3, 1500, (10, 20)),
    }[kind]
    packet = media(fec, keyframe=keyframe, parity=parity, seq=0xCAFEBABE, frame_id=0x12345678, fragment=40,
                   fragments=41, send_time_us=0x0102030405060708, payload=b"payload!")
    data = packet.serialize()
    assert data[0] == 1
    assert struct.unpack(">I", data[1:5])[0] == 0xCAFEBABE
    assert struct.unpack(">I", data[5:9])[0] == 0x12345678
    flags = data[9]
    assert flags & 0x01 == keyframe
    assert (flags >> 1) & 0x01 == parity
    assert (flags >> 2) & 0x03 == int(kind)
    assert flags >> 4 == 0
    assert struct.unpack(">HH", data[10:14]) == (40, 41)
    assert struct.unpack(">Q", data[14:22])[0] == 0x0102030405060708
    ext = data[22:]
    if kind == FecKind.NONE:
        assert struct.unpack(">I", ext[:4])[0] == 123456
        assert ext[4:] == b"payload!"
    elif kind == FecKind.BLOCK:
        assert struct.unpack(">HHHI", ext[:10]) == (3, 4, 5, 6000)
        assert ext[10:] == b"payload!"
    else:
        assert struct.unpack(">I", ext[0:4])[0] == 77
        assert (ext[4], ext[5]) == (2, 4)
        assert struct.unpack(">HHH", ext[6:12]) == (8, 6, 3)
        assert struct.unpack(">I", ext[12:16])[0] == 1500
        assert ext[16] == 2
        assert struct.unpack(">II", ext[17:25]) == (10, 20)
        assert ext[25:] == b"payload!"
    assert len(data) == HEADER + extension_length(packet) + len(b"payload!")


def test_streaming_with_tau_zero_and_sixteen():
    for tau in (0, 16):
        sizes = tuple(range(1000, 1000 + tau))
        packet = media(StreamingFields(1, 0, 1, 0, 1, 0, 5, sizes), payload=b"")
        data = packet.serialize()
        assert len(data) == HEADER + STREAMING_FIXED + 4 * tau
        assert data[HEADER + 16] == tau
        assert struct.unpack(f">{tau}I", data[HEADER + 17:]) == sizes
        assert parse_media(data) == packet


@pytest.mark.parametrize(
    "kind, code",
    [(FeedbackKind.ACK, 1), (FeedbackKind.KEYFRAME_REQUEST, 2), (FeedbackKind.REPORT, 3)],
)
def test_feedback_literal_bytes(kind, code):
    feedback = Feedback(kind, 0x01020304, 0x0A0B0C0D, 0xFFFFFFFF)
    expected = bytes([2, code]) + bytes.fromhex("01020304" "0a0b0c0d" "ffffffff")
    assert feedback.serialize() == expected
    assert len(expected) == FEEDBACK_BYTES
    assert parse_feedback(expected) == feedback


def test_feedback_defaults_serialize_as_zero_counters():
    assert Feedback(FeedbackKind.ACK, 5).serialize() == bytes([2, 1, 0, 0, 0, 5]) + bytes(8)


# --------------------------------------------------------------------------------------------------------
# Strategies

u8 = st.integers(0, U8)
u16 = st.integers(0, U16)
u32 = st.integers(0, U32)
u64 = st.integers(0, U64)
edge_u32 = st.one_of(st.sampled_from([0, 1, U32 - 1, U32]), u32)


@st.composite
def streaming_fields(draw):
    parts = draw(st.integers(1, U8))
    part = draw(st.integers(0, parts - 1))
    data_packets = draw(u16)
    parity_packets = draw(u16)
    assume(data_packets + parity_packets > 0)
    position = draw(st.integers(0, min(U16, data_packets + parity_packets - 1)))
    previous = tuple(draw(st.lists(edge_u32, min_size=0, max_size=16)))
    return StreamingFields(draw(edge_u32), part, parts, position, data_packets, parity_packets, draw(edge_u32),
                           previous)


@st.composite
def block_fields(draw):
    data_packets = draw(u16)
    parity_packets = draw(u16)
    assume(data_packets + parity_packets > 0)
    position = draw(st.integers(0, min(U16, data_packets + parity_packets - 1)))
    return BlockFields(position, data_packets, parity_packets, draw(edge_u32))


@st.composite
def media_packets(draw, fec=None):
    fragments = draw(st.integers(1, U16))
    fragment = draw(st.integers(0, fragments - 1))
    fec_strategy = fec if fec is not None else st.one_of(streaming_fields(), block_fields(), edge_u32)
    return MediaPacket(
        seq=draw(edge_u32),
        frame_id=draw(edge_u32),
        keyframe=draw(st.booleans()),
        parity=draw(st.booleans()),
        fragment=fragment,
        fragments=fragments,
        send_time_us=draw(st.one_of(st.sampled_from([0, U64]), u64)),
        fec=draw(fec_strategy),
        payload=draw(st.binary(max_size=64)),
    )


feedbacks = st.builds(Feedback, st.sampled_from([k for k in FeedbackKind if k != FeedbackKind.NACK]), u32, u32, u32)
nacks = st.builds(lambda frame_id, seqs: Feedback(FeedbackKind.NACK, frame_id, seqs=tuple(seqs)), u32,
                  st.lists(u32, min_size=1, max_size=MAX_NACK_SEQS))


# --------------------------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=400)
@given(media_packets())
def test_media_round_trip(packet):
    data = packet.serialize()
    assert len(data) == HEADER + extension_length(packet) + len(packet.payload)
    parsed = parse_media(data)
    assert parsed == packet
    assert parsed.fec_kind == packet.fec_kind
    assert parsed.serialize() == data


@pytest.mark.parametrize("fec_strategy", [streaming_fields(), block_fields(), edge_u32], ids=["streaming", "block",
                                                                                              "none"])
@settings(max_examples=150)
@given(data=st.data())
def test_media_round_trip_per_kind(fec_strategy, data):
    packet = data.draw(media_packets(fec_strategy))
    assert parse_media(packet.serialize()) == packet


def test_media_round_trip_at_field_limits():
    for fec in (StreamingFields(U32, U8 - 1, U8, U16, U16, U16, U32, (U32,) * 16),
                StreamingFields(0, 0, 1, 0, 1, 0, 0, ()),
                BlockFields(U16, U16, U16, U32), BlockFields(0, 1, 0, 0), 0, U32):
        for packet in (media(fec, seq=U32, frame_id=U32, fragment=U16 - 1, fragments=U16, send_time_us=U64),
                       media(fec, seq=0, frame_id=0, fragment=0, fragments=1, send_time_us=0, payload=b"")):
            assert parse_media(packet.serialize()) == packet


@given(feedbacks)
def test_feedback_round_trip(feedback):
    data = feedback.serialize()
    assert len(data) == FEEDBACK_BYTES
    assert parse_feedback(data) == feedback
    assert parse_media(data) is None


@given(nacks)
def test_nack_round_trip_and_exact_layout(nack):
    data = nack.serialize()
    assert data[:8] == struct.pack("!BBIH", 2, 4, nack.frame_id, len(nack.seqs))
    assert data[8:] == b"".join(struct.pack("!I", seq) for seq in nack.seqs)
    assert parse_feedback(data) == nack
    assert parse_media(data) is None
    # A count that disagrees with the length, or no sequence numbers at all, is refused.
    assert parse_feedback(data[:-1]) is None and parse_feedback(data + b"\0") is None
    assert parse_feedback(struct.pack("!BBIH", 2, 4, 0, 0)) is None


@given(media_packets())
def test_media_is_not_feedback(packet):
    assert parse_feedback(packet.serialize()) is None


def test_parsers_accept_bytearray_and_memoryview():
    packet = media(StreamingFields(3, 0, 1, 0, 2, 1, 900, (1, 2, 3)), payload=b"abc")
    data = packet.serialize()
    assert parse_media(bytearray(data)) == packet
    assert parse_media(memoryview(data)) == packet
    assert isinstance(parse_media(memoryview(data)).payload, bytes)
    feedback = Feedback(FeedbackKind.REPORT, 1, 2, 3)
    assert parse_feedback(bytearray(feedback.serialize())) == feedback


# --------------------------------------------------------------------------------------------------------
# Hostile input


def check_media_parse(data: bytes) -> MediaPacket | None:
    parsed = parse_media(data)
    if parsed is not None:
        assert isinstance(parsed, MediaPacket)
        assert parsed.serialize() == bytes(data)
        assert parsed.fragment < parsed.fragments
        if isinstance(parsed.fec, StreamingFields):
            assert parsed.fec.part < parsed.fec.parts
            assert parsed.fec.position < parsed.fec.data_packets + parsed.fec.parity_packets
            assert len(parsed.fec.previous_sizes) <= 16
        elif isinstance(parsed.fec, BlockFields):
            assert parsed.fec.position < parsed.fec.data_packets + parsed.fec.parity_packets
    return parsed


def check_feedback_parse(data: bytes) -> Feedback | None:
    parsed = parse_feedback(data)
    if parsed is not None:
        assert isinstance(parsed, Feedback)
        assert parsed.serialize() == bytes(data)
    return parsed


@settings(max_examples=1000)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_never_raise(data):
    check_media_parse(data)
    check_feedback_parse(data)


@settings(max_examples=500)
@given(st.binary(min_size=22, max_size=120).map(lambda b: b"\x01" + b[1:]))
def test_arbitrary_bytes_with_media_type_never_raise(data):
    check_media_parse(data)


@settings(max_examples=300)
@given(st.binary(min_size=14, max_size=14).map(lambda b: b"\x02" + b[1:]))
def test_arbitrary_feedback_sized_bytes_never_raise(data):
    parsed = check_feedback_parse(data)
    assert (parsed is not None) == (1 <= data[1] <= 3)


@settings(max_examples=300)
@given(media_packets())
def test_every_truncation(packet):
    data = packet.serialize()
    header = HEADER + extension_length(packet)
    for length in range(len(data)):
        parsed = check_media_parse(data[:length])
        if length < header:
            assert parsed is None, length
        else:
            assert parsed == MediaPacket(packet.seq, packet.frame_id, packet.keyframe, packet.parity,
                                         packet.fragment, packet.fragments, packet.send_time_us, packet.fec,
                                         packet.payload[: length - header])


@given(feedbacks)
def test_feedback_truncations_and_extensions(feedback):
    data = feedback.serialize()
    for length in range(len(data)):
        assert parse_feedback(data[:length]) is None
    assert parse_feedback(data + b"\x00") is None


@settings(max_examples=300)
@given(media_packets(), st.data())
def test_bit_flips(packet, draw):
    data = bytearray(packet.serialize())
    for _ in range(draw.draw(st.integers(1, 4))):
        bit = draw.draw(st.integers(0, 8 * len(data) - 1))
        data[bit // 8] ^= 1 << (bit % 8)
    check_media_parse(bytes(data))
    check_feedback_parse(bytes(data))


@settings(max_examples=100)
@given(media_packets())
def test_every_single_bit_flip_of_the_header(packet):
    data = packet.serialize()
    header = HEADER + extension_length(packet)
    for bit in range(8 * header):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        check_media_parse(bytes(flipped))


@given(feedbacks, st.integers(0, 8 * FEEDBACK_BYTES - 1))
def test_feedback_bit_flips(feedback, bit):
    data = bytearray(feedback.serialize())
    data[bit // 8] ^= 1 << (bit % 8)
    check_feedback_parse(bytes(data))
    check_media_parse(bytes(data))


# --------------------------------------------------------------------------------------------------------
# Inconsistent fields are refused


def raw_media(flags=0, fragment=0, fragments=1, packet_type=1, extension=b"\x00\x00\x00\x05", payload=b"hello"):
    return struct.pack("!BIIBHHQ", packet_type, 1, 2, flags, fragment, fragments, 3) + extension + payload


def raw_streaming(part=0, parts=1, position=0, data_packets=1, parity_packets=0, tau=3, sizes=None):
    sizes = (0,) * tau if sizes is None else sizes
    return struct.pack("!IBBHHHIB", 9, part, parts, position, data_packets, parity_packets, 100, tau) + \
        struct.pack(f"!{len(sizes)}I", *sizes)


def raw_block(position=0, data_packets=1, parity_packets=0):
    return struct.pack("!HHHI", position, data_packets, parity_packets, 100)


def test_raw_helpers_are_valid():
    assert parse_media(raw_media()) is not None
    assert parse_media(raw_media(flags=1 << 2, extension=raw_streaming())) is not None
    assert parse_media(raw_media(flags=2 << 2, extension=raw_block())) is not None
    assert parse_media(raw_media(flags=0x03)) is not None


@pytest.mark.parametrize("fragment, fragments", [(0, 0), (1, 1), (5, 3), (U16, U16), (U16, 0)])
def test_fragment_not_below_count(fragment, fragments):
    for flags, extension in ((0, b"\0\0\0\0"), (1 << 2, raw_streaming()), (2 << 2, raw_block())):
        assert parse_media(raw_media(flags, fragment, fragments, extension=extension)) is None


@pytest.mark.parametrize("position, data_packets, parity_packets",
                         [(0, 0, 0), (1, 1, 0), (3, 2, 1), (U16, U16, 0), (U16, 0, U16), (5, 0, 5)])
def test_position_not_below_packet_count(position, data_packets, parity_packets):
    assert parse_media(raw_media(1 << 2, extension=raw_streaming(position=position, data_packets=data_packets,
                                                                 parity_packets=parity_packets))) is None
    assert parse_media(raw_media(2 << 2, extension=raw_block(position, data_packets, parity_packets))) is None


def test_position_bound_uses_sum_without_u16_overflow():
    # 65535 data + 1 parity: position 65535 is valid (the sum exceeds u16).
    assert parse_media(raw_media(1 << 2, extension=raw_streaming(position=U16, data_packets=U16,
                                                                 parity_packets=1))) is not None
    assert parse_media(raw_media(2 << 2, extension=raw_block(U16, U16, 1))) is not None


@pytest.mark.parametrize("part, parts", [(0, 0), (1, 1), (U8, U8), (7, 3)])
def test_part_not_below_parts(part, parts):
    assert parse_media(raw_media(1 << 2, extension=raw_streaming(part=part, parts=parts))) is None


@pytest.mark.parametrize("tau", [17, 100, U8])
def test_tau_above_sixteen(tau):
    # Even with all the sizes present the datagram is refused.
    extension = raw_streaming(tau=tau, sizes=(0,) * tau)
    assert parse_media(raw_media(1 << 2, extension=extension)) is None
    assert parse_media(raw_media(1 << 2, extension=extension, payload=b"")) is None


def test_tau_sizes_missing():
    extension = raw_streaming(tau=4, sizes=(0, 0, 0))
    assert parse_media(raw_media(1 << 2, extension=extension, payload=b"")) is None
    assert parse_media(raw_media(1 << 2, extension=extension, payload=b"abc")) is None
    assert parse_media(raw_media(1 << 2, extension=extension, payload=b"abcd")) is not None


@pytest.mark.parametrize("low", range(4))
def test_unknown_fec_kind(low):
    assert parse_media(raw_media(flags=(3 << 2) | low, extension=bytes(40))) is None


@pytest.mark.parametrize("high_bit", range(4, 8))
@pytest.mark.parametrize("kind, extension", [(0, b"\0\0\0\0"), (1, raw_streaming()), (2, raw_block())])
def test_high_flag_bits(high_bit, kind, extension):
    assert parse_media(raw_media(flags=(1 << high_bit) | (kind << 2), extension=extension)) is None


@pytest.mark.parametrize("packet_type", [0, 2, 3, U8])
def test_unknown_media_packet_type(packet_type):
    assert parse_media(raw_media(packet_type=packet_type)) is None


@pytest.mark.parametrize("packet_type", [0, 1, 3, U8])
def test_unknown_feedback_packet_type(packet_type):
    assert parse_feedback(struct.pack("!BBIII", packet_type, 1, 0, 0, 0)) is None


@pytest.mark.parametrize("kind", [0, 4, 5, U8])
def test_unknown_feedback_kind(kind):
    assert parse_feedback(struct.pack("!BBIII", 2, kind, 0, 0, 0)) is None


@pytest.mark.parametrize("kind, size", [(0, 3), (1, 16), (2, 9)])
def test_extension_cut_short(kind, size):
    extension = {0: b"\0\0\0\0", 1: raw_streaming(), 2: raw_block()}[kind]
    assert parse_media(raw_media(flags=kind << 2, extension=extension[:size], payload=b"")) is None
