"""Drop-tail FIFO (testbed.emulator.queue.DropTailQueue) in front of a ConstantRate serializer, via Link.

The queue limit applies to packets WAITING for the link; the packet being serialized does not count
(Mahimahi's droptail: the packet in transit has left the packet queue).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.emulator.link import DROP_QUEUE, ConstantRateParams, Link, LinkParams
from testbed.emulator.queue import DropTailQueue


def cbr_run(offered_kbps: float, link_kbps: float, queue_bytes: int, seconds: float, delay_s: float,
            size: int = 1000):
    link = Link(LinkParams(delay_s=delay_s, rate=ConstantRateParams(link_kbps), queue_bytes=queue_bytes),
                0, "cbr")
    interval = size * 8 / (offered_kbps * 1000)
    n = round(seconds / interval)
    return [(i * interval, link.transmit(size, i * interval)) for i in range(n)]


# --------------------------------------------------------------------------------------------------
# Constant-bitrate scenarios
# --------------------------------------------------------------------------------------------------

def test_overload_400_into_320_kbps_drops_a_fifth_with_bounded_delay():
    delay_s = 0.04
    size, link_kbps, queue_bytes = 1000, 320, 6000
    service = size * 8 / (link_kbps * 1000)  # 25 ms
    bound = queue_bytes * 8 / (link_kbps * 1000) + service  # 150 ms waiting + own 25 ms
    run = cbr_run(400, link_kbps, queue_bytes, 120.0, delay_s)
    assert len(run) == 6000
    steady = [(t, d) for t, d in run if t >= 5.0]
    drops = [d for _, d in steady if d.drop is not None]
    assert {d.drop for d in drops} == {DROP_QUEUE}
    # The link carries 320 of the 400 kbps offered: 20 % must be dropped.
    assert abs(len(drops) / len(steady) - 0.20) <= 0.01
    delays = [d.arrival - t - delay_s for t, d in run if d.drop is None]
    assert all(d.arrival is not None for _, d in run if d.drop is None)
    assert min(delays) >= service - 1e-9
    assert max(delays) <= bound + 1e-9
    # ... and the queue does fill: steady-state delays sit near the bound, not near one service time.
    steady_delays = [d.arrival - t - delay_s for t, d in steady if d.drop is None]
    assert min(steady_delays) >= bound - 0.03 and max(steady_delays) >= bound - 0.0051
    # No losses before the queue first fills: 6 waiting + 1 in service, gaining 5 ms per packet.
    first_drop = next(i for i, (_, d) in enumerate(run) if d.drop is not None)
    assert first_drop >= 25


def test_underload_200_kbps_never_queues():
    delay_s = 0.03
    run = cbr_run(200, 320, 6000, 120.0, delay_s)
    assert all(d.drop is None for _, d in run)
    for t, d in run:
        assert d.arrival - t - delay_s == pytest.approx(1000 * 8 / 320_000, abs=1e-9)


# --------------------------------------------------------------------------------------------------
# Hand-built admission cases (320 kbps: a 1000-byte packet takes exactly 25 ms)
# --------------------------------------------------------------------------------------------------

def _link(**queue) -> Link:
    return Link(LinkParams(rate=ConstantRateParams(320), delay_s=0.1, **queue), 0, "hand")


def test_packet_in_service_is_not_counted_bytes():
    link = _link(queue_bytes=1000)
    p1 = link.transmit(1000, 0.000)  # in service 0 .. 25 ms
    p2 = link.transmit(1000, 0.001)  # waits; the queue holds only p2 (1000 <= 1000): admitted
    p3 = link.transmit(1000, 0.002)  # p2 still waits: 1000 + 1000 > 1000: dropped
    assert p1.arrival == pytest.approx(0.125) and p1.drop is None
    assert p2.arrival == pytest.approx(0.150) and p2.drop is None
    assert p3 == (None, DROP_QUEUE, None)
    p4 = link.transmit(1000, 0.0249)  # p2 still waiting (starts at 25 ms)
    assert p4.drop == DROP_QUEUE
    p5 = link.transmit(1000, 0.025)  # p2 entered service at exactly 25 ms: queue empty again
    assert p5.drop is None and p5.arrival == pytest.approx(0.175)
    p6 = link.transmit(1, 0.026)  # p5 waits with 1000 bytes; 1 more byte does not fit
    assert p6.drop == DROP_QUEUE


def test_packet_in_service_is_not_counted_packets():
    link = _link(queue_packets=2)
    fates = [link.transmit(1000, 0.0) for _ in range(5)]  # burst at t = 0
    assert [f.drop for f in fates] == [None, None, None, DROP_QUEUE, DROP_QUEUE]
    assert [f.arrival for f in fates[:3]] == pytest.approx([0.125, 0.150, 0.175])
    assert link.transmit(1000, 0.020).drop == DROP_QUEUE  # two still waiting
    late = link.transmit(1000, 0.025)  # packet 2 now in service: one waiting
    assert late.drop is None and late.arrival == pytest.approx(0.200)


def test_combined_limits_either_one_drops():
    link = _link(queue_bytes=2500, queue_packets=3)
    sizes = [1000, 1000, 1000, 600, 100, 100, 400]
    fates = [link.transmit(s, 0.0) for s in sizes]
    # 1000 in service; waiting 1000, 2000; +600 = 2600 > 2500 bytes: drop; +100 = 2100 (3 packets);
    # +100 would be 2200 bytes but 4 packets: drop; +400 = 2500 bytes but 4 packets: drop.
    assert [f.drop for f in fates] == [None, None, None, DROP_QUEUE, None, DROP_QUEUE, DROP_QUEUE]


def test_byte_limit_is_inclusive_and_packets_bigger_than_it_never_fit():
    link = _link(queue_bytes=2000)
    assert [link.transmit(1000, 0.0).drop for _ in range(4)] == [None, None, None, DROP_QUEUE]
    # Mahimahi semantics: every packet passes through the queue, even into an idle link.
    link = _link(queue_bytes=1000)
    assert link.transmit(1001, 0.0).drop == DROP_QUEUE
    assert link.transmit(1000, 0.0).drop is None


def test_unlimited_queue_and_fifo_order():
    link = _link()
    sizes = [1500, 40, 700, 1200, 60, 1000] * 50
    fates = [link.transmit(s, 0.001 * i) for i, s in enumerate(sizes)]
    assert all(f.drop is None for f in fates)
    arrivals = [f.arrival for f in fates]
    assert arrivals == sorted(arrivals)
    # Back to back from t = 0: packet k finishes when all bytes up to and including it are sent.
    total = 0
    for s, a in zip(sizes, arrivals):
        total += s
        assert a == pytest.approx(0.1 + total * 8 / 320_000, abs=1e-9)


def test_drop_tail_queue_unit():
    q = DropTailQueue(limit_bytes=3000, limit_packets=None)
    assert not q.unlimited and DropTailQueue().unlimited
    assert q.admits(3000, 0.0) and not q.admits(3001, 0.0)
    q.enqueue(1000, 0.0)  # service starts at once: not waiting
    assert q.occupancy(0.0) == (0, 0)
    q.enqueue(1000, 1.0)
    q.enqueue(500, 2.0)
    assert q.occupancy(0.5) == (1500, 2)
    assert q.admits(1500, 0.5) and not q.admits(1501, 0.5)
    assert q.occupancy(1.0) == (500, 1)  # service start <= now: in service
    assert q.occupancy(2.0) == (0, 0)
    q = DropTailQueue(limit_bytes=None, limit_packets=1)
    q.enqueue(10, 5.0)
    assert not q.admits(1, 4.9) and q.admits(10**9, 5.0)


# --------------------------------------------------------------------------------------------------
# Property test against an independent event-by-event reference
# --------------------------------------------------------------------------------------------------

TICK = Fraction(1, 2**14)  # seconds; link rates are chosen so one byte takes 1, 2 or 4 ticks
TICKS_PER_BYTE_TO_KBPS = {1: 131.072, 2: 65.536, 4: 32.768}


def reference_droptail(arrivals, ticks_per_byte, limit_bytes, limit_packets):
    """Single server + waiting room, advanced completion by completion (integer ticks, exact).

    Returns per packet ("queue", None) or (None, finish_tick)."""
    results: list = [None] * len(arrivals)
    waiting: deque = deque()  # (index, size)
    waiting_bytes = 0
    server: tuple[int, int] | None = None  # (index, finish tick)

    def complete_until(t):
        nonlocal server, waiting_bytes
        while server is not None and server[1] <= t:
            done = server[1]
            server = None
            if waiting:
                j, size = waiting.popleft()
                waiting_bytes -= size
                server = (j, done + size * ticks_per_byte)
                results[j] = (None, server[1])

    for i, (t, size) in enumerate(arrivals):
        complete_until(t)
        fits_bytes = limit_bytes is None or waiting_bytes + size <= limit_bytes
        fits_packets = limit_packets is None or len(waiting) + 1 <= limit_packets
        if not (fits_bytes and fits_packets):
            results[i] = (DROP_QUEUE, None)
        elif server is None:
            server = (i, t + size * ticks_per_byte)
            results[i] = (None, server[1])
        else:
            waiting.append((i, size))
            waiting_bytes += size
    complete_until(float("inf"))
    return results


interesting_sizes = st.one_of(st.sampled_from([100, 250, 500, 1000, 1500]), st.integers(1, 3000))
interesting_gaps = st.one_of(st.sampled_from([0, 100, 250, 500, 1000, 2000, 4000]), st.integers(0, 6000))


@given(
    packets=st.lists(st.tuples(interesting_gaps, interesting_sizes), min_size=1, max_size=60),
    ticks_per_byte=st.sampled_from(sorted(TICKS_PER_BYTE_TO_KBPS)),
    limit_bytes=st.one_of(st.none(), st.integers(1, 6000), st.sampled_from([1000, 1500, 3000])),
    limit_packets=st.one_of(st.none(), st.integers(1, 6)),
)
@settings(max_examples=400, deadline=None)
def test_constant_rate_droptail_matches_reference(packets, ticks_per_byte, limit_bytes, limit_packets):
    kbps = TICKS_PER_BYTE_TO_KBPS[ticks_per_byte]
    assert Fraction(8) / Fraction(kbps * 1000.0) == ticks_per_byte * TICK  # exact binary arithmetic
    arrivals, t = [], 0
    for gap, size in packets:
        t += gap
        arrivals.append((t, size))
    delay_s = 0.25
    link = Link(LinkParams(delay_s=delay_s, rate=ConstantRateParams(kbps), queue_bytes=limit_bytes,
                           queue_packets=limit_packets), 0, "ref")
    got = [link.transmit(size, float(t * TICK)) for t, size in arrivals]
    expected = reference_droptail(arrivals, ticks_per_byte, limit_bytes, limit_packets)
    for i, (g, (drop, finish)) in enumerate(zip(got, expected)):
        assert g.drop == drop, (i, arrivals, got, expected)
        if drop is None:
            assert g.arrival == float(finish * TICK) + delay_s, (i, arrivals)
        else:
            assert g.arrival is None
