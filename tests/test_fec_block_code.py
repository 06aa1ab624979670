"""Per-frame block code: packet layout, MDS recovery of every erasure pattern, hostile input."""

from __future__ import annotations

import itertools
import math
import random
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.codecs.fec import gf256
from testbed.codecs.fec.block_code import BlockDecoder, BlockEncoder, BlockPacket, cauchy_parity_matrix


def frame_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def deliver(packets: list[BlockPacket], frame_id: int = 0) -> list[bytes | None]:
    decoder = BlockDecoder()
    return [decoder.receive(frame_id, packet) for packet in packets]


@pytest.mark.parametrize(
    "size, ratio, max_payload, k, m, length",
    [
        (1000, 0.5, 1200, 1, 1, 1000),
        (5000, 0.5, 1200, 5, 3, 1000),
        (5001, 0.25, 1000, 6, 2, 834),
        (1200, 1.0, 1200, 1, 1, 1200),
        (2400, 0, 1200, 2, 0, 1200),
        (10 * 100, 0.3, 100, 10, 3, 100),  # exact: ceil(10 * 0.3) is 3 although 10 * 0.3 > 3 in floats
        (7, Fraction(2, 3), 1, 7, 5, 1),
    ],
)
def test_packet_counts_and_lengths(size, ratio, max_payload, k, m, length):
    data = frame_bytes(size, size)
    packets = BlockEncoder().encode(data, ratio, max_payload)
    assert [p.position for p in packets] == list(range(k + m))
    assert all((p.data_packets, p.parity_packets, p.frame_size) == (k, m, size) for p in packets)
    assert {len(p.payload) for p in packets} == {length}
    assert k == math.ceil(size / max_payload)
    # Systematic: data packets carry the frame itself, zero-padded at the end.
    assert b"".join(p.payload for p in packets[:k]) == data.ljust(k * length, b"\0")


def test_empty_frame_is_one_empty_packet_and_decodes_to_empty():
    packets = BlockEncoder().encode(b"", 1.0, 1200)
    assert [(p.position, p.data_packets, p.parity_packets, p.payload) for p in packets] == [
        (0, 1, 1, b""),
        (1, 1, 1, b""),
    ]
    assert BlockDecoder().receive(3, packets[1]) == b""


def test_limits_are_enforced():
    encoder = BlockEncoder()
    encoder.encode(bytes(170), 0.5, 1)  # 170 + 85 = 255 packets is the maximum
    with pytest.raises(ValueError):
        encoder.encode(bytes(171), 0.5, 1)
    with pytest.raises(ValueError):
        encoder.encode(b"x", -0.1, 10)
    with pytest.raises(ValueError):
        encoder.encode(b"x", 0.5, 0)


def test_cauchy_matrix_square_submatrices_are_nonsingular():
    generator = cauchy_parity_matrix(6, 4)
    for size in range(1, 5):
        for rows in itertools.combinations(range(4), size):
            for columns in itertools.combinations(range(6), size):
                assert gf256.rank(generator[list(rows)][:, list(columns)]) == size


@pytest.mark.parametrize("k", range(1, 6))
@pytest.mark.parametrize("m", range(0, 4))
def test_every_erasure_pattern_exhaustively(k, m):
    """Every received subset of >= k packets decodes, in every arrival order tried; < k never does."""
    data = frame_bytes(k * 37 - 5, 100 * k + m)
    ratio = Fraction(m, k)
    packets = BlockEncoder().encode(data, ratio, 37)
    assert (packets[0].data_packets, packets[0].parity_packets) == (k, m)
    rng = random.Random(k * 10 + m)
    for received_count in range(0, k + m + 1):
        for subset in itertools.combinations(packets, received_count):
            order = list(subset)
            rng.shuffle(order)
            results = deliver(order)
            if received_count < k:
                assert results == [None] * received_count
            else:
                # Decoded exactly when the k-th distinct packet arrives, and only then.
                assert results[k - 1] == data
                assert results[: k - 1] == [None] * (k - 1) and results[k:] == [None] * (received_count - k)


@given(
    data=st.binary(min_size=0, max_size=3000),
    ratio=st.sampled_from([0, 0.25, 0.5, 1.0, Fraction(1, 3), 2.0]),
    max_payload=st.integers(10, 1400),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=150, deadline=None)
def test_random_frames_recover_from_any_k_packets(data, ratio, max_payload, seed):
    k = max(1, math.ceil(len(data) / max_payload))
    if k + math.ceil(k * Fraction(ratio)) > 255:
        with pytest.raises(ValueError):
            BlockEncoder().encode(data, ratio, max_payload)
        return
    packets = BlockEncoder().encode(data, ratio, max_payload)
    assert packets[0].data_packets == k
    rng = random.Random(seed)
    kept = rng.sample(packets, rng.randint(0, len(packets)))
    rng.shuffle(kept)
    results = deliver(kept)
    decoded = [r for r in results if r is not None]
    if len(kept) >= k:
        assert decoded == [data]
        assert results[k - 1] == data
    else:
        assert decoded == []


def test_duplicates_inconsistent_packets_and_decoded_frames_are_ignored():
    data = frame_bytes(3000, 1)
    packets = BlockEncoder().encode(data, 0.5, 1000)  # k = 3, m = 2
    decoder = BlockDecoder()
    assert decoder.receive(0, packets[0]) is None
    assert decoder.receive(0, packets[0]) is None  # duplicate does not count twice
    liar = BlockPacket(1, 3, 2, 2999, packets[1].payload)  # disagrees on frame_size
    assert decoder.receive(0, liar) is None
    assert decoder.receive(0, packets[4]) is None
    assert decoder.receive(0, packets[2]) == data
    assert decoder.receive(0, packets[1]) is None  # already delivered
    # Other frames are independent.
    assert decoder.receive(1, packets[0]) is None


def test_forget_before_drops_state_and_later_packets():
    data = frame_bytes(2000, 2)
    packets = BlockEncoder().encode(data, 0.5, 1000)  # k = 2
    decoder = BlockDecoder()
    decoder.receive(5, packets[0])
    decoder.receive(6, packets[0])
    decoder.forget_before(6)
    assert decoder.receive(5, packets[1]) is None
    assert decoder.receive(6, packets[1]) == data


packet_fields = st.builds(
    BlockPacket,
    position=st.integers(-3, 300),
    data_packets=st.integers(-2, 300),
    parity_packets=st.integers(-2, 300),
    frame_size=st.integers(-5, 5000),
    payload=st.binary(max_size=300),
)


@given(st.lists(st.tuples(st.integers(-2, 4), packet_fields), max_size=40))
@settings(max_examples=300, deadline=None)
def test_hostile_packets_never_raise(stream):
    decoder = BlockDecoder()
    for frame_id, packet in stream:
        result = decoder.receive(frame_id, packet)
        assert result is None or isinstance(result, bytes)


def test_hostile_packets_with_wrong_types_are_ignored():
    decoder = BlockDecoder()
    assert decoder.receive(0, BlockPacket("0", 1, 0, 0, b"")) is None  # type: ignore[arg-type]
    assert decoder.receive(0, BlockPacket(0, 1, 0, 1, "x")) is None  # type: ignore[arg-type]
    assert decoder.receive(0, BlockPacket(0, 1, 0, 1, b"x")) == b"x"
