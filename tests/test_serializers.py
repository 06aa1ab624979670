"""Serializers (testbed.emulator.serializer): serve(size, now) -> (service start, finish), in seconds."""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from testbed.emulator.link import DROP_QUEUE, DeliveryTraceParams, Link, LinkParams, RateScheduleParams
from testbed.emulator.serializer import (
    MAHIMAHI_OPPORTUNITY_BYTES,
    ConstantRate,
    DeliveryOpportunities,
    RateSchedule,
    UnlimitedRate,
)

OPP = 1504
assert MAHIMAHI_OPPORTUNITY_BYTES == OPP


# --------------------------------------------------------------------------------------------------
# UnlimitedRate / ConstantRate
# --------------------------------------------------------------------------------------------------

def test_unlimited_rate_is_instant():
    s = UnlimitedRate()
    assert s.serve(10**6, 3.5) == (3.5, 3.5)
    assert s.serve(1, 0.0) == (0.0, 0.0)


def test_constant_rate_exact_finish_times():
    s = ConstantRate(320)  # 40 000 bytes/s: 1000 B = 25 ms
    assert s.serve(1000, 0.0) == pytest.approx((0.0, 0.025), abs=1e-12)
    assert s.serve(500, 0.010) == pytest.approx((0.025, 0.0375), abs=1e-12)  # waits for the first
    assert s.serve(1000, 0.0375) == pytest.approx((0.0375, 0.0625), abs=1e-12)  # exactly when free
    assert s.serve(40, 1.0) == pytest.approx((1.0, 1.001), abs=1e-12)  # idle link: starts on arrival
    s = ConstantRate(8)  # 1000 bytes/s
    assert s.serve(1, 0.0) == pytest.approx((0.0, 0.001), abs=1e-15)
    assert s.serve(0, 0.0005) == pytest.approx((0.001, 0.001), abs=1e-15)


@given(packets=st.lists(st.tuples(st.integers(0, 50_000), st.integers(0, 3000)), min_size=1, max_size=50),
       kbps=st.sampled_from([64, 100, 320, 1000, 2500, 12_345]))
@settings(max_examples=200, deadline=None)
def test_constant_rate_is_lindley_recursion(packets, kbps):
    """finish_n = max(arrival_n, finish_{n-1}) + size_n / rate, computed exactly with fractions."""
    s = ConstantRate(kbps)
    free = Fraction(0)
    t = Fraction(0)
    for gap_us, size in packets:
        t += Fraction(gap_us, 10**6)
        start = max(t, free)
        free = start + Fraction(size * 8, kbps * 1000)
        got = s.serve(size, float(t))
        assert got[0] == pytest.approx(float(start), abs=1e-9)
        assert got[1] == pytest.approx(float(free), abs=1e-9)


# --------------------------------------------------------------------------------------------------
# RateSchedule
# --------------------------------------------------------------------------------------------------

def test_rate_schedule_hand_computed_across_boundaries():
    # 0-1 s: 80 kbps = 10 000 B/s; 1-2 s: paused; 2-3 s: 160 kbps = 20 000 B/s; 3 s on: 40 kbps = 5000 B/s.
    s = RateSchedule(np.array([0.0, 1.0, 2.0, 3.0]), np.array([80.0, 0.0, 160.0, 40.0]))
    # 5000 B from 0: 0.5 s.
    assert s.serve(5000, 0.0) == pytest.approx((0.0, 0.5))
    # 10 000 B from 0.6: 4000 B by 1.0, nothing in 1-2, the other 6000 B at 20 000 B/s: 2.3.
    assert s.serve(10_000, 0.6) == pytest.approx((0.6, 2.3))
    # 20 000 B queued at 2.0 starts at 2.3: 14 000 B by 3.0, then 6000 B at 5000 B/s: 4.2.
    assert s.serve(20_000, 2.0) == pytest.approx((2.3, 4.2))
    # The last rate holds forever.
    assert s.serve(5000, 100.0) == pytest.approx((100.0, 101.0))


def test_rate_schedule_exact_fit_at_a_pause_boundary_does_not_wait_out_the_pause():
    s = RateSchedule(np.array([0.0, 1.0, 2.0]), np.array([80.0, 0.0, 80.0]))
    assert s.serve(10_000, 0.0) == pytest.approx((0.0, 1.0))
    assert s.serve(1, 1.0)[1] == pytest.approx(2.0001)


def test_rate_schedule_starting_inside_a_pause_or_with_a_zero_first_rate():
    s = RateSchedule(np.array([0.0, 1.0, 2.0]), np.array([80.0, 0.0, 80.0]))
    assert s.serve(1000, 1.5)[1] == pytest.approx(2.1)
    s = RateSchedule(np.array([0.0, 2.0]), np.array([0.0, 80.0]))
    assert s.serve(1000, 0.0)[1] == pytest.approx(2.1)
    assert s.serve(1000, 0.5)[1] == pytest.approx(2.2)


def test_rate_schedule_zero_forever_never_finishes():
    s = RateSchedule(np.array([0.0, 1.0]), np.array([80.0, 0.0]))
    assert s.serve(5000, 0.0) == pytest.approx((0.0, 0.5))
    start, finish = s.serve(10_000, 0.9)  # 1000 B go out by 1.0, the rest never
    assert start == pytest.approx(0.9) and finish == math.inf
    assert s.serve(1, 5.0)[1] == math.inf  # everything behind it is stuck too
    s = RateSchedule(np.array([0.0]), np.array([0.0]))
    assert s.serve(1, 0.0)[1] == math.inf


def _reference_schedule_finish(times, kbps, start: Fraction, size: int) -> Fraction | None:
    """Invert the cumulative-bytes function B(t) = integral of the rate, exactly."""
    times = [Fraction(t) for t in times]
    rates = [Fraction(k) * 1000 / 8 for k in kbps]
    # Bytes still to send; walk segments from the one containing `start`.
    remaining = Fraction(size)
    t = start
    for i in range(len(times)):
        seg_end = times[i + 1] if i + 1 < len(times) else None
        if seg_end is not None and seg_end <= t:
            continue
        if rates[i] > 0:
            need = remaining / rates[i]
            if seg_end is None or t + need <= seg_end:
                return t + need
            remaining -= (seg_end - t) * rates[i]
        if seg_end is None:
            return None
        t = seg_end
    return None


@given(
    steps=st.lists(st.tuples(st.integers(1, 40), st.sampled_from([0, 0, 8, 40, 80, 100, 333, 1000])),
                   min_size=1, max_size=8),
    packets=st.lists(st.tuples(st.integers(0, 800), st.integers(1, 4000)), min_size=1, max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_rate_schedule_matches_exact_integration(steps, packets):
    """Schedule times on a 1/8 s grid, arrivals on a 1/64 s grid; the reference integrates exactly."""
    times = [Fraction(0)]
    for dt, _ in steps[1:]:
        times.append(times[-1] + Fraction(dt, 8))
    kbps = [k for _, k in steps]
    s = RateSchedule(np.array([float(t) for t in times]), np.array([float(k) for k in kbps]))
    now = Fraction(0)
    free = Fraction(0)
    for gap, size in packets:
        now += Fraction(gap, 64)
        start = max(now, free)
        finish = _reference_schedule_finish(times, kbps, start, size)
        got_start, got_finish = s.serve(size, float(now))
        assert got_start == pytest.approx(float(start), abs=1e-9)
        if finish is None:
            assert got_finish == math.inf
            return
        assert got_finish == pytest.approx(float(finish), abs=1e-9), (times, kbps, packets)
        free = finish


def test_rate_schedule_through_link():
    link = Link(LinkParams(rate=RateScheduleParams(np.array([0.0, 1.0]), np.array([80.0, 0.0])),
                           delay_s=0.05), 0, "rs")
    assert link.transmit(5000, 0.0).arrival == pytest.approx(0.55)
    assert link.transmit(10_000, 0.9) == (None, None, None)  # never finishes, not a drop


# --------------------------------------------------------------------------------------------------
# DeliveryOpportunities: hand-written Mahimahi trace
# --------------------------------------------------------------------------------------------------

def test_opportunity_times_loop_with_period_last_timestamp():
    d = DeliveryOpportunities(np.array([0, 5, 10]))
    assert [d.opportunity_time(i) * 1000 for i in range(10)] == pytest.approx(
        [0, 5, 10, 10, 15, 20, 20, 25, 30, 30])


# Trace [0, 3, 3, 8, 10], period 10 ms, so the opportunities (ms) are
#   cycle 0: 0, 3a, 3b, 8, 10a   cycle 1: 10b, 13a, 13b, 18, 20a   cycle 2: 20b, 23a, 23b, 28, 30a ...
# Each carries 1504 bytes.  Scripted arrivals (ms, bytes), worked by hand:
#   A  0.5   500: opportunity 0 is gone (nothing was queued: wasted); 3a carries A   -> 3   (3a has 1004 left)
#   B  1.0   600: B arrives before 3a, shares it                           -> 3   (3a has 404 left)
#   C  2.0  2000: 404 B in 3a, 1504 B in 3b, 92 B in 8                     -> 8   (8 has 1412 left)
#   D  8.0   100: arrives AT 8: Mahimahi burns opportunity 8 before enqueueing D, so C's leftover is
#                 wasted; next is 10a                                      -> 10  (10a has 1404 left)
#   E  9.0  1405: 1404 B in 10a, the last byte in the loop's first opportunity 10b (same ms)
#                                                                          -> 10  (10b has 1503 left)
#   F  9.5  1503: exactly fills 10b's leftover                             -> 10  (0 left)
#   G  9.75    1: 10b is full; next is 13a                                 -> 13  (13a has 1503 left)
#   H 15.0  3000: 13b passed with nothing queued (wasted) and so did 13a's leftover;
#                 1504 B in 18, 1496 B in 20a                              -> 20  (20a has 8 left)
#   I 19.0     8: exactly fills 20a's leftover                             -> 20
#   J 20.0    10: opportunities 20a and 20b are burned at 20 (20b wasted); 23a   -> 23  (1494 left)
#   K 22.0  3000: 1494 B in 23a, 1504 B in 23b, 2 B in 28                  -> 28  (1502 left)
#   L 40.5  1504: 28's leftover, 30a, then cycle 3 (30b, 33a, 33b, 38, 40a) and 40b (cycle 4) all
#                 pass with nothing queued; the next opportunity is 43a    -> 43
HAND_TRACE = [0, 3, 3, 8, 10]
HAND_ARRIVALS = [  # name, arrival ms, bytes, expected service start ms, expected finish ms
    ("A", 0.5, 500, 3, 3),
    ("B", 1.0, 600, 3, 3),
    ("C", 2.0, 2000, 3, 8),
    ("D", 8.0, 100, 10, 10),
    ("E", 9.0, 1405, 10, 10),
    ("F", 9.5, 1503, 10, 10),
    ("G", 9.75, 1, 13, 13),
    ("H", 15.0, 3000, 18, 20),
    ("I", 19.0, 8, 20, 20),
    ("J", 20.0, 10, 23, 23),
    ("K", 22.0, 3000, 23, 28),
    ("L", 40.5, 1504, 43, 43),
]


def test_hand_written_trace_departures():
    d = DeliveryOpportunities(np.array(HAND_TRACE))
    departures: dict[int, list[str]] = {}
    for name, at_ms, size, start_ms, finish_ms in HAND_ARRIVALS:
        start, finish = d.serve(size, at_ms / 1000)
        assert start * 1000 == pytest.approx(start_ms, abs=1e-9), name
        assert finish * 1000 == pytest.approx(finish_ms, abs=1e-9), name
        departures.setdefault(round(finish * 1000), []).append(name)
    # Which packets (and so bytes) leave at each millisecond.
    assert departures == {3: ["A", "B"], 8: ["C"], 10: ["D", "E", "F"], 13: ["G"], 20: ["H", "I"],
                          23: ["J"], 28: ["K"], 43: ["L"]}
    sizes = {name: size for name, _, size, _, _ in HAND_ARRIVALS}
    assert {ms: sum(sizes[n] for n in names) for ms, names in departures.items()} == {
        3: 1100, 8: 2000, 10: 3008, 13: 1, 20: 3008, 23: 10, 28: 3000, 43: 1504}


def test_hand_written_trace_matches_mahimahi_reference():
    arrivals_us = [round(at_ms * 1000) for _, at_ms, _, _, _ in HAND_ARRIVALS]
    sizes = [size for _, _, size, _, _ in HAND_ARRIVALS]
    starts, finishes = mahimahi_reference(HAND_TRACE, True, arrivals_us, sizes)
    assert [s / 1000 for s in starts] == [row[3] for row in HAND_ARRIVALS]
    assert [f / 1000 for f in finishes] == [row[4] for row in HAND_ARRIVALS]


def test_hand_written_trace_without_loop():
    # Same script, loop=False: the trace ends with opportunity 10a.  D still leaves at 10; E's last
    # byte needed 10b, which no longer exists, so E and everything after it never leave.
    d = DeliveryOpportunities(np.array(HAND_TRACE), loop=False)
    finishes = [d.serve(size, at_ms / 1000)[1] for _, at_ms, size, _, _ in HAND_ARRIVALS]
    assert [f * 1000 for f in finishes[:4]] == pytest.approx([3, 3, 8, 10])
    assert all(f == math.inf for f in finishes[4:])


def test_hand_written_trace_through_link_with_queue():
    # Same trace through Link with a 2-packet queue and 7 ms propagation delay.  A is dequeued at 3,
    # so at t=1 only A waits and B is admitted; C arrives at 2 with A and B both still waiting: drop.
    # Without C, opportunities 3b and 8 pass unused and D (arriving at 8) leaves at 10: arrives at 17.
    link = Link(LinkParams(rate=DeliveryTraceParams(np.array(HAND_TRACE)), queue_packets=2, delay_s=0.007),
                0, "mm")
    fates = [link.transmit(size, at_ms / 1000) for _, at_ms, size, _, _ in HAND_ARRIVALS[:4]]
    assert fates[2].drop == DROP_QUEUE
    assert [f.arrival * 1000 for f in (fates[0], fates[1], fates[3])] == pytest.approx([10, 10, 17])


def test_strictly_after_arrival_and_leftover_use():
    d = DeliveryOpportunities(np.array([5, 10]))
    assert d.serve(100, 0.005) == pytest.approx((0.010, 0.010))  # arrives at 5: must wait for 10
    assert d.serve(100, 0.0099) == pytest.approx((0.010, 0.010))  # leftover of 10 (before 10)
    assert d.serve(100, 0.010) == pytest.approx((0.015, 0.015))  # at 10: leftover gone; 15 (loop)


def test_split_packet_larger_than_opportunity():
    d = DeliveryOpportunities(np.array([1, 2, 3, 4]))
    assert d.serve(3 * OPP + 1, 0.0) == pytest.approx((0.001, 0.004))
    assert d.serve(OPP - 1, 0.0) == pytest.approx((0.004, 0.004))  # the rest of opportunity 4
    assert d.serve(1, 0.0) == pytest.approx((0.005, 0.005))  # loop: 1 + 4


def test_no_loop_after_end_is_never_delivered():
    d = DeliveryOpportunities(np.array([1, 2]), loop=False)
    assert d.serve(100, 0.0) == pytest.approx((0.001, 0.001))
    assert d.serve(100, 0.002)[1] == math.inf  # opportunity 2 is at its arrival time: burned
    assert d.serve(100, 0.0)[1] == math.inf
    d = DeliveryOpportunities(np.array([1, 2]), loop=False)
    assert d.serve(100, 5.0) == (math.inf, math.inf)


def test_duplicate_timestamps_are_separate_opportunities():
    d = DeliveryOpportunities(np.array([4, 4, 4, 9]))
    assert d.serve(3 * OPP, 0.0) == pytest.approx((0.004, 0.004))
    assert d.serve(1, 0.0) == pytest.approx((0.009, 0.009))


def test_arrival_exactly_at_an_opportunity_after_one_second():
    """now = 1001/1000 s is exactly opportunity 1001 ms, which Mahimahi burns before enqueueing.
    (1001/1000)*1000 == 1000.9999999999999 in binary floating point, which must not matter."""
    d = DeliveryOpportunities(np.array([1000, 1001, 2000]))
    assert d.serve(100, 1001 / 1000) == pytest.approx((2.0, 2.0))
    # Same on a later loop: opportunity 1 + 1000 = 1001 ms of trace [1, 1000].
    d = DeliveryOpportunities(np.array([1, 1000]))
    assert d.serve(100, 1.001) == pytest.approx((2.0, 2.0))


@pytest.mark.parametrize("k_ms", [1001, 1003, 2002, 4007, 8001, 16_385, 59_999])
def test_arrival_exactly_on_any_opportunity_is_too_late_for_it(k_ms):
    d = DeliveryOpportunities(np.arange(1, 60_001))  # one opportunity every ms for a minute
    start, finish = d.serve(100, k_ms / 1000)
    assert finish * 1000 == pytest.approx(k_ms + 1)


# --------------------------------------------------------------------------------------------------
# DeliveryOpportunities against a transliteration of Mahimahi's LinkQueue::rationalize
# --------------------------------------------------------------------------------------------------

def mahimahi_reference(trace_ms, loop, arrivals_us, sizes, limit_bytes=None, limit_packets=None):
    """mm-link LinkQueue with a DropTail packet queue, in integer microseconds.

    Before each arrival at `now`, every opportunity with time <= now is burned: it hands up to 1504
    bytes to the packet in transit, dequeueing the next packet whenever one finishes.  A packet's
    service start is when it is dequeued, its finish the opportunity that carries its last byte.
    Returns (starts, finishes) in us, None for never; a packet dropped by the queue gets "drop".
    """
    n = len(sizes)
    starts: list = [None] * n
    finishes: list = [None] * n
    state = {"next": 0, "base": 0, "done": False}
    queue: deque = deque()  # [index, bytes]
    transit: list | None = None
    queued_bytes = 0

    def next_time_us():
        return (trace_ms[state["next"]] + state["base"]) * 1000

    def use_opportunity():
        state["next"] = (state["next"] + 1) % len(trace_ms)
        if state["next"] == 0:
            if loop:
                state["base"] += trace_ms[-1]
            else:
                state["done"] = True

    def burn_one():
        nonlocal transit, queued_bytes
        t = next_time_us()
        left = OPP
        use_opportunity()
        while left > 0:
            if transit is None:
                if not queue:
                    break
                transit = queue.popleft()
                queued_bytes -= sizes[transit[0]]
                starts[transit[0]] = t
            take = min(left, transit[1])
            transit[1] -= take
            left -= take
            if transit[1] == 0:
                finishes[transit[0]] = t
                transit = None

    for i, (now, size) in enumerate(zip(arrivals_us, sizes)):
        while not state["done"] and next_time_us() <= now:
            burn_one()
        if ((limit_bytes is not None and queued_bytes + size > limit_bytes)
                or (limit_packets is not None and len(queue) + 1 > limit_packets)):
            starts[i] = finishes[i] = "drop"
            continue
        queue.append([i, size])
        queued_bytes += size
    while not state["done"] and (queue or transit is not None):
        burn_one()
    return starts, finishes


@st.composite
def mahimahi_cases(draw, max_time_us: int, exact_ms_allowed: bool, min_exact_ms: int = 0):
    trace = sorted(draw(st.lists(st.integers(0, 40), min_size=1, max_size=12)))
    assume(trace[-1] > 0)  # mm-link rejects a trace that lasts 0 ms
    loop = draw(st.booleans())
    n = draw(st.integers(1, 40))
    times = []
    for _ in range(n):
        if exact_ms_allowed and draw(st.booleans()):
            t = draw(st.integers(min_exact_ms, max_time_us // 1000)) * 1000
        else:
            t = draw(st.integers(0, max_time_us))
            if not exact_ms_allowed and t % 1000 == 0:
                t += 1
        times.append(t)
    times.sort()
    size_strategy = st.one_of(st.integers(1, 5000), st.sampled_from([1, 500, 1000, 1503, 1504, 1505, 3008]))
    sizes = [draw(size_strategy) for _ in range(n)]
    return trace, loop, times, sizes


def _check_serializer_against_reference(trace, loop, times, sizes):
    d = DeliveryOpportunities(np.array(trace, dtype=np.int64), loop=loop)
    ref_starts, ref_finishes = mahimahi_reference(trace, loop, times, sizes)
    for i, (t, size) in enumerate(zip(times, sizes)):
        start, finish = d.serve(size, t / 1e6)
        ctx = (i, trace, loop, times, sizes, ref_starts, ref_finishes)
        if ref_finishes[i] is None:
            assert finish == math.inf, ctx
        else:
            assert finish == pytest.approx(ref_finishes[i] / 1e6, abs=1e-9), ctx
        if ref_starts[i] is None:
            assert start == math.inf, ctx
        else:
            assert start == pytest.approx(ref_starts[i] / 1e6, abs=1e-9), ctx


@given(mahimahi_cases(max_time_us=999_000, exact_ms_allowed=True))
@settings(max_examples=500, deadline=None)
def test_delivery_opportunities_match_mahimahi_within_first_second(case):
    """Arrivals often exactly on an opportunity's millisecond (below 1 s, where k/1000*1000 == k)."""
    _check_serializer_against_reference(*case)


@given(mahimahi_cases(max_time_us=20_000_000, exact_ms_allowed=False))
@settings(max_examples=300, deadline=None)
def test_delivery_opportunities_match_mahimahi_over_many_loops(case):
    """Long runs (many loops of short traces), arrivals never exactly on a millisecond."""
    _check_serializer_against_reference(*case)


@given(mahimahi_cases(max_time_us=20_000_000, exact_ms_allowed=True, min_exact_ms=1000))
@settings(max_examples=300, deadline=None)
def test_delivery_opportunities_match_mahimahi_exact_ms_any_time(case):
    """Arrivals exactly on a millisecond at any time (the representation of k/1000 must not matter)."""
    _check_serializer_against_reference(*case)


@given(case=mahimahi_cases(max_time_us=999_000, exact_ms_allowed=True),
       limit_bytes=st.one_of(st.none(), st.integers(1, 6000)),
       limit_packets=st.one_of(st.none(), st.integers(1, 5)),
       delay_ms=st.integers(0, 100))
@settings(max_examples=300, deadline=None)
def test_link_with_delivery_trace_and_droptail_matches_mahimahi(case, limit_bytes, limit_packets, delay_ms):
    trace, loop, times, sizes = case
    link = Link(LinkParams(rate=DeliveryTraceParams(np.array(trace), loop=loop), queue_bytes=limit_bytes,
                           queue_packets=limit_packets, delay_s=delay_ms / 1000), 0, "mm")
    _, ref_finishes = mahimahi_reference(trace, loop, times, sizes, limit_bytes, limit_packets)
    for i, (t, size) in enumerate(zip(times, sizes)):
        fate = link.transmit(size, t / 1e6)
        ctx = (i, trace, loop, times, sizes, ref_finishes)
        if ref_finishes[i] == "drop":
            assert fate == (None, DROP_QUEUE, None), ctx
        elif ref_finishes[i] is None:
            assert fate == (None, None, None), ctx
        else:
            assert fate.drop is None, ctx
            assert fate.arrival == pytest.approx(ref_finishes[i] / 1e6 + delay_ms / 1000, abs=1e-9), ctx
