"""FrameProtector -> wire -> FrameAssembler: round trips, packetization, loss recovery, memory, hostile input."""

from __future__ import annotations

import dataclasses
import math
import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.codecs.fec.streaming_layout import FrameLayout
from testbed.codecs.frame_protection import FrameAssembler, FrameProtector
from testbed.codecs.framing import BlockFields, MediaPacket, StreamingFields, parse_media

KINDS = ["none", "block", "streaming"]
RATIOS = [Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(1)]
SIZES = [0, 1, 255, 256, 1199, 1200, 1201, 16384, 16385, 40000]
HALF = Fraction(1, 2)
TAU = 3


def frame_bytes(sizes: list[int], seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(size) for size in sizes]


def encode(kind: str, frames: list[bytes], ratio: Fraction | list[Fraction], mtu: int = 1200, tau: int = TAU,
           first_id: int = 0) -> list[list[MediaPacket]]:
    """Per video frame, its datagrams as the receiver parses them (built like codecs/vpx_sender.py does)."""
    ratios = ratio if isinstance(ratio, list) else [ratio] * len(frames)
    protector = FrameProtector(kind, mtu, tau)
    seq = 0
    out = []
    for offset, (data, frame_ratio) in enumerate(zip(frames, ratios)):
        frame_id = first_id + offset
        fragments = protector.protect(data, frame_ratio)
        packets = []
        for index, fragment in enumerate(fragments):
            packet = MediaPacket(seq, frame_id, offset == 0, fragment.parity, index, len(fragments),
                                 1_000_000 + 33_333 * offset, fragment.fec, fragment.payload)
            seq += 1
            parsed = parse_media(packet.serialize())
            assert parsed == packet
            packets.append(parsed)
        out.append(packets)
    return out


def deliver(assembler: FrameAssembler, packets: list[MediaPacket]) -> list[tuple[int, int, bytes]]:
    """(index of the packet that completed it, frame id, bytes) for every completion."""
    done = []
    for index, packet in enumerate(packets):
        for frame_id, data in assembler.add(packet):
            done.append((index, frame_id, data))
    return done


def flat(per_frame: list[list[MediaPacket]]) -> list[MediaPacket]:
    return [packet for packets in per_frame for packet in packets]


def assert_each_once(done: list[tuple[int, int, bytes]], frames: list[bytes], expected_ids, first_id: int = 0):
    ids = [frame_id for _, frame_id, _ in done]
    assert len(ids) == len(set(ids)), f"frames completed more than once: {ids}"
    assert set(ids) == set(expected_ids)
    for _, frame_id, data in done:
        assert data == frames[frame_id - first_id], frame_id


# --------------------------------------------------------------------------------------------------------
# Lossless round trips


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_round_trip_every_size(kind, ratio, order):
    sizes = SIZES if order == "ascending" else SIZES[::-1]
    frames = frame_bytes(sizes, seed=len(order))
    per_frame = encode(kind, frames, ratio, first_id=100)
    assembler = FrameAssembler(kind)
    packets = flat(per_frame)
    done = deliver(assembler, packets)
    assert_each_once(done, frames, range(100, 100 + len(frames)), first_id=100)
    # Each frame completes on its last data packet (parity is never needed without loss).
    start = 0
    completed_at = {frame_id: index for index, frame_id, _ in done}
    for offset, frame_packets in enumerate(per_frame):
        last_data = max(i for i, p in enumerate(frame_packets) if not p.parity)
        assert completed_at[100 + offset] == start + last_data
        start += len(frame_packets)


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
def test_fragment_metadata(kind, ratio, size):
    (packets,) = encode(kind, frame_bytes([size]), ratio)
    assert [p.fragment for p in packets] == list(range(len(packets)))
    assert {p.fragments for p in packets} == {len(packets)}
    parity = [p.parity for p in packets]
    data_count = parity.count(False)
    if kind != "streaming":
        assert parity == [False] * data_count + [True] * (len(packets) - data_count)  # data first, then parity
    if kind == "none":
        assert not any(parity)
        assert {p.fec for p in packets} == {size}
        return
    if kind == "block":
        assert all(isinstance(p.fec, BlockFields) for p in packets)
        k = max(1, math.ceil(size / 1200))
        m = math.ceil(k * ratio)
        assert (data_count, len(packets)) == (k, k + m)
        assert [p.fec.position for p in packets] == list(range(k + m))
        assert {(p.fec.data_packets, p.fec.parity_packets, p.fec.frame_size) for p in packets} == {(k, m, size)}
        assert [p.fec.position >= k for p in packets] == parity
        return
    assert all(isinstance(p.fec, StreamingFields) for p in packets)
    parts = max(1, math.ceil(size / 16384))
    assert {p.fec.parts for p in packets} == {parts}
    for part in range(parts):
        mine = [p for p in packets if p.fec.part == part]
        assert len({p.fec.fec_frame for p in mine}) == 1
        assert mine[0].fec.fec_frame == part  # first frame of a fresh stream is FEC frame 0
        part_size = min(16384, size - 16384 * part)
        fields = mine[0].fec
        assert fields.frame_size == part_size
        assert [p.fec.position for p in mine] == list(range(fields.data_packets + fields.parity_packets))
        assert [p.parity for p in mine] == [p.fec.position >= fields.data_packets for p in mine]
        assert len(fields.previous_sizes) == TAU
    # Parts are sent in order, each part's data then its parity.
    assert [p.fec.part for p in packets] == sorted(p.fec.part for p in packets)


@pytest.mark.parametrize("size, parts", [(0, [0]), (1, [1]), (16384, [16384]), (16385, [16384, 1]),
                                         (40000, [16384, 16384, 7232]), (49152, [16384] * 3)])
def test_streaming_split_into_fec_frames(size, parts):
    frames = frame_bytes([1000, size, 1000])
    per_frame = encode("streaming", frames, HALF)
    middle = per_frame[1]
    fec_frames = sorted({p.fec.fec_frame for p in middle})
    assert fec_frames == list(range(1, 1 + len(parts)))
    for packet in middle:
        assert packet.fec.part == packet.fec.fec_frame - 1
        assert packet.fec.parts == len(parts)
        assert packet.fec.frame_size == parts[packet.fec.part]
    # The frame after it continues the FEC frame numbering; its header announces the sizes of the parts.
    after = per_frame[2][0].fec
    assert after.fec_frame == 1 + len(parts)
    assert after.previous_sizes == tuple((parts[::-1] + [1000, 0, 0])[:TAU])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    sizes=st.lists(st.one_of(st.integers(0, 3000), st.integers(0, 50000)), min_size=1, max_size=5),
    ratios=st.lists(st.sampled_from(RATIOS), min_size=5, max_size=5),
    mtu=st.sampled_from([1200, 1280]),
    seed=st.integers(0, 2**32),
)
def test_round_trip_random_sizes(kind, sizes, ratios, mtu, seed):
    frames = frame_bytes(sizes, seed)
    per_frame = encode(kind, frames, ratios[: len(frames)], mtu=mtu)
    done = deliver(FrameAssembler(kind), flat(per_frame))
    assert_each_once(done, frames, range(len(frames)))


# --------------------------------------------------------------------------------------------------------
# Packetization and MTU


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
def test_streaming_mtu_1200_payload_limit(ratio):
    frames = frame_bytes(SIZES + [10000, 12800, 5120, 2560])
    for packet in flat(encode("streaming", frames, ratio, mtu=1200)):
        assert len(packet.payload) <= 1200
        assert len(packet.payload) % 256 == 0 and 1 <= len(packet.payload) // 256 <= 4


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
def test_streaming_mtu_1280_is_tambur_packetization(ratio):
    sizes = SIZES + [10000, 12800, 5120, 2560]
    per_frame = encode("streaming", frame_bytes(sizes), ratio, mtu=1280)
    for size, packets in zip(sizes, per_frame):
        for part in range(packets[0].fec.parts):
            mine = [p for p in packets if p.fec.part == part]
            layout = FrameLayout.for_frame(mine[0].fec.frame_size, ratio)  # Tambur: up to 5 stripes per packet
            assert (mine[0].fec.data_packets, mine[0].fec.parity_packets) == (layout.data_packets,
                                                                            layout.parity_packets)
            assert {len(p.payload) for p in mine} == {layout.stripes_per_packet * 256}


@pytest.mark.parametrize(
    "size, ratio, mtu, data_packets, parity_packets, payload",
    [
        (10000, HALF, 1280, 8, 4, 1280),
        (10000, HALF, 1200, 10, 5, 1024),
        (2000, HALF, 1280, 2, 1, 1024),
        (2000, HALF, 1200, 2, 1, 1024),
        (1280, Fraction(1), 1280, 1, 1, 1280),
        (1280, Fraction(1), 1200, 5, 5, 256),
        (12800, Fraction(1), 1280, 10, 10, 1280),
        (12800, Fraction(1), 1200, 25, 25, 512),
        (16384, Fraction(1, 4), 1280, 16, 4, 1024),
        (0, Fraction(1, 4), 1280, 1, 1, 256),
        (0, Fraction(0), 1200, 1, 0, 256),
        (7232, HALF, 1280, 29, 15, 256),
    ],
)
def test_streaming_packet_counts_hand_computed(size, ratio, mtu, data_packets, parity_packets, payload):
    (packets,) = encode("streaming", frame_bytes([size]), ratio, mtu=mtu)
    assert [p.parity for p in packets] == [False] * data_packets + [True] * parity_packets
    assert {len(p.payload) for p in packets} == {payload}
    assert {(p.fec.data_packets, p.fec.parity_packets) for p in packets} == {(data_packets, parity_packets)}


@pytest.mark.parametrize("size", SIZES + [2400, 2401, 3600])
def test_none_packetization(size):
    data = frame_bytes([size])[0]
    (packets,) = encode("none", [data], Fraction(1))
    assert len(packets) == max(1, math.ceil(size / 1200))
    assert all(len(p.payload) <= 1200 for p in packets)
    assert all(len(p.payload) == 1200 for p in packets[:-1])
    assert b"".join(p.payload for p in packets) == data


@pytest.mark.parametrize("ratio", RATIOS, ids=str)
@pytest.mark.parametrize("size", SIZES + [2401])
def test_block_payloads_within_mtu(size, ratio):
    (packets,) = encode("block", frame_bytes([size]), ratio)
    assert all(len(p.payload) <= 1200 for p in packets)
    assert len({len(p.payload) for p in packets}) == 1


# --------------------------------------------------------------------------------------------------------
# Loss: no FEC and block FEC


@settings(max_examples=150, deadline=None)
@given(size=st.integers(0, 12000), ratio=st.sampled_from(RATIOS), data=st.data())
def test_none_never_completes_with_a_lost_fragment(size, ratio, data):
    frames = frame_bytes([size, 500])
    per_frame = encode("none", frames, ratio)
    count = len(per_frame[0])
    lost = data.draw(st.sets(st.integers(0, count - 1), min_size=1))
    kept = [p for i, p in enumerate(per_frame[0]) if i not in lost]
    # Duplicates of the received fragments do not stand in for a lost one.
    packets = kept + kept[::-1] + per_frame[1]
    done = deliver(FrameAssembler("none"), packets)
    assert [(frame_id, d) for _, frame_id, d in done] == [(1, frames[1])]


@settings(max_examples=200, deadline=None)
@given(size=st.integers(0, 20000), ratio=st.sampled_from(RATIOS), data=st.data())
def test_block_completes_iff_lost_at_most_parity(size, ratio, data):
    frames = frame_bytes([size], seed=size)
    (packets,) = encode("block", frames, ratio)
    parity = sum(p.parity for p in packets)
    lost = data.draw(st.sets(st.integers(0, len(packets) - 1), max_size=len(packets)))
    kept = [p for i, p in enumerate(packets) if i not in lost]
    data.draw(st.randoms()).shuffle(kept)
    done = deliver(FrameAssembler("block"), kept + kept)
    if len(lost) <= parity:
        assert [(frame_id, d) for _, frame_id, d in done] == [(0, frames[0])]
        assert done[0][0] == len(packets) - parity - 1  # as soon as k packets arrived
    else:
        assert done == []


# --------------------------------------------------------------------------------------------------------
# Loss: streaming FEC (ratio 1/2, 2000-byte frames: 2 data + 1 parity packets of 1024 bytes each)


def drop_fec_frames(per_frame: list[list[MediaPacket]], lost: set[int]) -> list[MediaPacket]:
    return [p for p in flat(per_frame) if p.fec.fec_frame not in lost]


def deliver_like_receiver(assembler: FrameAssembler, packets: list[MediaPacket], first_id: int = 0):
    """Like deliver, but forgets every frame below the oldest incomplete one after each packet."""
    done = []
    completed: set[int] = set()
    for index, packet in enumerate(packets):
        for frame_id, data in assembler.add(packet):
            done.append((index, frame_id, data))
            completed.add(frame_id)
        oldest = first_id
        while oldest in completed:
            oldest += 1
        assembler.forget_before(oldest)
    return done


@pytest.mark.parametrize("forget", [False, True], ids=["keep", "forget"])
@pytest.mark.parametrize("lost", [1, 2, 3, 6])
def test_streaming_single_fully_lost_frame_recovered_tau_later(lost, forget):
    frames = frame_bytes([2000] * (lost + 6), seed=lost)
    per_frame = encode("streaming", frames, HALF)
    packets = drop_fec_frames(per_frame, {lost})
    done = (deliver_like_receiver if forget else deliver)(FrameAssembler("streaming"), packets)
    assert_each_once(done, frames, range(len(frames)))
    (index,) = [index for index, frame_id, _ in done if frame_id == lost]
    # The u stripes of the lost frame are only protected by frame lost+tau's parity.
    assert packets[index].fec.fec_frame == lost + TAU
    assert packets[index].parity


def test_streaming_owner_inference_uses_video_frame_ids():
    """FEC frame numbers differ from video frame ids after a split frame; the lost frame keeps its video id."""
    sizes = [40000, 2000, 2000, 2000, 2000, 2000, 2000, 2000]
    frames = frame_bytes(sizes, seed=7)
    per_frame = encode("streaming", frames, HALF, first_id=50)
    # Video frames 50 (FEC 0-2), 51 (FEC 3), 52 (FEC 4), 53 (FEC 5), ...
    assert {p.fec.fec_frame for p in per_frame[3]} == {5}
    packets = drop_fec_frames(per_frame, {5})
    done = deliver(FrameAssembler("streaming"), packets)
    assert_each_once(done, frames, range(50, 50 + len(frames)), first_id=50)
    (index,) = [index for index, frame_id, _ in done if frame_id == 53]
    assert packets[index].fec.fec_frame == 5 + TAU and packets[index].parity


@pytest.mark.parametrize("first_lost", [1, 2, 4])
def test_streaming_two_consecutive_lost_frames_never_complete(first_lost):
    frames = frame_bytes([2000] * (first_lost + 9), seed=first_lost)
    per_frame = encode("streaming", frames, HALF)
    lost = {first_lost, first_lost + 1}
    done = deliver(FrameAssembler("streaming"), drop_fec_frames(per_frame, lost))
    assert_each_once(done, frames, set(range(len(frames))) - lost)


def test_streaming_lost_part_of_split_frame_completes_with_its_last_part():
    # Video 0: FEC 0; video 1: FEC 1-3; video 2: FEC 4-6; video 3: FEC 7-9; then small frames.
    sizes = [2000, 40000, 40000, 40000, 2000, 2000]
    frames = frame_bytes(sizes, seed=3)
    per_frame = encode("streaming", frames, HALF)
    packets = drop_fec_frames(per_frame, {2})
    done = deliver_like_receiver(FrameAssembler("streaming"), packets)
    assert_each_once(done, frames, range(len(frames)))
    (index,) = [index for index, frame_id, _ in done if frame_id == 1]
    # Parts FEC 1 and FEC 3 were complete long before; the video frame waits for FEC 2's recovery, which
    # needs the parity of FEC 5 (tau later, part of video frame 2).
    last_of_fec3 = max(i for i, p in enumerate(packets) if p.fec.fec_frame == 3)
    assert index > last_of_fec3
    assert packets[index].fec.fec_frame == 2 + TAU and packets[index].parity


@pytest.mark.parametrize("lost_fec", [1, 2, 3])
def test_streaming_unrecoverable_part_keeps_video_frame_incomplete(lost_fec):
    # The small frames after the 40000-byte one carry too little parity to rebuild a lost 29..64-stripe part.
    sizes = [2000, 40000, 2000, 2000, 2000, 2000, 2000]
    frames = frame_bytes(sizes, seed=4)
    per_frame = encode("streaming", frames, HALF)
    assembler = FrameAssembler("streaming")
    done = deliver(assembler, drop_fec_frames(per_frame, {lost_fec}))
    assert_each_once(done, frames, set(range(len(frames))) - {1})


def test_streaming_split_frame_with_two_lost_parts_completes_only_after_both():
    sizes = [2000, 49152, 49152, 49152, 2000, 2000, 2000]
    frames = frame_bytes(sizes, seed=5)
    per_frame = encode("streaming", frames, HALF)
    # Video 1 = FEC 1-3; lose a data packet of FEC 1 and of FEC 3 (recovered by their own parity).
    packets = [p for p in flat(per_frame)
               if not (p.fec.fec_frame in (1, 3) and p.fec.position == 0)]
    done = deliver(FrameAssembler("streaming"), packets)
    assert_each_once(done, frames, range(len(frames)))
    (index,) = [index for index, frame_id, _ in done if frame_id == 1]
    first_parity_of_fec3 = min(i for i, p in enumerate(packets) if p.fec.fec_frame == 3 and p.parity)
    assert index == first_parity_of_fec3


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.one_of(st.integers(0, 4000), st.integers(0, 40000)), min_size=1, max_size=12),
    ratio=st.sampled_from(RATIOS),
    loss=st.sampled_from([0.0, 0.1, 0.3, 0.6]),
    seed=st.integers(0, 2**32),
)
def test_streaming_random_loss_is_safe(sizes, ratio, loss, seed):
    """Whatever is lost: completions are correct, at most once each, and unharmed frames always complete."""
    frames = frame_bytes(sizes, seed)
    per_frame = encode("streaming", frames, ratio)
    rng = random.Random(seed)
    kept = [[p for p in packets if rng.random() >= loss] for packets in per_frame]
    done = deliver(FrameAssembler("streaming"), flat(kept))
    ids = [frame_id for _, frame_id, _ in done]
    assert len(ids) == len(set(ids))
    for _, frame_id, data in done:
        assert data == frames[frame_id]
    intact = {i for i, packets in enumerate(kept)
              if {p.fragment for p in packets if not p.parity} >= {p.fragment for p in per_frame[i] if not p.parity}}
    assert intact <= set(ids)


# --------------------------------------------------------------------------------------------------------
# Duplicates and reordering


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    sizes=st.lists(st.integers(0, 6000), min_size=1, max_size=10),
    ratio=st.sampled_from(RATIOS),
    seed=st.integers(0, 2**32),
)
def test_duplicates_and_reordering(kind, sizes, ratio, seed):
    frames = frame_bytes(sizes, seed)
    packets = flat(encode(kind, frames, ratio))
    rng = random.Random(seed)
    packets = packets + [rng.choice(packets) for _ in range(len(packets) // 2 + 1)]
    if kind == "streaming":
        # Bounded reordering: a packet stays within a few frames of its place (the decoder window is 2*tau).
        keyed = [(p.fec.fec_frame + rng.uniform(0, 2.5), i, p) for i, p in enumerate(packets)]
    else:
        keyed = [(rng.random(), i, p) for i, p in enumerate(packets)]
    done = deliver(FrameAssembler(kind), [p for _, _, p in sorted(keyed)])
    assert_each_once(done, frames, range(len(frames)))


@pytest.mark.parametrize("kind", KINDS)
def test_reverse_order_within_each_frame(kind):
    frames = frame_bytes([0, 3000, 9000, 20000, 1])
    per_frame = encode(kind, frames, HALF)
    done = deliver(FrameAssembler(kind), [p for packets in per_frame for p in reversed(packets)])
    assert_each_once(done, frames, range(len(frames)))


@pytest.mark.parametrize("kind", KINDS)
def test_replay_after_completion_is_ignored(kind):
    frames = frame_bytes([3000, 3000, 3000])
    packets = flat(encode(kind, frames, HALF))
    assembler = FrameAssembler(kind)
    assert len(deliver(assembler, packets)) == 3
    assert deliver(assembler, packets) == []


# --------------------------------------------------------------------------------------------------------
# forget_before


def assembler_state(assembler: FrameAssembler) -> int:
    """Entries held in the assembler's own tables (dicts and sets)."""
    return sum(len(value) for value in vars(assembler).values() if isinstance(value, (dict, set, list)))


def nested_state(assembler: FrameAssembler) -> int:
    """Entries held by the FEC decoders it owns."""
    total = 0
    for value in vars(assembler).values():
        if hasattr(value, "__dict__") and not isinstance(value, type):
            total += sum(len(v) for v in vars(value).values() if isinstance(v, (dict, set, list)))
    return total


def long_lossy_run(kind: str, frames_count: int = 300, loss: float = 0.2, seed: int = 1,
                   ratio: Fraction = HALF):
    rng = random.Random(seed)
    sizes = [rng.choice([300, 1500, 2500, 5000, 20000]) for _ in range(frames_count)]
    frames = frame_bytes(sizes, seed)
    per_frame = encode(kind, frames, ratio)
    assembler = FrameAssembler(kind)
    peaks = []
    for frame_id, packets in enumerate(per_frame):
        for packet in packets:
            if rng.random() >= loss:
                for done_id, data in assembler.add(packet):
                    assert data == frames[done_id]
        assembler.forget_before(frame_id - 4)
        peaks.append((assembler_state(assembler), nested_state(assembler)))
    return assembler, peaks, len(per_frame)


@pytest.mark.parametrize("kind", KINDS)
def test_forget_before_bounds_assembler_tables(kind):
    assembler, peaks, count = long_lossy_run(kind)
    own = [own for own, _ in peaks]
    assert max(own) <= 40, own
    assert max(own[-50:]) <= max(own[:100]) + 10  # no growth with time
    before = assembler_state(assembler)
    assembler.forget_before(count)
    after = assembler_state(assembler)
    assert after < before or before == 0
    # Only a neighbour kept for placing a lost frame may remain.
    assert after <= 3


@pytest.mark.parametrize("ratio", [Fraction(0), HALF], ids=str)
@pytest.mark.parametrize("kind", KINDS)
def test_forget_before_bounds_decoder_state(kind, ratio):
    # Without parity most frames are lost for good: nothing about them may pile up.
    _, peaks, _ = long_lossy_run(kind, frames_count=400, loss=0.3 if ratio else 0.1, ratio=ratio)
    nested = [n for _, n in peaks]
    assert max(nested[-50:]) <= 100, nested[-50:]
    assert max(nested[-50:]) <= max(nested[:100]) + 10, "decoder state grows without bound"


def test_forget_before_drops_incomplete_none_frames():
    frames = frame_bytes([5000] * 6)
    per_frame = encode("none", frames, HALF)
    assembler = FrameAssembler("none")
    for packets in per_frame:
        deliver(assembler, packets[:-1])  # every frame misses its last fragment
    assert assembler_state(assembler) >= 6
    assembler.forget_before(6)
    assert assembler_state(assembler) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_forget_before_ignores_late_packets_of_old_frames(kind):
    frames = frame_bytes([2000] * 6)
    per_frame = encode(kind, frames, Fraction(0))  # no parity: frame 2 cannot be rebuilt before it arrives
    assembler = FrameAssembler(kind)
    # Frame 2 is delayed; the others arrive.
    done = deliver(assembler, [p for i, packets in enumerate(per_frame) if i != 2 for p in packets])
    assert {frame_id for _, frame_id, _ in done} == {0, 1, 3, 4, 5}
    assembler.forget_before(3)  # frame 2 was decided (given up)
    held = assembler_state(assembler)
    assert deliver(assembler, per_frame[2]) == []
    # Replays of completed old frames are ignored as well.
    assert deliver(assembler, per_frame[0] + per_frame[1]) == []
    assert assembler_state(assembler) <= held + 3


@pytest.mark.parametrize("kind", KINDS)
def test_forget_before_keeps_frames_at_and_above_it(kind):
    frames = frame_bytes([3000] * 6)
    per_frame = encode(kind, frames, Fraction(0))
    assembler = FrameAssembler(kind)
    deliver(assembler, flat(per_frame[:3]))
    deliver(assembler, per_frame[3][:1] + per_frame[4][:1])
    assembler.forget_before(3)
    done = deliver(assembler, per_frame[3][1:] + per_frame[4][1:] + per_frame[5])
    assert_each_once(done, frames, {3, 4, 5})


def test_streaming_no_recovery_of_forgotten_frame():
    """A frame below forget_before is not reported even when later parity recovers it."""
    frames = frame_bytes([2000] * 8)
    per_frame = encode("streaming", frames, HALF)
    assembler = FrameAssembler("streaming")
    # Frame 2 loses its first data packet and its parity: only frame 5's parity can rebuild its u stripes.
    partial = [p for p in per_frame[2] if p.fec.position == 1]
    done = deliver(assembler, flat(per_frame[:2]) + partial + flat(per_frame[3:5]))
    assert {frame_id for _, frame_id, _ in done} == {0, 1, 3, 4}
    assembler.forget_before(3)
    done = deliver(assembler, flat(per_frame[5:]))
    assert {frame_id for _, frame_id, _ in done} == {5, 6, 7}


def test_streaming_partially_lost_frame_recovered_tau_later_without_forget():
    """Same losses as above without forget_before: frame 2 completes on frame 5's parity."""
    frames = frame_bytes([2000] * 8)
    per_frame = encode("streaming", frames, HALF)
    packets = flat(per_frame[:2]) + [p for p in per_frame[2] if p.fec.position == 1] + flat(per_frame[3:])
    done = deliver(FrameAssembler("streaming"), packets)
    assert_each_once(done, frames, range(8))
    (index,) = [index for index, frame_id, _ in done if frame_id == 2]
    assert packets[index].fec.fec_frame == 5 and packets[index].parity


# --------------------------------------------------------------------------------------------------------
# Corrupted datagrams that still parse (no checksum above UDP's) must not crash the receiver side


def test_none_inconsistent_fragment_counts_do_not_raise():
    assembler = FrameAssembler("none")
    assert assembler.add(MediaPacket(0, 7, False, False, 2, 3, 0, 10, b"x")) == []
    assert assembler.add(MediaPacket(1, 7, False, False, 1, 2, 0, 10, b"y")) == []


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bit_flipped_datagrams_never_raise(kind, data):
    sizes = data.draw(st.lists(st.integers(0, 5000), min_size=1, max_size=5))
    frames = frame_bytes(sizes)
    packets = flat(encode(kind, frames, HALF))
    rng = data.draw(st.randoms())
    if data.draw(st.booleans()):
        packets = packets[::-1]
    assembler = FrameAssembler(kind)
    for packet in packets:
        wire = bytearray(packet.serialize())
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                # Mostly the header and the fixed part of the extension, where the fields are.
                bit = rng.randrange(8 * min(len(wire), 39 if rng.random() < 0.8 else len(wire)))
                wire[bit // 8] ^= 1 << (bit % 8)
        parsed = parse_media(bytes(wire))
        if parsed is not None:
            for frame_id, frame in assembler.add(parsed):
                assert isinstance(frame_id, int) and isinstance(frame, bytes)
        if rng.random() < 0.1:
            assembler.forget_before(packet.frame_id - 2)


def corrupt_fields(packet: MediaPacket, rng: random.Random) -> MediaPacket:
    """The packet with one header field changed to a nearby value (what a sender bug or a bit flip does)."""
    choice = rng.randrange(5)
    nudge = rng.choice([-2, -1, 1, 2])
    if choice == 0:
        return dataclasses.replace(packet, frame_id=max(0, packet.frame_id + nudge))
    if choice == 1:
        return dataclasses.replace(packet, fragments=max(1, packet.fragments + nudge))
    if choice == 2:
        return dataclasses.replace(packet, fragment=max(0, packet.fragment + nudge))
    fec = packet.fec
    if isinstance(fec, StreamingFields):
        name = rng.choice(["fec_frame", "part", "parts", "position", "data_packets", "parity_packets",
                           "frame_size"])
        return dataclasses.replace(packet, fec=dataclasses.replace(fec, **{name: max(0, getattr(fec, name) + nudge)}))
    if isinstance(fec, BlockFields):
        name = rng.choice(["position", "data_packets", "parity_packets", "frame_size"])
        return dataclasses.replace(packet, fec=dataclasses.replace(fec, **{name: max(0, getattr(fec, name) + nudge)}))
    return dataclasses.replace(packet, fec=max(0, fec + nudge))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(0, 5000), min_size=1, max_size=5), seed=st.integers(0, 2**32),
       reverse=st.booleans())
def test_field_corrupted_datagrams_never_raise(kind, sizes, seed, reverse):
    frames = frame_bytes(sizes, seed)
    packets = flat(encode(kind, frames, HALF))
    if reverse:
        packets = packets[::-1]
    rng = random.Random(seed)
    assembler = FrameAssembler(kind)
    for packet in packets:
        if rng.random() < 0.3:
            packet = parse_media(corrupt_fields(packet, rng).serialize())
            if packet is None:
                continue
        for frame_id, frame in assembler.add(packet):
            assert isinstance(frame_id, int) and isinstance(frame, bytes)


def test_block_code_trims_parity_to_255_packets_and_refuses_frames_that_cannot_fit() -> None:
    protector = FrameProtector("block", mtu=256)
    fragments = protector.protect(bytes(200 * 256), Fraction(1))
    assert len(fragments) == 255 and sum(f.parity for f in fragments) == 55
    with pytest.raises(ValueError, match="needs 300 > 255 block-code packets at mtu 256"):
        protector.protect(bytes(300 * 256), Fraction(1, 2))
