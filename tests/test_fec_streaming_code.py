"""Streaming code: Tambur's packetization, the reference recovery behaviour, size protection, hostile input."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.codecs.fec.streaming_code import (
    MAX_FRAME_JUMP,
    StreamingDecoder,
    StreamingEncoder,
    StreamingPacket,
)
from testbed.codecs.fec.streaming_layout import MAX_FEC_FRAME_BYTES

HALF = Fraction(1, 2)


def frames(count: int, size: int | list[int], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    sizes = size if isinstance(size, list) else [size] * count
    return [rng.randbytes(s) for s in sizes]


def run(
    data: list[bytes], ratio: Fraction, lost_frames: set[int] = frozenset(), tau: int = 3
) -> tuple[dict[int, int], dict[int, int], StreamingDecoder]:
    """Send every frame, dropping all packets of `lost_frames`; return recovery and abandonment times.

    Times are the newest frame number at the moment of the event; recovered bytes are checked.
    """
    encoder, decoder = StreamingEncoder(tau), StreamingDecoder(tau)
    recovered_at: dict[int, int] = {}
    abandoned_at: dict[int, int] = {}
    for frame, payload in enumerate(data):
        for packet in encoder.encode(payload, ratio):
            if frame in lost_frames:
                continue
            for done in decoder.receive(packet):
                assert done not in recovered_at
                recovered_at[done] = decoder.newest_frame
                assert decoder.frame_data(done) == data[done]
            for gone in decoder.abandoned():
                abandoned_at[gone] = decoder.newest_frame
    assert decoder.malformed == 0
    return recovered_at, abandoned_at, decoder


@pytest.mark.parametrize(
    "size, data_packets, parity_packets, payload",
    [
        (1000, 2, 1, 512),
        (1280, 5, 3, 256),
        (3000, 4, 2, 768),
        (10000, 8, 4, 1280),
        (16000, 63, 32, 256),
        (2000, 2, 1, 1024),
    ],
)
def test_packetization_matches_tambur_at_ratio_one_half(size, data_packets, parity_packets, payload):
    packets = StreamingEncoder().encode(bytes(size), HALF)
    assert len(packets) == data_packets + parity_packets
    assert [p.position for p in packets] == list(range(len(packets)))
    assert {(p.data_packets, p.parity_packets, p.frame_size, len(p.payload)) for p in packets} == {
        (data_packets, parity_packets, size, payload)
    }


@pytest.mark.parametrize(
    "size, ratio, data_packets, parity_packets, payload",
    [
        (3000, Fraction(0), 3, 0, 1024),  # no parity: the largest k <= 5 dividing 12 alone
        (2560, Fraction(0), 2, 0, 1280),
        (4000, Fraction(1, 4), 4, 1, 1024),  # n = 16, p = 4
        (4100, Fraction(1, 4), 17, 5, 256),  # n = 17, p = 5
        (2000, Fraction(1), 2, 2, 1024),
        (16384, Fraction(1), 16, 16, 1024),  # the largest FEC frame: 64 stripes
        (0, HALF, 1, 1, 256),  # an empty frame still sends one (zero) stripe
        (1, Fraction(1, 4), 1, 1, 256),
    ],
)
def test_packetization_other_ratios(size, ratio, data_packets, parity_packets, payload):
    packets = StreamingEncoder().encode(bytes(size), ratio)
    assert [(p.data_packets, p.parity_packets, len(p.payload)) for p in packets] == [
        (data_packets, parity_packets, payload)
    ] * (data_packets + parity_packets)


def test_data_packets_are_the_frame_itself_and_headers_carry_previous_sizes():
    data = frames(5, [700, 0, 3000, 256, 5000], seed=1)
    encoder = StreamingEncoder(tau=3)
    sizes = [len(d) for d in data]
    for frame, payload in enumerate(data):
        packets = encoder.encode(payload, HALF)
        assert {p.fec_frame for p in packets} == {frame}
        count = packets[0].data_packets
        assert b"".join(p.payload for p in packets[:count])[: len(payload)] == payload
        expected_previous = tuple(sizes[frame - 1 - i] if frame - 1 - i >= 0 else 0 for i in range(3))
        assert {p.previous_sizes for p in packets} == {expected_previous}


def test_encoder_rejects_oversized_frames_and_bad_ratios():
    encoder = StreamingEncoder()
    with pytest.raises(ValueError):
        encoder.encode(bytes(MAX_FEC_FRAME_BYTES + 1), HALF)
    with pytest.raises(ValueError):
        encoder.encode(bytes(10), Fraction(3, 2))
    with pytest.raises(ValueError):
        encoder.encode(bytes(10), Fraction(-1, 4))
    # A refused frame does not consume a frame number.
    assert encoder.encode(bytes(10), HALF)[0].fec_frame == 0


def _parity_payloads(history: list[bytes], tau: int = 3) -> bytes:
    encoder = StreamingEncoder(tau)
    for payload in history:
        packets = encoder.encode(payload, Fraction(1))
    count = packets[0].data_packets
    return b"".join(p.payload for p in packets[count:])


@pytest.mark.parametrize(
    "distance, stripe, combined",
    [
        (0, 0, True),
        (0, 1, True),
        (1, 0, True),
        (1, 1, False),  # v stripes of frames t-1..t-tau, u stripes only of t-tau
        (2, 2, True),
        (2, 3, False),
        (3, 0, True),
        (3, 1, True),
        (4, 0, False),
        (4, 1, False),  # beyond tau
    ],
)
def test_parity_combines_exactly_the_documented_stripes(distance, stripe, combined):
    history = frames(6, 1024, seed=3)  # 4 stripes each
    changed = list(history)
    target = len(history) - 1 - distance
    flipped = bytearray(changed[target])
    flipped[stripe * 256 + 17] ^= 0x5A
    changed[target] = bytes(flipped)
    assert (_parity_payloads(history) != _parity_payloads(changed)) == combined


def test_encoding_is_deterministic():
    data = frames(8, [300, 5000, 2000, 16384, 1, 0, 7000, 900], seed=4)
    first, second = StreamingEncoder(), StreamingEncoder()
    assert [first.encode(d, HALF) for d in data] == [second.encode(d, HALF) for d in data]


# --- the reference behaviour of Tambur's own code (tau = 3, 2000-byte frames, 2 data + 1 parity packet) ---


@pytest.mark.parametrize("lost", [0, 1, 2, 3, 4, 9, 15])
def test_one_lost_frame_is_recovered_at_delay_three(lost):
    data = frames(20, 2000, seed=lost)
    recovered_at, abandoned_at, _ = run(data, HALF, {lost})
    assert recovered_at[lost] == lost + 3
    assert abandoned_at == {}
    assert all(recovered_at[f] == f for f in range(20) if f != lost)  # the others at delay 0


@pytest.mark.parametrize("first", [0, 1, 5, 10])
def test_two_consecutive_lost_frames_are_never_recovered_at_ratio_one_half(first):
    data = frames(20, 2000, seed=first)
    recovered_at, abandoned_at, _ = run(data, HALF, {first, first + 1})
    assert first not in recovered_at and first + 1 not in recovered_at
    # Declared unrecoverable when they leave the 2*tau+1 window.
    assert abandoned_at == {first: first + 7, first + 1: first + 8}
    assert all(recovered_at[f] == f for f in range(20) if f not in (first, first + 1))


@pytest.mark.parametrize("first", [0, 1, 5, 10])
def test_two_frame_burst_is_recovered_at_delay_three_with_ratio_one(first):
    data = frames(20, 2000, seed=first)
    recovered_at, abandoned_at, _ = run(data, Fraction(1), {first, first + 1})
    assert recovered_at[first] == first + 3
    assert recovered_at[first + 1] == first + 4
    assert abandoned_at == {}


def test_lost_data_packet_is_recovered_from_own_parity_at_delay_zero():
    data = frames(4, 2000, seed=7)
    encoder, decoder = StreamingEncoder(), StreamingDecoder()
    for frame, payload in enumerate(data):
        data_packet_0, data_packet_1, parity = encoder.encode(payload, HALF)
        assert decoder.receive(data_packet_1) == []
        assert decoder.receive(parity) == [frame]
        assert decoder.frame_data(frame) == payload


def test_frames_never_seen_are_abandoned_when_they_leave_the_window():
    data = frames(12, 500, seed=8)
    recovered_at, abandoned_at, _ = run(data, Fraction(0), {2, 3})
    assert abandoned_at == {2: 9, 3: 10}


# --- frame-size protection ---


def test_size_of_a_fully_lost_frame_is_learnt_from_the_next_frames():
    sizes = [1500, 700, 3300, 2100, 900, 1800, 2500, 1200]
    data = frames(len(sizes), sizes, seed=9)
    encoder, decoder = StreamingEncoder(), StreamingDecoder()
    recovered = {}
    for frame, payload in enumerate(data):
        packets = encoder.encode(payload, Fraction(1))
        if frame in (3, 4):
            continue
        for packet in packets:
            for done in decoder.receive(packet):
                recovered[done] = decoder.frame_data(done)
        if frame == 2:
            assert decoder.frame_size(3) is None
        if frame == 5:
            assert decoder.frame_size(3) == 2100 and decoder.frame_size(4) == 900
    assert recovered[3] == data[3] and recovered[4] == data[4]


def test_a_frame_lost_with_the_next_tau_frames_is_never_sized():
    data = frames(10, 1000, seed=10)
    _, abandoned_at, decoder = run(data, Fraction(1), {2, 3, 4, 5})
    assert decoder.frame_size(2) is None
    assert 2 in abandoned_at


# --- hostile and inconsistent packets ---


def _stream(count: int, size: int = 1000, ratio: Fraction = HALF) -> list[StreamingPacket]:
    encoder = StreamingEncoder()
    return [packet for payload in frames(count, size, seed=11) for packet in encoder.encode(payload, ratio)]


GOOD = _stream(3)[3]  # frame 1, data packet 0 (1000 B: 2 data x 512 + 1 parity x 512)


@pytest.mark.parametrize(
    "change",
    [
        {"payload": bytes(511)},
        {"payload": bytes(1024)},
        {"position": 3},
        {"position": -1},
        {"fec_frame": -1},
        {"data_packets": 4},  # 4 stripes as 4 x 256 is not how a sender cuts 1000 B at this parity
        {"data_packets": 3},  # does not divide the 4 stripes
        {"data_packets": 0},
        {"parity_packets": -1},
        {"parity_packets": 3},  # more parity than data stripes
        {"frame_size": MAX_FEC_FRAME_BYTES + 1},
        {"frame_size": -1},
        {"previous_sizes": (1000, 0)},  # not tau entries
        {"previous_sizes": (1000, 5, 0)},  # frame -1 does not exist, must be 0
        {"previous_sizes": (1000, 0, -3)},
        {"previous_sizes": [1000, 0, 0]},
        {"fec_frame": 1 + MAX_FRAME_JUMP},
        {"payload": "x" * 512},
        {"position": 0.0},
    ],
)
def test_malformed_packets_are_counted_and_change_nothing(change):
    decoder = StreamingDecoder()
    assert decoder.receive(dataclasses.replace(GOOD, **change)) == []
    assert decoder.malformed == 1
    assert decoder.newest_frame is None
    assert decoder.receive(GOOD) == []
    assert decoder.newest_frame == 1 and decoder.malformed == 1


def test_packets_contradicting_known_sizes_or_counts_are_dropped():
    stream = _stream(6)
    decoder = StreamingDecoder()
    for packet in stream[:6]:  # frames 0 and 1 complete
        decoder.receive(packet)
    lies = [
        dataclasses.replace(stream[6], previous_sizes=(1000, 999, 0)),  # frame 0 had 1000 bytes
        dataclasses.replace(stream[6], frame_size=1100),
        dataclasses.replace(stream[4], frame_size=900),  # frame 1 again, other size
        dataclasses.replace(stream[4], data_packets=1, parity_packets=1, payload=bytes(1024), position=0),
    ]
    for lie in lies:
        assert decoder.receive(lie) == []
    assert decoder.malformed == len(lies)
    assert decoder.receive(stream[6]) == [] and decoder.receive(stream[7]) == [2]


def test_duplicates_and_stale_packets_are_ignored_silently():
    stream = _stream(12)
    decoder = StreamingDecoder()
    for packet in stream:
        decoder.receive(packet)
        assert decoder.receive(packet) == []
    assert decoder.receive(stream[0]) == []  # frame 0 left the window long ago
    assert decoder.malformed == 0


finite_ints = st.integers(-(2**40), 2**40)
hostile_packets = st.builds(
    StreamingPacket,
    fec_frame=st.one_of(st.integers(-3, 12), finite_ints),
    position=st.one_of(st.integers(-2, 8), finite_ints),
    data_packets=st.one_of(st.integers(-1, 70), finite_ints),
    parity_packets=st.one_of(st.integers(-1, 70), finite_ints),
    frame_size=st.one_of(st.integers(-2, 17000), finite_ints),
    previous_sizes=st.lists(st.integers(-2, 17000), min_size=0, max_size=4).map(tuple),
    payload=st.one_of(st.binary(max_size=1300), st.sampled_from([bytes(256), bytes(512), bytes(1024)])),
)


@given(st.lists(st.one_of(hostile_packets, st.sampled_from(_stream(10, 1000))), max_size=60))
@settings(max_examples=300, deadline=None)
def test_hostile_streams_never_raise(stream):
    decoder = StreamingDecoder()
    for packet in stream:
        recovered = decoder.receive(packet)
        assert recovered == sorted(set(recovered))
        for frame in recovered:
            assert isinstance(decoder.frame_data(frame), bytes)
        gone = decoder.abandoned()
        assert gone == sorted(set(gone)) and not set(gone) & set(recovered)
