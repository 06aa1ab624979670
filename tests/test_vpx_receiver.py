"""VpxReceiver driven directly (sans-IO) with datagrams from a real VpxSender; the test is the network.

Each test decides which datagrams arrive and when, fires the receiver's report timer when due, and checks
the frame decisions (complete / decodable / display time / image), ACKs, quality reports and keyframe
requests. Some tests close the loop and hand the receiver's feedback back to the sender.
"""

from __future__ import annotations

import heapq
import itertools
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from testbed.codecs.endpoint import Datagram
from testbed.codecs.framing import (
    Feedback,
    FeedbackKind,
    MediaPacket,
    parse_feedback,
    parse_media,
)
from testbed.codecs.synthetic_video import synthetic_clip
from testbed.codecs.video_source import VideoSource
from testbed.codecs.vpx_receiver import FrameOutcome, VpxReceiver
from testbed.codecs.vpx_sender import VpxSender, VpxSenderConfig

FPS = 30
CLIP = synthetic_clip("talking-head", (64, 64), 30)
DELAY = 0.03  # one-way delay of the forward path
GAP = 1e-4  # spacing of the datagrams of one frame on the wire
FEC_KINDS = ("none", "block", "streaming")
HEADER_BYTES = {"none": 22 + 4, "block": 22 + 10, "streaming": 22 + 17 + 4 * 3}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def make_sender(frames: int, **config) -> VpxSender:
    return VpxSender(VideoSource(CLIP, FPS, frames / FPS), VpxSenderConfig(**config))


@dataclass
class Arrival:
    """One datagram delivered to the receiver."""

    time: float
    datagram: Datagram
    packet: MediaPacket


@dataclass
class Run:
    """Everything the receiver did, in the order it happened."""

    sender: VpxSender
    receiver: VpxReceiver
    arrivals: list[Arrival] = field(default_factory=list)
    dropped: list[MediaPacket] = field(default_factory=list)
    decisions: list[tuple[float, FrameOutcome]] = field(default_factory=list)  # (decision time, outcome)
    feedback: list[tuple[float, Datagram, Feedback]] = field(default_factory=list)  # (send time, datagram, parsed)
    decided_at_arrival: dict[int, list[FrameOutcome]] = field(default_factory=dict)  # arrival index -> outcomes

    @property
    def outcomes(self) -> list[FrameOutcome]:
        return [outcome for _, outcome in self.decisions]

    def outcome(self, frame_id: int) -> FrameOutcome:
        (found,) = [o for o in self.outcomes if o.frame_id == frame_id]
        return found

    def feedback_of(self, flow: str) -> list[tuple[float, Datagram, Feedback]]:
        return [entry for entry in self.feedback if entry[1].flow == flow]

    def arrivals_of(self, frame_id: int, flow: str | None = None) -> list[Arrival]:
        return [a for a in self.arrivals if a.packet.frame_id == frame_id and (flow is None or a.datagram.flow == flow)]

    def first_arrival_index(self, predicate: Callable[[Arrival], bool]) -> int:
        return next(i for i, a in enumerate(self.arrivals) if predicate(a))

    def decision_index(self, frame_id: int) -> int:
        """Index of the arrival at which the frame was decided."""
        return next(i for i, outs in self.decided_at_arrival.items() if any(o.frame_id == frame_id for o in outs))


def simulate(
    sender: VpxSender,
    receiver: VpxReceiver,
    *,
    drop: Callable[[MediaPacket], bool] = lambda packet: False,
    close_loop: bool = False,
    feedback_delay: float = DELAY,
    return_feedback: Callable[[Datagram], bool] = lambda datagram: True,
    before_capture: Callable[[int, VpxSender, float], None] | None = None,
    until: float = 1e9,
) -> Run:
    """Event-driven run: captures at the sender's timer, datagrams delivered DELAY later (GAP apart within a
    frame) unless dropped, receiver reports fired at its timer, feedback handed back to the sender if
    close_loop. `before_capture(frame_id, sender, now)` runs just before each capture."""
    run = Run(sender, receiver)
    events: list[tuple[float, int, str, object]] = []
    order = itertools.count()

    def collect_feedback(now: float) -> None:
        for datagram in receiver.datagrams_to_send(now):
            parsed = parse_feedback(datagram.payload)
            assert parsed is not None, "the receiver sent an unparsable feedback datagram"
            run.feedback.append((now, datagram, parsed))
            if close_loop and return_feedback(datagram):
                heapq.heappush(events, (now + feedback_delay, next(order), "to_sender", datagram.payload))

    while True:
        candidates = []
        if events:
            candidates.append(events[0][0])
        sender_timer, receiver_timer = sender.get_timer(), receiver.get_timer()
        if sender_timer is not None:
            candidates.append(sender_timer)
        if receiver_timer is not None:
            candidates.append(receiver_timer)
        if not candidates:
            break
        now = min(candidates)
        if now > until or (not events and sender_timer is None):
            break
        if events and events[0][0] == now:
            _, _, kind, payload = heapq.heappop(events)
            if kind == "to_sender":
                sender.receive_datagram(payload, now)
            else:
                datagram = payload
                packet = parse_media(datagram.payload)
                run.arrivals.append(Arrival(now, datagram, packet))
                receiver.receive_datagram(datagram.payload, now)
                outcomes = receiver.pop_outcomes()
                run.decided_at_arrival[len(run.arrivals) - 1] = outcomes
                run.decisions += [(now, o) for o in outcomes]
                collect_feedback(now)
        elif receiver_timer is not None and receiver_timer == now:
            receiver.handle_timer(now)
            run.decisions += [(now, o) for o in receiver.pop_outcomes()]
            collect_feedback(now)
        else:
            frame_id = len(sender.frames)
            if before_capture is not None:
                before_capture(frame_id, sender, now)
            sender.handle_timer(now)
            for index, datagram in enumerate(sender.datagrams_to_send(now)):
                packet = parse_media(datagram.payload)
                if drop(packet):
                    run.dropped.append(packet)
                    continue
                heapq.heappush(events, (now + DELAY + index * GAP, next(order), "to_receiver", datagram))
    return run


def force_keyframe_at(*frames: int) -> Callable[[int, VpxSender, float], None]:
    """Hand the sender a keyframe request just before it captures each of `frames`."""
    request = Feedback(FeedbackKind.KEYFRAME_REQUEST, 0).serialize()

    def hook(frame_id: int, sender: VpxSender, now: float) -> None:
        if frame_id in frames:
            sender.receive_datagram(request, now)

    return hook


def drop_data_fragment(frame: int, fragment: int = 1) -> Callable[[MediaPacket], bool]:
    return lambda p: p.frame_id == frame and p.fragment == fragment


def drop_frames(*frames: int) -> Callable[[MediaPacket], bool]:
    return lambda p: p.frame_id in frames


def completion_time(run: Run, frame_id: int) -> float:
    """Arrival time of the datagram that made the frame complete: its last data datagram when all arrived."""
    data = run.arrivals_of(frame_id, "media")
    return max(a.time for a in data)


# --- everything delivered -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_in_order_delivery_renders_every_frame_when_its_last_data_datagram_arrives(fec):
    frames = 60
    sender = make_sender(frames, fec=fec, ratio=None if fec == "none" else Fraction(1, 2), mtu=300)
    run = simulate(sender, VpxReceiver("vp9", fec))
    assert [o.frame_id for o in run.outcomes] == list(range(frames))
    for outcome in run.outcomes:
        assert outcome.complete and outcome.decodable and outcome.rendered
        # Parity is not needed when all data arrived: the frame shows at its last data datagram.
        assert outcome.display_s == completion_time(run, outcome.frame_id)
        assert outcome.image.shape == (64, 64, 3) and outcome.image.dtype == np.uint8
        assert psnr(outcome.image, sender.source.frame(outcome.frame_id)) > 25
    # Decision time equals display time.
    assert all(t == o.display_s for t, o in run.decisions)
    if fec != "none":
        assert any(a.datagram.flow == "fec" for a in run.arrivals)
    assert run.receiver.malformed == 0 and run.receiver.undecodable_bitstreams == 0
    assert run.feedback_of("keyframe-request") == []


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_one_ack_per_complete_frame_sent_when_it_completes(fec):
    frames = 40
    sender = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=300)
    run = simulate(sender, VpxReceiver("vp9", fec))
    acks = run.feedback_of("ack")
    assert [fb.kind for _, _, fb in acks] == [FeedbackKind.ACK] * frames
    assert [fb.frame_id for _, _, fb in acks] == list(range(frames))
    assert [d.frame_id for _, d, _ in acks] == list(range(frames))
    for time, _, fb in acks:
        assert time == completion_time(run, fb.frame_id)


def test_closed_loop_without_loss_keeps_a_single_keyframe():
    frames = 90
    sender = make_sender(frames, fec="streaming")
    run = simulate(sender, VpxReceiver("vp9", "streaming"), close_loop=True)
    assert [f.frame_id for f in sender.frames if f.keyframe] == [0]
    assert all(o.rendered for o in run.outcomes) and len(run.outcomes) == frames
    # Loss-free reports keep the adaptive ratio at 0: no parity ever.
    assert {f.ratio for f in sender.frames} == {0}
    assert not any(a.datagram.flow == "fec" for a in run.arrivals)


# --- quality reports ---------------------------------------------------------------------------------------------


def expected_reports(run: Run) -> list[tuple[int, int]]:
    """(received, lost) per report interval, from what the network did: received = datagrams delivered in the
    interval; lost = sequence numbers never delivered between the previous and this report's highest sequence."""
    report_times = [t for t, _, _ in run.feedback_of("report")]
    delivered = {a.packet.seq for a in run.arrivals}
    result, start, reported_high = [], -1.0, -1
    for report_time in report_times:
        # An arrival at the very instant of the report is handled first (simulate runs deliveries before timers).
        in_interval = [a for a in run.arrivals if start < a.time <= report_time]
        high = max([reported_high] + [a.packet.seq for a in run.arrivals if a.time <= report_time])
        lost = sum(1 for seq in range(reported_high + 1, high + 1) if seq not in delivered)
        result.append((len(in_interval), lost))
        start, reported_high = report_time, high
    return result


@pytest.mark.parametrize("fec", FEC_KINDS)
@pytest.mark.parametrize("loss", ["none", "scattered", "burst"])
def test_quality_report_every_two_seconds_with_received_and_lost_counts(fec, loss):
    frames = 200  # 6.7 s
    drops = {
        "none": set(),
        "scattered": {3, 17, 40, 41, 95, 150, 151, 152, 230, 231},
        "burst": set(range(100, 130)),
    }[loss]
    sender = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=300)
    run = simulate(sender, VpxReceiver("vp9", fec), drop=lambda p: p.seq in drops)
    first = run.arrivals[0].time
    reports = run.feedback_of("report")
    assert [t for t, _, _ in reports] == pytest.approx([first + 2, first + 4, first + 6], abs=1e-9)
    assert all(d.frame_id is None for _, d, _ in reports)
    assert all(fb.kind == FeedbackKind.REPORT for _, _, fb in reports)
    got = [(fb.received, fb.lost) for _, _, fb in reports]
    assert got == expected_reports(run)
    assert sum(lost for _, lost in got) == len(drops)  # all drops are in the first 3 s
    assert sum(received for received, _ in got) == len([a for a in run.arrivals if a.time <= reports[-1][0]])
    if loss == "none":
        assert all(lost == 0 for _, lost in got)


def test_report_names_the_next_frame_to_decide_and_no_report_before_the_first_datagram():
    receiver = VpxReceiver("vp9", "none")
    assert receiver.get_timer() is None
    receiver.handle_timer(10.0)
    assert receiver.datagrams_to_send(10.0) == []
    sender = make_sender(100, fec="none")
    run = simulate(sender, receiver)
    for time, _, fb in run.feedback_of("report"):
        decided_before = [o.frame_id for t, o in run.decisions if t <= time]
        assert fb.frame_id == max(decided_before) + 1


def test_reports_close_the_loop_adaptive_ratio_rises_after_loss():
    frames = 150
    sender = make_sender(frames, fec="block")
    run = simulate(sender, VpxReceiver("vp9", "block"), drop=lambda p: p.seq == 20, close_loop=True)
    reports = run.feedback_of("report")
    assert reports[0][2].lost == 1
    # The first report reaches the sender DELAY after it was sent; the ratio changes 3 frames after the frame
    # that was next to be captured then.
    arrival = reports[0][0] + DELAY
    next_frame = next(f.frame_id for f in sender.frames if f.capture_s >= arrival)
    ratios = [f.ratio for f in sender.frames]
    assert ratios[: next_frame + 3] == [0] * (next_frame + 3)
    assert ratios[next_frame + 3] == Fraction(1, 2)


# --- loss without FEC: deadline, broken chain, keyframes ------------------------------------------------------------


@pytest.mark.parametrize("deadline", [1, 3, 5])
def test_incomplete_frame_is_given_up_only_when_a_frame_past_the_deadline_arrives(deadline):
    k, frames = 10, 30
    sender = make_sender(frames, fec="none", mtu=100)
    run = simulate(sender, VpxReceiver("vp9", "none", deadline_frames=deadline), drop=drop_data_fragment(k))
    assert sender.frames[k].keyframe is False and len(run.dropped) == 1
    # Decided exactly at the first datagram of frame k + deadline + 1, not before.
    trigger = run.first_arrival_index(lambda a: a.packet.frame_id > k + deadline)
    assert run.arrivals[trigger].packet.frame_id == k + deadline + 1
    assert run.decision_index(k) == trigger
    decided = run.decided_at_arrival[trigger]
    assert [o.frame_id for o in decided][: deadline + 1] == list(range(k, k + deadline + 1))
    lost = run.outcome(k)
    assert (lost.complete, lost.decodable, lost.rendered, lost.image) == (False, False, False, None)
    # Before k every frame was shown; after it every P-frame is complete but cannot be decoded (no keyframe comes).
    for outcome in run.outcomes:
        if outcome.frame_id < k:
            assert outcome.rendered
        elif outcome.frame_id > k:
            assert outcome.complete and not outcome.decodable and not outcome.rendered and outcome.image is None
    assert [o.frame_id for o in run.outcomes] == list(range(frames))
    # No ACK for the incomplete frame, one for every other.
    assert sorted(fb.frame_id for _, _, fb in run.feedback_of("ack")) == [f for f in range(frames) if f != k]


def test_frames_waiting_behind_an_incomplete_frame_are_not_decided_early():
    k, deadline = 10, 3
    sender = make_sender(30, fec="none", mtu=100)
    run = simulate(sender, VpxReceiver("vp9", "none", deadline_frames=deadline), drop=drop_data_fragment(k))
    # Frames k+1..k+3 completed (ACKed) long before they were decided.
    for frame_id in range(k + 1, k + deadline + 1):
        ack_time = next(t for t, _, fb in run.feedback_of("ack") if fb.frame_id == frame_id)
        decided_time = next(t for t, o in run.decisions if o.frame_id == frame_id)
        assert ack_time == completion_time(run, frame_id) < decided_time


@pytest.mark.parametrize("keyframe_at", [15, 20])
def test_rendering_resumes_at_a_keyframe_forced_at_the_sender(keyframe_at):
    k, frames = 10, 40
    sender = make_sender(frames, fec="none", mtu=100, keyframe_on_request=True)
    run = simulate(sender, VpxReceiver("vp9", "none"), drop=drop_data_fragment(k),
                   before_capture=force_keyframe_at(keyframe_at))
    assert [f.frame_id for f in sender.frames if f.keyframe] == [0, keyframe_at]
    rendered = [o.frame_id for o in run.outcomes if o.rendered]
    assert rendered == list(range(k)) + list(range(keyframe_at, frames))
    for frame_id in range(keyframe_at, frames):
        outcome = run.outcome(frame_id)
        assert outcome.display_s == completion_time(run, frame_id)
        assert psnr(outcome.image, sender.source.frame(frame_id)) > 25


def test_rendering_resumes_at_the_keyframe_the_senders_tau_rule_forces_from_acks():
    k, frames = 10, 60
    sender = make_sender(frames, fec="none", mtu=100, tau=3)
    run = simulate(sender, VpxReceiver("vp9", "none"), drop=drop_data_fragment(k), close_loop=True)
    keyframes = [f.frame_id for f in sender.frames if f.keyframe]
    assert len(keyframes) == 2 and keyframes[0] == 0
    keyframe = keyframes[1]
    assert sender.frames[keyframe].forced_keyframe
    # The ACK of k+4 returns 2 * DELAY (+ a few GAPs) after frame k+4's capture: the next capture forces it.
    ack_k4 = next(t for t, _, fb in run.feedback_of("ack") if fb.frame_id == k + 4) + DELAY
    assert keyframe == next(f.frame_id for f in sender.frames if f.capture_s >= ack_k4)
    rendered = [o.frame_id for o in run.outcomes if o.rendered]
    assert rendered == list(range(k)) + list(range(keyframe, frames))


def test_rendering_resumes_at_the_one_second_keyframe_when_no_ack_returns():
    k, frames = 10, 50
    sender = make_sender(frames, fec="none", mtu=100)
    run = simulate(sender, VpxReceiver("vp9", "none"), drop=drop_data_fragment(k))  # feedback never returns
    assert [f.frame_id for f in sender.frames if f.keyframe] == [0, 31]
    rendered = [o.frame_id for o in run.outcomes if o.rendered]
    assert rendered == list(range(k)) + list(range(31, frames))


def test_lost_keyframe_leaves_nothing_decodable_until_the_next_keyframe():
    frames = 40
    sender = make_sender(frames, fec="none", mtu=300, keyframe_on_request=True)
    run = simulate(sender, VpxReceiver("vp9", "none"), drop=drop_data_fragment(0, 0),
                   before_capture=force_keyframe_at(20))
    assert not run.outcome(0).complete
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(20, frames))


# --- skip-ahead to a later complete keyframe --------------------------------------------------------------------


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_earlier_incomplete_frames_are_given_up_as_soon_as_a_later_keyframe_is_complete(fec):
    k, keyframe_at, frames = 10, 12, 20
    sender = make_sender(frames, fec=fec, ratio=Fraction(0), mtu=100, keyframe_on_request=True)
    run = simulate(sender, VpxReceiver("vp9", fec, deadline_frames=3), drop=drop_data_fragment(k, 0),
                   before_capture=force_keyframe_at(keyframe_at))
    assert sender.frames[keyframe_at].keyframe
    keyframe_done = max(i for i, a in enumerate(run.arrivals) if a.packet.frame_id == keyframe_at)
    # Well before the deadline (a datagram of frame k + 4) ...
    assert all(a.packet.frame_id <= keyframe_at for a in run.arrivals[: keyframe_done + 1])
    # ... frame k is given up exactly when the keyframe becomes complete.
    assert run.decision_index(k) == keyframe_done
    assert [(o.frame_id, o.complete, o.decodable) for o in run.decided_at_arrival[keyframe_done]] == [
        (k, False, False), (k + 1, True, False), (keyframe_at, True, True)]
    assert run.outcome(keyframe_at).display_s == run.arrivals[keyframe_done].time
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(k)) + list(range(keyframe_at, frames))


def test_skip_ahead_also_when_the_keyframe_arrives_before_the_gap_frames():
    # Frame 11's datagrams are delayed behind the keyframe 12: when 12 completes, 10 (lost) and 11 (missing) are
    # given up at once; 11's late datagrams are then ignored.
    frames = 16
    sender = make_sender(frames, fec="none", mtu=100, keyframe_on_request=True)
    sender_run = simulate(sender, VpxReceiver("vp9", "none"), before_capture=force_keyframe_at(12))
    receiver = VpxReceiver("vp9", "none")
    arrivals = [a for a in sender_run.arrivals if not (a.packet.frame_id == 10 and a.packet.fragment == 0)]
    late = [a for a in arrivals if a.packet.frame_id == 11]
    order = [a for a in arrivals if a.packet.frame_id not in (11,)]
    position = max(i for i, a in enumerate(order) if a.packet.frame_id == 12) + 1
    order = order[:position] + late + order[position:]
    decided = []
    for index, arrival in enumerate(order):
        receiver.receive_datagram(arrival.datagram.payload, index * 0.001)
        decided += [(index, o) for o in receiver.pop_outcomes()]
    by_frame = {o.frame_id: (i, o) for i, o in decided}
    assert by_frame[10][1].complete is False and by_frame[11][1].complete is False
    assert by_frame[10][0] == by_frame[11][0] == by_frame[12][0] == position - 1
    assert by_frame[12][1].rendered
    assert [o.frame_id for _, o in decided] == list(range(frames))
    assert sorted(fb.frame_id for fb in map(parse_feedback, (d.payload for d in receiver.datagrams_to_send(1)))
                  if fb.kind == FeedbackKind.ACK) == [f for f in range(frames) if f not in (10, 11)]


# --- keyframe requests -----------------------------------------------------------------------------------------


def greedy_requests(times: list[float], interval: float = 0.2) -> list[float]:
    chosen: list[float] = []
    for time in times:
        if not chosen or time - chosen[-1] >= interval:
            chosen.append(time)
    return chosen


@pytest.mark.parametrize("enabled", [False, True])
def test_keyframe_requests_on_a_broken_chain_rate_limited(enabled):
    k, frames = 10, 60
    sender = make_sender(frames, fec="none", mtu=100)
    run = simulate(sender, VpxReceiver("vp9", "none", keyframe_requests=enabled), drop=drop_data_fragment(k))
    requests = run.feedback_of("keyframe-request")
    if not enabled:
        assert requests == []
        return
    breaks = [t for t, o in run.decisions if not o.decodable]
    assert breaks[0] == run.arrivals[run.decision_index(k)].time
    times = [t for t, _, _ in requests]
    # A request goes out on any datagram that finds the chain still broken (so a lost keyframe is asked for
    # again), at most every 0.2 s, until the keyframe mends the chain.
    mended = run.outcome(31).display_s
    broken_arrivals = sorted({a.time for a in run.arrivals if breaks[0] <= a.time < mended})
    assert times == greedy_requests(broken_arrivals)
    assert times[0] == breaks[0]
    # Feedback never returns, so the chain stays broken until the sender's 1 s keyframe (frame 31).
    assert [f.frame_id for f in sender.frames if f.keyframe] == [0, 31]
    assert len(times) >= 3 and all(b - a >= 0.2 for a, b in zip(times, times[1:]))
    assert times[-1] < run.outcome(31).display_s
    assert all(fb.kind == FeedbackKind.KEYFRAME_REQUEST for _, _, fb in requests)
    assert all(d.frame_id is None for _, d, _ in requests)


def test_keyframe_request_closes_the_loop_and_requests_stop_after_the_keyframe():
    k, frames = 10, 60
    sender = make_sender(frames, fec="none", mtu=100, keyframe_on_request=True)
    receiver = VpxReceiver("vp9", "none", keyframe_requests=True)

    def drop(packet: MediaPacket) -> bool:
        return packet.frame_id == k and packet.fragment == 1

    # Every ACK is lost on the way back, so only the keyframe request can make the sender send a keyframe before
    # the 1 s timeout (frame 31).
    run = simulate(sender, receiver, drop=drop, close_loop=True, return_feedback=lambda d: d.flow != "ack")
    requests = run.feedback_of("keyframe-request")
    assert len(requests) >= 1
    keyframes = [f.frame_id for f in sender.frames if f.keyframe]
    assert keyframes[0] == 0 and len(keyframes) >= 2
    keyframe = keyframes[1]
    assert keyframe <= k + 6
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(k)) + list(range(keyframe, frames))
    keyframe_shown = run.outcome(keyframe).display_s
    assert all(t < keyframe_shown for t, _, _ in requests)


# --- streaming FEC ------------------------------------------------------------------------------------------


def two_stripe_p_frame(sender_frames, start: int = 5) -> int:
    """A P-frame of 2 stripes (257..512 bytes): a "v" and a "u" stripe, so it needs frame k+3's parity."""
    return next(f.frame_id for f in sender_frames if f.frame_id >= start and 256 < f.media_bytes <= 512
                and not f.keyframe)


@pytest.mark.parametrize("start", [5, 12])
def test_streaming_fec_recovers_a_fully_lost_frame_at_frame_k_plus_3_parity(start):
    frames = 40
    dry = make_sender(frames, fec="streaming", ratio=Fraction(1, 2))
    dry.handle_timer(frames)
    k = two_stripe_p_frame(dry.frames, start)
    sender = make_sender(frames, fec="streaming", ratio=Fraction(1, 2))
    run = simulate(sender, VpxReceiver("vp9", "streaming", tau=3, deadline_frames=3), drop=drop_frames(k))
    assert [f.media_bytes for f in sender.frames] == [f.media_bytes for f in dry.frames]  # same stream
    parity_k3 = [i for i, a in enumerate(run.arrivals) if a.packet.frame_id == k + 3 and a.datagram.flow == "fec"]
    assert parity_k3
    # Nothing about frame k is decided before frame k+3's parity arrives.
    decided_k = [i for i, outs in run.decided_at_arrival.items() if any(o.frame_id == k for o in outs)]
    assert decided_k and decided_k[0] in parity_k3, (
        f"frame {k} decided at arrival {decided_k[:1]} as {run.outcome(k)}, parity of frame k+3 arrived at {parity_k3}")
    outcome = run.outcome(k)
    assert outcome.complete and outcome.decodable and outcome.rendered
    assert outcome.display_s == run.arrivals[decided_k[0]].time
    assert psnr(outcome.image, sender.source.frame(k)) > 25
    # k+1..k+3 were complete earlier but wait for k (strictly in order), then show at once right after it.
    together = run.decided_at_arrival[decided_k[0]]
    assert [o.frame_id for o in together] == [k, k + 1, k + 2, k + 3]
    assert all(o.rendered and o.display_s == outcome.display_s for o in together)
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(frames))
    # The recovered frame is ACKed too (it is complete).
    assert k in {fb.frame_id for _, _, fb in run.feedback_of("ack")}


def test_streaming_recovery_in_closed_loop_needs_no_keyframe():
    # The recovered frame k is ACKed at frame k+3's parity, so the sender never sees ACKs more than tau = 3 past
    # an unacked frame: no forced keyframe, every frame shown.
    frames = 60
    dry = make_sender(frames, fec="streaming", ratio=Fraction(1, 2))
    dry.handle_timer(frames)
    k = two_stripe_p_frame(dry.frames)
    sender = make_sender(frames, fec="streaming", ratio=Fraction(1, 2), tau=3)
    run = simulate(sender, VpxReceiver("vp9", "streaming", tau=3), drop=drop_frames(k), close_loop=True)
    assert [f.frame_id for f in sender.frames if f.keyframe] == [0]
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(frames))


def test_streaming_fec_does_not_recover_two_consecutive_lost_frames():
    frames = 30
    dry = make_sender(frames, fec="streaming", ratio=Fraction(1, 2))
    dry.handle_timer(frames)
    k = two_stripe_p_frame(dry.frames)
    sender = make_sender(frames, fec="streaming", ratio=Fraction(1, 2))
    run = simulate(sender, VpxReceiver("vp9", "streaming"), drop=drop_frames(k, k + 1))
    assert not run.outcome(k).complete and not run.outcome(k + 1).complete
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(k))
    assert [o.frame_id for o in run.outcomes] == list(range(frames))


@pytest.mark.parametrize("fec", ["block", "streaming"])
def test_lost_data_datagram_is_recovered_by_its_own_frames_parity(fec):
    frames = 30
    sender = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=300)
    dry = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=300)
    dry.handle_timer(frames)
    datagrams = dry.datagrams_to_send(frames)
    k = next(f for f in range(5, frames)
             if sum(1 for d in datagrams if d.frame_id == f and d.flow == "media") >= 2)
    run = simulate(sender, VpxReceiver("vp9", fec), drop=drop_data_fragment(k, 0))
    outcome = run.outcome(k)
    assert outcome.complete and outcome.rendered
    first_parity = min(a.time for a in run.arrivals_of(k, "fec"))
    assert outcome.display_s == first_parity
    assert [o.frame_id for o in run.outcomes if o.rendered] == list(range(frames))


# --- hostile and stale datagrams --------------------------------------------------------------------------------


def genuine_datagrams(fec: str, frames: int = 12) -> list[Datagram]:
    sender = make_sender(frames, fec=fec, ratio=Fraction(1, 2), mtu=300)
    sender.handle_timer(frames)
    return sender.datagrams_to_send(frames)


GENUINE = {fec: genuine_datagrams(fec) for fec in FEC_KINDS}


def play(receiver: VpxReceiver, payloads: list[bytes]) -> list[FrameOutcome]:
    outcomes = []
    for index, payload in enumerate(payloads):
        receiver.receive_datagram(payload, index * 0.001)
        outcomes += receiver.pop_outcomes()
        receiver.datagrams_to_send(index * 0.001)
    return outcomes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), min_size=1, max_size=10))
def test_random_non_media_bytes_are_counted_as_malformed(blobs):
    # A leading byte of 1 with enough length could parse as a media datagram naming any frame; see the forged
    # frame-id test for that case.
    assume(all(not blob.startswith(b"\x01") or len(blob) < 22 for blob in blobs))
    receiver = VpxReceiver("vp9", "streaming")
    outcomes = play(receiver, blobs)
    assert receiver.malformed == len(blobs)
    assert outcomes == [] and receiver.get_timer() is None
    assert receiver.datagrams_to_send(1.0) == []


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_feedback_datagrams_sent_to_the_receiver_are_malformed(fec):
    receiver = VpxReceiver("vp9", fec)
    feedback = [Feedback(kind, 3, 4, 5).serialize() for kind in FeedbackKind]
    assert play(receiver, feedback) == []
    assert receiver.malformed == len(feedback)


@pytest.mark.parametrize("fec", FEC_KINDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_datagrams_truncated_into_their_headers_are_malformed(fec, data):
    genuine = GENUINE[fec]
    index = data.draw(st.integers(0, len(genuine) - 1))
    cut = data.draw(st.integers(0, HEADER_BYTES[fec] - 1))
    receiver = VpxReceiver("vp9", fec)
    assert play(receiver, [genuine[index].payload[:cut]]) == []
    assert receiver.malformed == 1


@pytest.mark.parametrize("fec", ["block", "streaming"])
def test_datagrams_truncated_in_their_payload_are_malformed(fec):
    # With FEC the header fixes the payload length (block: frame size / data packets; streaming: stripes per
    # packet), so a datagram cut short inside its payload is detectably malformed, like one cut in its header.
    genuine = GENUINE[fec]
    receiver = VpxReceiver("vp9", fec)
    play(receiver, [genuine[0].payload[:-1], genuine[1].payload[: HEADER_BYTES[fec] + 1]])
    assert receiver.malformed == 2


@pytest.mark.parametrize("fec", FEC_KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_truncated_and_garbage_datagrams_mixed_into_a_stream_never_raise(fec, data):
    genuine = [d.payload for d in GENUINE[fec]]
    stream: list[bytes] = []
    for payload in genuine:
        action = data.draw(st.sampled_from(["keep", "keep", "keep", "truncate", "garbage", "drop"]))
        if action == "keep":
            stream.append(payload)
        elif action == "truncate":
            stream.append(payload[: data.draw(st.integers(0, len(payload) - 1))])
        elif action == "garbage":
            stream.append(payload)
            stream.append(data.draw(st.binary(max_size=60).filter(lambda b: not b.startswith(b"\x01"))))
    receiver = VpxReceiver("vp9", fec)
    outcomes = play(receiver, stream)
    ids = [o.frame_id for o in outcomes]
    assert ids == list(range(len(ids)))  # in order, each once
    for outcome in outcomes:
        assert outcome.rendered == (outcome.image is not None)
        if outcome.rendered:
            assert outcome.complete and outcome.decodable and outcome.image.shape == (64, 64, 3)


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_garbage_between_genuine_datagrams_changes_nothing(fec):
    genuine = [d.payload for d in GENUINE[fec]]
    noise = [b"", b"\x00" * 30, b"\x02" * 13, b"\xff" * 100, Feedback(FeedbackKind.ACK, 5).serialize()]
    clean = play(VpxReceiver("vp9", fec), genuine)
    receiver = VpxReceiver("vp9", fec)
    mixed = play(receiver, [item for payload in genuine for item in [payload, *noise]])
    assert [(o.frame_id, o.complete, o.decodable) for o in mixed] == [(o.frame_id, True, True) for o in clean]
    assert len(clean) == 12
    assert receiver.malformed == len(noise) * len(genuine)


@pytest.mark.parametrize("fec", FEC_KINDS)
def test_datagrams_of_decided_frames_are_ignored(fec):
    genuine = [d.payload for d in GENUINE[fec]]
    receiver = VpxReceiver("vp9", fec)
    play(receiver, genuine)
    # Replay everything: no decision, no ACK, not malformed (but counted as received in the next report).
    for index, payload in enumerate(genuine):
        receiver.receive_datagram(payload, 1.0 + index * 0.001)
    assert receiver.pop_outcomes() == []
    assert receiver.datagrams_to_send(2.0) == []
    assert receiver.malformed == 0
    receiver.handle_timer(receiver.get_timer())
    (report,) = [parse_feedback(d.payload) for d in receiver.datagrams_to_send(5.0)]
    assert report.kind == FeedbackKind.REPORT and report.received == 2 * len(genuine) and report.lost == 0


def test_stale_datagram_of_a_given_up_frame_does_not_revive_it():
    genuine = GENUINE["none"]
    k = 6
    kept = [d for d in genuine if not (d.frame_id == k and parse_media(d.payload).fragment == 0)]
    late = [d for d in genuine if d.frame_id == k and parse_media(d.payload).fragment == 0]
    receiver = VpxReceiver("vp9", "none")
    outcomes = play(receiver, [d.payload for d in kept])
    assert not next(o for o in outcomes if o.frame_id == k).complete
    receiver.receive_datagram(late[0].payload, 5.0)
    assert receiver.pop_outcomes() == []
    assert receiver.datagrams_to_send(5.0) == []  # no ACK for a frame already given up


@pytest.mark.parametrize("offset", [100_000, 2**32 - 1 - 5])
def test_one_forged_datagram_far_in_the_future_does_not_wreck_the_stream(offset):
    # A well-formed media datagram with an absurd frame id (corruption or forgery) must neither stall the receiver
    # (deciding every frame up to that id one by one) nor make it drop the genuine stream that follows.
    genuine = GENUINE["none"]
    forged = MediaPacket(10_000, 5 + offset, False, False, 0, 2, 0, 100, b"\x00" * 50).serialize()
    receiver = VpxReceiver("vp9", "none")

    def timeout(signum, frame):
        raise TimeoutError("the receiver is still deciding frames up to the forged frame id after 2 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, 2.0)
    try:
        first = play(receiver, [d.payload for d in genuine if d.frame_id < 5])
        receiver.receive_datagram(forged, 1.0)
        during = receiver.pop_outcomes()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    del during
    rest = play(receiver, [d.payload for d in genuine if d.frame_id >= 5])
    rendered = [o.frame_id for o in first + rest if o.rendered]
    assert rendered == list(range(12)), f"rendered {rendered[:20]}"


def test_no_keyframe_request_when_a_complete_keyframe_already_repairs_the_chain():
    # Skip-ahead: frame 10 is incomplete, keyframe 12 completes before the deadline. The receiver gives up 10 and 11
    # and shows 12 in the same step; asking the sender for another keyframe then only costs a needless keyframe.
    k, keyframe_at, frames = 10, 12, 20
    sender = make_sender(frames, fec="none", mtu=100, keyframe_on_request=True)
    run = simulate(sender, VpxReceiver("vp9", "none", keyframe_requests=True), drop=drop_data_fragment(k, 0),
                   before_capture=force_keyframe_at(keyframe_at))
    assert run.outcome(keyframe_at).rendered and not run.outcome(k).complete
    assert run.decision_index(k) == run.decision_index(keyframe_at)
    assert run.feedback_of("keyframe-request") == [], "keyframe requested although keyframe 12 was already decoded"
