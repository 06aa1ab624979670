"""VpxSender driven directly (sans-IO): capture timing, wire format, keyframe rules, adaptive FEC ratio.

The test plays the receiver: it calls handle_timer at chosen times, collects the datagrams, and hands the
sender ACKs, quality reports and keyframe requests exactly when it wants them to arrive. Real libvpx.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from testbed.codecs.framing import (
    BlockFields,
    Feedback,
    FeedbackKind,
    MediaPacket,
    StreamingFields,
    parse_media,
)
from testbed.codecs.synthetic_video import synthetic_clip
from testbed.codecs.video_source import VideoSource
from testbed.codecs.vpx import VpxDecoder
from testbed.codecs.vpx_sender import VpxSender, VpxSenderConfig

FPS = 30
CLIP = synthetic_clip("talking-head", (64, 64), 30)
FEC_KINDS = ("none", "block", "streaming")


def make_sender(frames: int = 60, fps: float = FPS, **config) -> VpxSender:
    return VpxSender(VideoSource(CLIP, fps, frames / fps), VpxSenderConfig(**config))


def ack(frame_id: int) -> bytes:
    return Feedback(FeedbackKind.ACK, frame_id).serialize()


def report(lost: int, received: int = 50) -> bytes:
    return Feedback(FeedbackKind.REPORT, 0, received, lost).serialize()


def keyframe_request() -> bytes:
    return Feedback(FeedbackKind.KEYFRAME_REQUEST, 0).serialize()


def capture(sender: VpxSender) -> tuple[int, list]:
    """Capture exactly the next frame at its timer; return its id and its datagrams."""
    now = sender.get_timer()
    assert now is not None
    before = len(sender.frames)
    sender.handle_timer(now)
    assert len(sender.frames) == before + 1
    frame = sender.frames[-1]
    datagrams = sender.datagrams_to_send(now)
    assert all(d.frame_id == frame.frame_id for d in datagrams)
    return frame.frame_id, datagrams


def keyframes(sender: VpxSender) -> list[int]:
    return [f.frame_id for f in sender.frames if f.keyframe]


# --- capture timing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fps", [30, 25, 12.5])
def test_one_frame_per_interval_and_timer_is_next_capture_time(fps):
    frames = 20
    sender = make_sender(frames, fps)
    for frame_id in range(frames):
        assert sender.get_timer() == frame_id / fps
        # Just before the capture time nothing happens.
        sender.handle_timer(frame_id / fps - 1e-6)
        assert len(sender.frames) == frame_id
        assert sender.datagrams_to_send(frame_id / fps) == []
        sender.handle_timer(frame_id / fps)
        assert len(sender.frames) == frame_id + 1
        assert sender.frames[-1].frame_id == frame_id
        assert sender.frames[-1].capture_s == frame_id / fps
        assert sender.datagrams_to_send(frame_id / fps)
        # A second call at the same time sends nothing more.
        sender.handle_timer(frame_id / fps)
        assert len(sender.frames) == frame_id + 1
    assert sender.get_timer() is None
    sender.handle_timer(100.0)
    assert len(sender.frames) == frames
    assert sender.datagrams_to_send(100.0) == []


def test_late_timer_sends_every_due_frame_at_once_with_the_call_time():
    sender = make_sender(10)
    sender.handle_timer(0.1)  # frames 0..3 (3/30 == 0.1) are due
    assert [f.frame_id for f in sender.frames] == [0, 1, 2, 3]
    assert [f.capture_s for f in sender.frames] == [0, 1 / 30, 2 / 30, 3 / 30]
    datagrams = sender.datagrams_to_send(0.1)
    packets = [parse_media(d.payload) for d in datagrams]
    assert {p.send_time_us for p in packets} == {100_000}
    assert sorted({p.frame_id for p in packets}) == [0, 1, 2, 3]
    assert sender.get_timer() == 4 / 30


def test_datagrams_to_send_hands_over_once():
    sender = make_sender(3)
    sender.handle_timer(0.0)
    assert sender.datagrams_to_send(0.0)
    assert sender.datagrams_to_send(0.0) == []


# --- wire format and frame records -----------------------------------------------------------------------


@pytest.mark.parametrize("fec", FEC_KINDS)
@pytest.mark.parametrize("mtu", [1200, 100])
def test_datagrams_parse_and_match_the_frame_records(fec, mtu):
    frames = 40
    sender = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=mtu)
    decoder = VpxDecoder("vp9")
    next_seq = 0
    for frame_id in range(frames):
        now = frame_id / FPS
        sender.handle_timer(now)
        datagrams = sender.datagrams_to_send(now)
        record = sender.frames[frame_id]
        packets = [parse_media(d.payload) for d in datagrams]
        assert all(p is not None for p in packets)
        # Frame ids, fragment indices and counts are consistent; sequence numbers are consecutive.
        assert [d.frame_id for d in datagrams] == [frame_id] * len(datagrams)
        assert [p.frame_id for p in packets] == [frame_id] * len(packets)
        assert [p.fragment for p in packets] == list(range(len(packets)))
        assert {p.fragments for p in packets} == {len(packets)}
        assert [p.seq for p in packets] == list(range(next_seq, next_seq + len(packets)))
        next_seq += len(packets)
        assert {p.send_time_us for p in packets} == {round(now * 1e6)}
        assert {p.keyframe for p in packets} == {record.keyframe}
        # Flows: parity goes out as "fec", everything else as "media"; data comes before parity.
        assert [d.flow for d in datagrams] == ["fec" if p.parity else "media" for p in packets]
        parity_flags = [p.parity for p in packets]
        assert parity_flags == sorted(parity_flags)
        # Byte accounting.
        assert record.sent_bytes == sum(len(d.payload) for d in datagrams)
        assert record.fec_bytes == sum(len(p.payload) for p in packets if p.parity)
        assert record.frame_id == frame_id and record.capture_s == now and record.ratio == Fraction(1, 2)
        data_packets = [p for p in packets if not p.parity]
        if fec == "none":
            assert record.fec_bytes == 0 and not any(parity_flags)
            assert {p.fec for p in packets} == {record.media_bytes}
            assert all(len(p.payload) <= mtu for p in packets)
            encoded = b"".join(p.payload for p in data_packets)
        elif fec == "block":
            assert all(isinstance(p.fec, BlockFields) for p in packets)
            assert {p.fec.frame_size for p in packets} == {record.media_bytes}
            assert [p.fec.position for p in packets] == list(range(len(packets)))
            assert sum(parity_flags) == packets[0].fec.parity_packets >= 1
            encoded = b"".join(p.payload for p in data_packets)[: record.media_bytes]
        else:
            assert all(isinstance(p.fec, StreamingFields) for p in packets)
            assert {p.fec.frame_size for p in packets} == {record.media_bytes}
            assert sum(parity_flags) >= 1
            encoded = b"".join(p.payload for p in data_packets)[: record.media_bytes]
        assert record.sent_bytes > record.media_bytes + record.fec_bytes  # headers on top
        assert len(encoded) == record.media_bytes
        # The data datagrams carry the encoded frame itself: it decodes.
        image = decoder.decode(encoded)
        assert image.shape == (64, 64, 3)
    assert sender.get_timer() is None


@pytest.mark.parametrize("fec", ["block", "streaming"])
def test_media_and_fec_bytes_split_on_flows(fec):
    sender = make_sender(20, fec=fec, ratio=Fraction(1, 2))
    sender.handle_timer(19 / FPS)
    datagrams = sender.datagrams_to_send(1.0)
    for record in sender.frames:
        mine = [d for d in datagrams if d.frame_id == record.frame_id]
        fec_payloads = sum(len(parse_media(d.payload).payload) for d in mine if d.flow == "fec")
        assert {d.flow for d in mine} == {"media", "fec"}
        assert fec_payloads == record.fec_bytes > 0


# --- keyframe rules -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_only_frame_zero_is_a_keyframe_while_every_frame_is_acked_promptly(fec):
    frames = 90  # 3 s: past the 1 s timeout many times over
    sender = make_sender(frames, fec=fec)
    for _ in range(frames):
        frame_id, _ = capture(sender)
        sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.01)
    assert keyframes(sender) == [0]
    assert not any(f.forced_keyframe for f in sender.frames)


def first_forced_after(withhold_from: int, timeout_s: Fraction = Fraction(1), fps: int = FPS) -> int:
    """Exact rule: the first frame f with capture(f) - capture(withhold_from) > 1 s."""
    frame = withhold_from
    while Fraction(frame - withhold_from, fps) <= timeout_s:
        frame += 1
    return frame


@pytest.mark.parametrize("withhold_from", [0, 5, 32, 36, 40])
def test_timeout_forces_a_keyframe_exactly_when_the_oldest_unacked_frame_is_older_than_one_second(withhold_from):
    # ACK every frame before `withhold_from` promptly, then nothing: only the 1 s rule can fire (no ACK is newer
    # than the oldest unacked frame, so the tau rule cannot).
    expected = first_forced_after(withhold_from)  # withhold_from + 31 at 30 fps
    assert expected == withhold_from + 31
    frames = expected + 5
    sender = make_sender(frames)
    for _ in range(frames):
        frame_id, _ = capture(sender)
        if frame_id < withhold_from:
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
    forced = [f.frame_id for f in sender.frames if f.forced_keyframe]
    assert forced and forced[0] == expected, (
        f"oldest unacked frame {withhold_from} (captured {withhold_from}/30 s): a frame captured exactly 1 s later "
        f"is not older than 1 s, so the first forced keyframe must be frame {expected}, got {forced[:1]}"
    )
    assert keyframes(sender) == sorted({0, expected})


def test_timeout_repeats_every_31_frames_when_no_ack_ever_arrives():
    frames = 130
    sender = make_sender(frames)
    for _ in range(frames):
        capture(sender)
    # After each forced keyframe the unacked tracking restarts at it, so the next one comes 1 s + 1 frame later.
    assert keyframes(sender) == [0, 31, 62, 93, 124]
    assert [f.frame_id for f in sender.frames if f.forced_keyframe] == [31, 62, 93, 124]


@pytest.mark.parametrize("tau", [2, 3, 5])
def test_acks_running_more_than_tau_past_a_missing_frame_force_a_keyframe(tau):
    missing = 10
    trigger_ack = missing + tau + 1  # newest acked - oldest unacked = tau + 1 > tau
    frames = 60
    sender = make_sender(frames, tau=tau)
    for _ in range(frames):
        frame_id, _ = capture(sender)
        if frame_id != missing:
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.005)
    assert keyframes(sender) == [0, trigger_ack + 1]
    assert [f.frame_id for f in sender.frames if f.forced_keyframe] == [trigger_ack + 1]
    # After the keyframe the unacked tracking restarted: frame 10's missing ACK no longer counts, not even once it
    # is more than 1 s old (frame 10 was captured at 0.33 s, the video runs to 2 s).


@pytest.mark.parametrize("ack_delay_frames", [1, 2, 4])
def test_tau_rule_fires_at_the_first_capture_after_the_triggering_ack_arrives(ack_delay_frames):
    # ACK of frame f is delivered just before frame f + ack_delay_frames is captured; frame 10 is never ACKed.
    missing, tau = 10, 3
    frames = 40
    sender = make_sender(frames, tau=tau)
    pending: list[int] = []
    for next_frame in range(frames):
        now = next_frame / FPS
        while pending and pending[0] + ack_delay_frames <= next_frame:
            sender.receive_datagram(ack(pending.pop(0)), now - 0.001)
        frame_id, _ = capture(sender)
        assert frame_id == next_frame
        if frame_id != missing:
            pending.append(frame_id)
    # ACK of frame 14 arrives just before frame 14 + delay is captured: that frame is the keyframe.
    assert keyframes(sender) == [0, missing + tau + 1 + ack_delay_frames]


def test_ack_of_frame_13_alone_does_not_trigger_with_tau_3():
    sender = make_sender(20, tau=3)
    for _ in range(20):
        frame_id, _ = capture(sender)
        if frame_id != 10 and frame_id <= 13:
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
    # Only 1 s timeout could fire now, and frame 19 is captured < 1 s after frame 10.
    assert keyframes(sender) == [0]


def test_after_a_forced_keyframe_old_unacked_frames_are_forgotten():
    sender = make_sender(90, tau=3)
    for _ in range(90):
        frame_id, _ = capture(sender)
        if frame_id not in (10, 11, 12):  # ACKs of several frames before the keyframe never arrive
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
    # Frame 10 oldest, ACK of 14 is > 3 past it: keyframe at 15. Then every frame is ACKed: no more keyframes,
    # although frames 10..12 stay unacked for ever.
    assert keyframes(sender) == [0, 15]


def test_late_acks_of_frames_before_a_keyframe_change_nothing():
    sender = make_sender(60, tau=3)
    for _ in range(60):
        frame_id, _ = capture(sender)
        if frame_id != 10:
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
        if frame_id == 20:
            sender.receive_datagram(ack(10), frame_id / FPS + 0.002)  # very late ACK of the missing frame
    assert keyframes(sender) == [0, 15]


def test_unacked_keyframe_itself_times_out():
    # Every frame but the forced keyframe is ACKed: the keyframe is the oldest unacked frame and the tau rule
    # fires once the ACKs run tau past it.
    sender = make_sender(40, tau=3)
    for _ in range(40):
        frame_id, _ = capture(sender)
        if frame_id not in (10, 15):
            sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
    assert keyframes(sender) == [0, 15, 20]


@pytest.mark.parametrize("on_request", [False, True])
def test_keyframe_request_forces_one_keyframe_only_when_enabled(on_request):
    sender = make_sender(30, keyframe_on_request=on_request)
    for _ in range(30):
        frame_id, _ = capture(sender)
        sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
        if frame_id in (7, 20):
            sender.receive_datagram(keyframe_request(), frame_id / FPS + 0.002)
        if frame_id == 20:  # two requests before one capture: still one keyframe
            sender.receive_datagram(keyframe_request(), frame_id / FPS + 0.003)
    if on_request:
        assert keyframes(sender) == [0, 8, 21]
        assert [f.frame_id for f in sender.frames if f.forced_keyframe] == [8, 21]
    else:
        assert keyframes(sender) == [0]


def test_keyframe_packets_carry_the_keyframe_flag_on_a_forced_keyframe():
    sender = make_sender(10, keyframe_on_request=True, fec="block", ratio=Fraction(1, 2))
    capture(sender)
    sender.receive_datagram(keyframe_request(), 0.01)
    _, datagrams = capture(sender)
    assert sender.frames[1].keyframe and sender.frames[1].forced_keyframe
    assert all(parse_media(d.payload).keyframe for d in datagrams)
    _, datagrams = capture(sender)
    assert not sender.frames[2].keyframe
    assert not any(parse_media(d.payload).keyframe for d in datagrams)


# --- adaptive FEC ratio --------------------------------------------------------------------------------------


def parity_count(datagrams) -> int:
    return sum(d.flow == "fec" for d in datagrams)


@pytest.mark.parametrize("fec", ["block", "streaming"])
def test_adaptive_ratio_follows_reports_with_a_three_frame_lag(fec):
    frames = 40
    sender = make_sender(frames, fec=fec)
    parities = {}
    for _ in range(frames):
        frame_id, datagrams = capture(sender)
        parities[frame_id] = parity_count(datagrams)
        sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.001)
        if frame_id == 4:
            # Arrives while frame 5 is being prepared: frames 5, 6, 7 keep ratio 0, frame 8 gets 1/2.
            sender.receive_datagram(report(lost=3), frame_id / FPS + 0.002)
        if frame_id == 20:
            # Loss-free report while frame 21 is prepared: frame 24 goes back to 0.
            sender.receive_datagram(report(lost=0), frame_id / FPS + 0.002)
    ratios = [f.ratio for f in sender.frames]
    expected = [Fraction(0)] * 8 + [Fraction(1, 2)] * 16 + [Fraction(0)] * 16
    assert ratios == expected
    for frame_id in range(frames):
        if expected[frame_id]:
            assert parities[frame_id] >= 1 and sender.frames[frame_id].fec_bytes > 0
        else:
            assert parities[frame_id] == 0 and sender.frames[frame_id].fec_bytes == 0


def test_adaptive_ratio_starts_at_zero_without_parity():
    for fec in ("block", "streaming"):
        sender = make_sender(10, fec=fec)
        sender.handle_timer(9 / FPS)
        assert all(d.flow == "media" for d in sender.datagrams_to_send(1.0))
        assert {f.ratio for f in sender.frames} == {0}
        assert {f.fec_bytes for f in sender.frames} == {0}


def test_report_arriving_at_a_capture_instant_before_the_timer_counts_from_that_frame():
    sender = make_sender(20, fec="block")
    for _ in range(6):
        capture(sender)
    # Frame 6 has not been captured yet (its timer is due now): the lag counts from frame 6.
    sender.receive_datagram(report(lost=1), 6 / FPS)
    for _ in range(14):
        capture(sender)
    assert [f.ratio for f in sender.frames] == [0] * 9 + [Fraction(1, 2)] * 11


def test_reports_in_quick_succession_apply_in_order():
    sender = make_sender(20, fec="block")
    for _ in range(5):
        capture(sender)
    sender.receive_datagram(report(lost=2), 4.5 / FPS)  # -> frame 8: 1/2
    capture(sender)  # frame 5
    sender.receive_datagram(report(lost=0), 5.5 / FPS)  # -> frame 9: 0
    for _ in range(14):
        capture(sender)
    assert [f.ratio for f in sender.frames] == [0] * 8 + [Fraction(1, 2)] + [0] * 11


@pytest.mark.parametrize("ratio", [Fraction(0), Fraction(1, 4), Fraction(1, 2)])
def test_fixed_ratio_ignores_reports(ratio):
    sender = make_sender(20, fec="block", ratio=ratio)
    for _ in range(20):
        frame_id, datagrams = capture(sender)
        sender.receive_datagram(report(lost=frame_id % 2 * 5), frame_id / FPS + 0.001)
        assert (parity_count(datagrams) > 0) == (ratio > 0)
    assert {f.ratio for f in sender.frames} == {ratio}


def test_ratio_applies_to_the_none_scheme_records_but_sends_no_parity():
    sender = make_sender(10, fec="none")
    capture(sender)
    sender.receive_datagram(report(lost=1), 0.01)
    for _ in range(9):
        _, datagrams = capture(sender)
        assert parity_count(datagrams) == 0
    assert all(f.fec_bytes == 0 for f in sender.frames)


# --- malformed and hostile feedback ----------------------------------------------------------------------------


def run_with_noise(noise: list[bytes]) -> VpxSender:
    sender = make_sender(45, fec="block")
    for _ in range(45):
        frame_id, _ = capture(sender)
        for data in noise:
            sender.receive_datagram(data, frame_id / FPS + 0.001)
        sender.receive_datagram(ack(frame_id), frame_id / FPS + 0.002)
    return sender


def test_malformed_feedback_is_ignored():
    media = MediaPacket(0, 3, True, False, 0, 1, 0, 5, b"12345").serialize()
    good = Feedback(FeedbackKind.REPORT, 0, 10, 5).serialize()
    bad_type = b"\x01" + good[1:]
    bad_kind = good[:1] + b"\x09" + good[2:]
    noise = [b"", b"\x02", good[:-1], good + b"\x00", bad_type, bad_kind, media, b"\xff" * 13, b"\x02\x00" + b"\0" * 11]
    sender = run_with_noise(noise)
    reference = run_with_noise([])
    assert keyframes(sender) == keyframes(reference) == [0]
    assert [f.ratio for f in sender.frames] == [f.ratio for f in reference.frames] == [0] * 45
    assert [f.media_bytes for f in sender.frames] == [f.media_bytes for f in reference.frames]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_random_feedback_bytes_never_raise(blobs):
    sender = make_sender(3, fec="block", keyframe_on_request=True)
    for index, data in enumerate(blobs):
        sender.receive_datagram(data, index * 0.001)
    sender.handle_timer(1.0)
    assert len(sender.frames) == 3


def test_ack_of_a_frame_never_sent_does_not_force_keyframes():
    # An ACK naming a frame the sender has not sent yet (stale, corrupted or forged) cannot be a real ACK. It must
    # not make `newest acked` run ahead of every future frame, which would force a keyframe on every frame.
    # ACKs come back one frame later (so one frame is always in flight, unacked, at each capture).
    sender = make_sender(30, tau=3)
    for _ in range(30):
        frame_id, _ = capture(sender)
        if frame_id >= 1:
            sender.receive_datagram(ack(frame_id - 1), frame_id / FPS + 0.001)
        if frame_id == 5:
            sender.receive_datagram(ack(2**32 - 1), frame_id / FPS + 0.002)
    assert keyframes(sender) == [0], f"keyframes {keyframes(sender)}"


def test_one_frame_ack_delay_forces_nothing():
    sender = make_sender(60, tau=3)
    for _ in range(60):
        frame_id, _ = capture(sender)
        if frame_id >= 1:
            sender.receive_datagram(ack(frame_id - 1), frame_id / FPS + 0.001)
    assert keyframes(sender) == [0]


def test_encoded_stream_decodes_end_to_end_across_forced_keyframes():
    # Every frame sent (including forced keyframes) decodes in order and looks like its source frame.
    sender = make_sender(40, fec="none", keyframe_on_request=True)
    decoder = VpxDecoder("vp9")
    for _ in range(40):
        frame_id, datagrams = capture(sender)
        if frame_id % 13 == 12:
            sender.receive_datagram(keyframe_request(), frame_id / FPS + 0.001)
        encoded = b"".join(parse_media(d.payload).payload for d in datagrams)
        image = decoder.decode(encoded).astype(np.float64)
        source = sender.source.frame(frame_id).astype(np.float64)
        mse = np.mean((image - source) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 25
    assert keyframes(sender) == [0, 13, 26, 39]
