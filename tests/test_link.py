"""Link: loss on arrival -> drop-tail FIFO -> serializer -> propagation delay (with jitter)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.emulator.delay import PropagationDelay
from testbed.emulator.link import (
    DROP_LOSS,
    DROP_QUEUE,
    BernoulliParams,
    ConstantRateParams,
    Delivery,
    DeliveryTraceParams,
    Link,
    LinkParams,
    PacketTraceParams,
)
from testbed.emulator.loss import GilbertElliottParams
from testbed.emulator.random_stream import UniformStream

Z = 4.0


# --------------------------------------------------------------------------------------------------
# PropagationDelay
# --------------------------------------------------------------------------------------------------

def _departures(n: int, spacing: float = 0.001) -> list[float]:
    return [i * spacing for i in range(n)]


def test_fixed_delay_without_jitter():
    d = PropagationDelay(0.037)
    for t in (0.0, 0.5, 0.5, 7.25):
        assert d.arrival(t) == t + 0.037


def test_jitter_requires_a_stream():
    with pytest.raises(ValueError):
        PropagationDelay(0.05, jitter_s=0.01)


def test_jitter_never_reorders_by_default_and_stays_in_bounds():
    delay, jitter = 0.05, 0.02
    d = PropagationDelay(delay, jitter, draws=UniformStream(1, "jitter"))
    assert d.reorder is False
    previous = -math.inf
    clamped = 0
    for dep in _departures(20_000):  # 1 ms apart, jitter +-20 ms: unclamped order would often flip
        a = d.arrival(dep)
        assert a >= previous
        low, high = dep + delay - jitter, dep + delay + jitter
        if not (low - 1e-12 <= a <= high + 1e-12):
            # Only the no-reorder clamp may move an arrival out of the window, and only later, to
            # exactly the previous arrival.
            assert a == previous and a > high
            clamped += 1
        elif a == previous:
            clamped += 1
        previous = a
    assert clamped > 1000  # the clamp did real work in this set-up


def test_jitter_with_reorder_is_uniform_in_the_window_and_can_reorder():
    delay, jitter = 0.05, 0.02
    draws = UniformStream(2, "jitter")
    check = UniformStream(2, "jitter")
    d = PropagationDelay(delay, jitter, reorder=True, draws=draws)
    deps = _departures(50_000)
    arrivals = [d.arrival(dep) for dep in deps]
    offsets = np.array(arrivals) - np.array(deps) - delay
    assert offsets.min() >= -jitter - 1e-12 and offsets.max() <= jitter + 1e-12
    assert offsets.min() < -0.99 * jitter and offsets.max() > 0.99 * jitter
    # Uniform on [-J, J]: mean 0, variance J^2 / 3.
    assert abs(offsets.mean()) <= Z * jitter / math.sqrt(3 * len(offsets))
    assert offsets.var() == pytest.approx(jitter**2 / 3, rel=0.02)
    assert any(b < a for a, b in zip(arrivals, arrivals[1:]))
    # Each arrival is delay + (2u - 1) * jitter with u the next draw of the stream.
    for dep, a in zip(deps[:1000], arrivals[:1000]):
        assert a == pytest.approx(dep + delay + (2 * check.next() - 1) * jitter, abs=1e-12)


def test_jitter_larger_than_delay_never_arrives_before_departure():
    d = PropagationDelay(0.005, 0.02, reorder=True, draws=UniformStream(3, "j"))
    deps = _departures(5000, spacing=0.01)
    arrivals = [d.arrival(dep) for dep in deps]
    assert all(a >= dep for a, dep in zip(arrivals, deps))
    assert sum(a == dep for a, dep in zip(arrivals, deps)) > 1000  # ~ 3/8 of draws hit the floor


def test_link_jitter_is_keyed_and_fifo():
    params = LinkParams(delay_s=0.05, jitter_s=0.03)
    a = Link(params, 1, "a")
    same = Link(params, 1, "a")
    other = Link(params, 1, "b")
    deps = _departures(2000)
    ra = [a.transmit(100, t).arrival for t in deps]
    assert ra == [same.transmit(100, t).arrival for t in deps]
    assert ra != [other.transmit(100, t).arrival for t in deps]
    assert ra == sorted(ra)
    reordering = Link(LinkParams(delay_s=0.05, jitter_s=0.03, reorder=True), 1, "a")
    rr = [reordering.transmit(100, t).arrival for t in deps]
    assert rr != sorted(rr)


# --------------------------------------------------------------------------------------------------
# Link.transmit
# --------------------------------------------------------------------------------------------------

def test_default_link_is_a_pure_delay():
    link = Link(LinkParams(delay_s=0.02), 0, "x")
    fate = link.transmit(1500, 1.0)
    assert isinstance(fate, Delivery)
    assert fate == Delivery(1.02, None, None)
    assert (fate.arrival, fate.drop, fate.ge_state) == (1.02, None, None)


def test_loss_is_decided_before_the_queue():
    """1000-byte queue at 320 kbps (25 ms per packet).  Packet 1 enters service, packet 2 is lost by
    the loss model, packet 3 finds the queue empty because the lost packet never occupied it."""
    params = LinkParams(rate=ConstantRateParams(320), queue_bytes=1000, delay_s=0.0,
                        loss=PacketTraceParams(np.array([0, 1, 0, 1, 0]), loop=False))
    link = Link(params, 0, "x")
    fates = [link.transmit(1000, t) for t in (0.000, 0.001, 0.002, 0.003, 0.004)]
    assert fates[0] == Delivery(pytest.approx(0.025), None, None)
    assert fates[1] == Delivery(None, DROP_LOSS, None)
    assert fates[2] == Delivery(pytest.approx(0.050), None, None)
    # Packet 4 would not fit the queue either; loss is checked first, so it is labelled a loss.
    assert fates[3] == Delivery(None, DROP_LOSS, None)
    assert fates[4] == Delivery(None, DROP_QUEUE, None)
    assert link.transmit(1000, 1.0).drop is None  # trace over (loop=False): no loss, queue empty


def test_queue_dropped_packets_still_consume_a_loss_decision():
    """The loss model sees every arrival, including ones the queue then drops: outcome k belongs to
    the k-th arrival.  Packet 3 is queue-dropped; packet 4, arriving at an empty queue, takes
    outcome 3 (lost), not outcome 2."""
    params = LinkParams(rate=ConstantRateParams(320), queue_packets=1,
                        loss=PacketTraceParams(np.array([0, 0, 0, 1]), loop=False))
    link = Link(params, 0, "x")
    fates = [link.transmit(1000, t) for t in (0.000, 0.001, 0.002, 1.0, 1.1)]
    assert [f.drop for f in fates] == [None, None, DROP_QUEUE, DROP_LOSS, None]


def test_lost_packets_do_not_use_link_capacity():
    """With half the packets lost, the survivors see the link as if only they had been sent."""
    params = LinkParams(rate=ConstantRateParams(80), loss=PacketTraceParams(np.array([0, 1])))
    link = Link(params, 0, "x")
    fates = [link.transmit(1000, 0.0) for _ in range(10)]  # burst; 1000 B = 0.1 s at 80 kbps
    assert [f.drop for f in fates] == [None, DROP_LOSS] * 5
    assert [f.arrival for f in fates[::2]] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_ge_state_is_logged_for_every_packet_including_drops():
    ge = GilbertElliottParams(p=1.0, r=1.0, loss_bad=1.0, loss_good=0.0)  # good, bad, good, ...
    link = Link(LinkParams(loss=ge, rate=ConstantRateParams(80), queue_packets=1), 0, "ge")
    fates = [link.transmit(1000, 0.0) for _ in range(8)]
    assert [f.ge_state for f in fates] == ["good", "bad"] * 4
    # good packets: 1st in service, 2nd (3rd overall) waits, later good ones find the queue full.
    assert [f.drop for f in fates] == [None, DROP_LOSS, None, DROP_LOSS, DROP_QUEUE, DROP_LOSS,
                                       DROP_QUEUE, DROP_LOSS]
    assert link.loss.last_state == "bad"


def test_ge_state_matches_the_model_and_drop_label_matches_loss():
    ge = GilbertElliottParams(p=0.068, r=0.852, loss_bad=0.5, loss_good=0.04)
    link = Link(LinkParams(loss=ge), 9, "ge")
    fates = [link.transmit(500, i * 0.002) for i in range(20_000)]
    states = [f.ge_state for f in fates]
    assert set(states) == {"good", "bad"}
    lost_bad = sum(f.drop == DROP_LOSS for f in fates if f.ge_state == "bad")
    n_bad = states.count("bad")
    lost_good = sum(f.drop == DROP_LOSS for f in fates if f.ge_state == "good")
    n_good = states.count("good")
    assert abs(lost_bad / n_bad - 0.5) <= Z * math.sqrt(0.25 / n_bad)
    assert abs(lost_good / n_good - 0.04) <= Z * math.sqrt(0.04 * 0.96 / n_good)


def test_non_ge_loss_models_log_no_state():
    for loss in (None, BernoulliParams(0.5), PacketTraceParams(np.array([1, 0]))):
        link = Link(LinkParams(loss=loss), 0, "x")
        assert all(link.transmit(100, i * 0.01).ge_state is None for i in range(50))


def test_never_delivered_is_not_a_drop():
    link = Link(LinkParams(rate=DeliveryTraceParams(np.array([1, 2]), loop=False), delay_s=0.01), 0, "x")
    assert link.transmit(1504, 0.0) == Delivery(pytest.approx(0.011), None, None)
    assert link.transmit(1504, 0.0) == Delivery(pytest.approx(0.012), None, None)
    assert link.transmit(1, 0.0) == Delivery(None, None, None)


def test_delivery_is_fifo_through_rate_queue_and_delay():
    params = LinkParams(delay_s=0.03, jitter_s=0.01, rate=ConstantRateParams(500), queue_bytes=20_000,
                        loss=BernoulliParams(0.1))
    link = Link(params, 4, "fifo")
    rng = np.random.default_rng(0)
    t = 0.0
    arrivals = []
    for _ in range(5000):
        t += float(rng.exponential(0.01))
        fate = link.transmit(int(rng.integers(40, 1500)), t)
        if fate.arrival is not None:
            arrivals.append(fate.arrival)
            assert fate.arrival >= t
    assert arrivals == sorted(arrivals)
