"""Bernoulli, per-packet trace and interval trace loss models (testbed.emulator.loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.emulator.link import (
    DROP_LOSS,
    BernoulliParams,
    IntervalTraceParams,
    Link,
    LinkParams,
    PacketTraceParams,
)
from testbed.emulator.loss import BernoulliLoss, IntervalTraceLoss, NoLoss, PacketTraceLoss
from testbed.emulator.random_stream import UniformStream

Z = 4.0


def _bernoulli_draws(rate: float, n: int, seed: int = 1) -> np.ndarray:
    model = BernoulliLoss(rate, UniformStream(seed, "bern", "loss-draws"))
    out = bytearray(n)
    decide = model.lost
    for i in range(n):
        out[i] = decide(0.0)
    return np.frombuffer(bytes(out), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# Bernoulli
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_bernoulli_rate_within_four_binomial_standard_errors(rate):
    n = 1_000_000
    x = _bernoulli_draws(rate, n, seed=int(rate * 1000))
    se = math.sqrt(rate * (1 - rate) / n)
    assert abs(x.mean() - rate) <= Z * se, (x.mean(), rate, se)
    # Independence: the lag-1 sample autocorrelation of i.i.d. draws has standard error 1/sqrt(n).
    xc = x.astype(float) - x.mean()
    rho = float(xc[:-1] @ xc[1:]) / float(xc @ xc)
    assert abs(rho) <= Z / math.sqrt(n)


def test_bernoulli_extremes_and_state():
    assert not _bernoulli_draws(0.0, 50_000).any()
    assert _bernoulli_draws(1.0, 50_000).all()
    model = BernoulliLoss(0.3, UniformStream(1, "x"))
    model.lost(0.0)
    assert model.last_state is None


def test_bernoulli_through_link_is_keyed_and_labelled():
    def run(seed, *key):
        link = Link(LinkParams(loss=BernoulliParams(0.2)), seed, *key)
        return [link.transmit(100, i * 0.01) for i in range(4000)]

    a = run(1, "a")
    assert a == run(1, "a")
    assert a != run(1, "b") and a != run(2, "a")
    assert {d.drop for d in a} == {None, DROP_LOSS}
    assert all(d.ge_state is None for d in a)
    assert all((d.arrival is None) == (d.drop == DROP_LOSS) for d in a)
    # Same draws as a BernoulliLoss built on the stream Link derives: (seed, *key, "loss-draws").
    direct = BernoulliLoss(0.2, UniformStream(1, "a", "loss-draws"))
    assert [d.drop == DROP_LOSS for d in a] == [direct.lost(i * 0.01) for i in range(4000)]


def test_no_loss_never_loses():
    model = NoLoss()
    assert not any(model.lost(t * 0.1) for t in range(1000))
    assert model.last_state is None


# --------------------------------------------------------------------------------------------------
# Per-packet trace
# --------------------------------------------------------------------------------------------------

outcome_lists = st.lists(st.booleans(), min_size=1, max_size=40)


@given(outcomes=outcome_lists, extra=st.integers(0, 100), as_int=st.booleans(),
       times=st.lists(st.floats(0, 1e4), min_size=1, max_size=5))
@settings(max_examples=200, deadline=None)
def test_packet_trace_replays_and_loops(outcomes, extra, as_int, times):
    array = np.array(outcomes, dtype=np.int8 if as_int else bool)
    model = PacketTraceLoss(array, loop=True)
    n = len(outcomes) * 3 + extra
    got = [model.lost(times[i % len(times)]) for i in range(n)]  # the time plays no part
    assert got == [outcomes[i % len(outcomes)] for i in range(n)]
    assert all(type(x) is bool for x in got)
    assert model.last_state is None


@given(outcomes=outcome_lists, extra=st.integers(1, 100))
@settings(max_examples=200, deadline=None)
def test_packet_trace_without_loop_stops_losing_after_the_end(outcomes, extra):
    model = PacketTraceLoss(np.array(outcomes, dtype=np.uint8), loop=False)
    got = [model.lost(0.0) for _ in range(len(outcomes) + extra)]
    assert got[: len(outcomes)] == outcomes
    assert not any(got[len(outcomes):])


def test_packet_trace_default_loops_and_link_uses_it():
    outcomes = np.array([0, 1, 1, 0, 0])
    assert PacketTraceLoss(outcomes).loop is True
    link = Link(LinkParams(loss=PacketTraceParams(outcomes)), 0, "t")
    drops = [link.transmit(100, i * 0.01).drop for i in range(12)]
    assert drops == [None, DROP_LOSS, DROP_LOSS, None, None] * 2 + [None, DROP_LOSS]
    link = Link(LinkParams(loss=PacketTraceParams(outcomes, loop=False)), 0, "t")
    drops = [link.transmit(100, i * 0.01).drop for i in range(12)]
    assert drops == [None, DROP_LOSS, DROP_LOSS, None, None] + [None] * 7


# --------------------------------------------------------------------------------------------------
# Interval trace
# --------------------------------------------------------------------------------------------------

@st.composite
def sorted_disjoint_intervals(draw):
    """Rows [b0, b1), [b2, b3), ... from a sorted list of boundaries on a 1 ms grid: intervals are
    disjoint but may touch (end == next start) or be empty (start == end)."""
    bounds = sorted(draw(st.lists(st.integers(0, 2000), min_size=0, max_size=16)))
    if len(bounds) % 2:
        bounds = bounds[:-1]
    rows = [(bounds[i] / 1000.0, bounds[i + 1] / 1000.0) for i in range(0, len(bounds), 2)]
    return rows


@given(rows=sorted_disjoint_intervals(), probes=st.lists(st.integers(-5, 2100), max_size=30),
       fine=st.lists(st.floats(-0.01, 2.1, allow_nan=False), max_size=30))
@settings(max_examples=300, deadline=None)
def test_interval_trace_loses_exactly_inside_half_open_intervals(rows, probes, fine):
    array = np.array(rows, dtype=float).reshape(-1, 2)
    model = IntervalTraceLoss(array)
    # Probe every boundary exactly, a hair either side of it, random grid points and random floats.
    points = set(fine) | {p / 1000.0 for p in probes}
    for s, e in rows:
        points |= {s, e, math.nextafter(s, -1), math.nextafter(e, -1), math.nextafter(s, 9), math.nextafter(e, 9)}
    for t in sorted(points):
        expected = any(s <= t < e for s, e in rows)
        assert model.lost(t) == expected, (t, rows)
    assert model.last_state is None


def test_interval_trace_hand_cases():
    model = IntervalTraceLoss(np.array([[1.0, 2.0], [2.0, 2.5], [4.0, 4.0], [5.0, 6.0]]))
    expectations = {0.0: False, 0.999: False, 1.0: True, 1.5: True, 2.0: True, 2.4999: True, 2.5: False,
                    3.9: False, 4.0: False, 4.5: False, 5.0: True, 5.999: True, 6.0: False, 100.0: False}
    for t, lost in expectations.items():
        assert model.lost(t) == lost, t
    # The answer depends only on the time: asking again, or out of order, gives the same result.
    for t, lost in reversed(list(expectations.items())):
        assert model.lost(t) == lost, t
    assert not IntervalTraceLoss(np.empty((0, 2))).lost(1.0)


def test_interval_trace_through_link():
    link = Link(LinkParams(loss=IntervalTraceParams(np.array([[0.5, 1.0]])), delay_s=0.1), 0, "i")
    drops = [(t, link.transmit(100, t)) for t in (0.0, 0.49, 0.5, 0.75, 0.999, 1.0, 2.0)]
    assert [d.drop for _, d in drops] == [None, None, DROP_LOSS, DROP_LOSS, DROP_LOSS, None, None]
    assert [d.arrival for _, d in drops if d.drop is None] == pytest.approx([0.1, 0.59, 1.1, 2.1])
