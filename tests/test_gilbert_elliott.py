"""Gilbert-Elliott loss: stationary statistics, run lengths, clocks, determinism and edge cases.

Semantics under test (GilbertElliottLoss / GilbertElliottParams):
  * p = P(good -> bad), r = P(bad -> good); the chain starts in good;
  * a packet's loss draw uses the state the packet ARRIVED in (`last_state`), and only then does a
    clock="packet" chain move one step; a clock="frame" chain moves once per `slot_s` of virtual time;
  * transitions and loss draws come from two separate uniform streams.
"""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
from ge_statistics import loss_asymptotic_variance, state_asymptotic_variance, stationary

from testbed.emulator.link import Link, LinkParams
from testbed.emulator.loss import GilbertElliottLoss, GilbertElliottParams
from testbed.emulator.random_stream import UniformStream

N_DRAWS = 1_000_000
Z = 4.0  # tolerance in standard errors for every statistical check in this file

THESIS = dict(p=0.068, r=0.852, loss_good=0.04)
STAT_PARAMS = [
    pytest.param(GilbertElliottParams(loss_bad=0.25, **THESIS), id="thesis-lb0.25"),
    pytest.param(GilbertElliottParams(loss_bad=0.5, **THESIS), id="thesis-lb0.5"),
    pytest.param(GilbertElliottParams(loss_bad=0.75, **THESIS), id="thesis-lb0.75"),
    pytest.param(GilbertElliottParams(p=0.01, r=0.1, loss_bad=1.0, loss_good=0.0), id="bursty"),
    pytest.param(GilbertElliottParams(p=0.05, r=0.3, loss_bad=0.6, loss_good=0.1), id="both-partial"),
    # 1 - p - r < 0: the state alternates more often than chance, covariances change sign with the lag.
    pytest.param(GilbertElliottParams(p=0.7, r=0.8, loss_bad=0.9, loss_good=0.05), id="anti-correlated"),
]


def make_ge(params: GilbertElliottParams, seed: int = 12345, key: str = "ge") -> GilbertElliottLoss:
    """Same stream layout as Link builds: (seed, key, purpose)."""
    return GilbertElliottLoss(params, UniformStream(seed, key, "ge-transitions"),
                              UniformStream(seed, key, "loss-draws"))


def run_packets(model: GilbertElliottLoss, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Loss indicators and bad-state indicators of `n` packets (all at t=0; packet clock ignores t)."""
    lost = bytearray(n)
    bad = bytearray(n)
    decide = model.lost
    for i in range(n):
        lost[i] = decide(0.0)
        bad[i] = model.last_state == "bad"
    assert model.last_state in ("good", "bad")
    return np.frombuffer(bytes(lost), dtype=np.uint8), np.frombuffer(bytes(bad), dtype=np.uint8)


def run_lengths(indicator: np.ndarray, value: int) -> np.ndarray:
    """Lengths of the maximal runs of `value`, dropping the final (censored) run of the series."""
    x = indicator.astype(np.int8)
    change = np.flatnonzero(np.diff(x)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(x)]))
    lengths = ends - starts
    values = x[starts]
    keep = values == value
    keep[-1] = False  # the last run is cut off by the end of the experiment
    return lengths[keep]


# --------------------------------------------------------------------------------------------------
# Stationary statistics over 10^6 packets
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated() -> dict[GilbertElliottParams, tuple[np.ndarray, np.ndarray]]:
    cache: dict = {}

    def get(params: GilbertElliottParams):
        if params not in cache:
            cache[params] = run_packets(make_ge(params, seed=20240601), N_DRAWS)
        return cache[params]

    return get  # type: ignore[return-value]


def test_variance_formula_against_exact_finite_sum():
    """The closed form used below equals Var(X) + 2*sum_k Cov(X_0, X_k) summed term by term, where
    the covariances come from the matrix power of the transition matrix (no closed form used)."""
    params = GilbertElliottParams(p=0.05, r=0.3, loss_bad=0.6, loss_good=0.1)
    P = np.array([[1 - params.p, params.p], [params.r, 1 - params.r]])
    pi = np.array(stationary(params))
    loss_p = np.array([params.loss_good, params.loss_bad])
    m = pi @ loss_p
    total = m * (1 - m)
    Pk = np.eye(2)
    for _ in range(1, 400):
        Pk = Pk @ P
        e_x0_xk = sum(pi[i] * loss_p[i] * Pk[i, j] * loss_p[j] for i in range(2) for j in range(2))
        total += 2 * (e_x0_xk - m * m)
    assert loss_asymptotic_variance(params) == pytest.approx(total, rel=1e-9)


@pytest.mark.parametrize("params", STAT_PARAMS)
def test_loss_rate_matches_stationary_loss(simulated, params):
    lost, _ = simulated(params)
    expected = (params.r * params.loss_good + params.p * params.loss_bad) / (params.p + params.r)
    assert params.stationary_loss() == pytest.approx(expected, rel=1e-12)
    se = math.sqrt(loss_asymptotic_variance(params) / len(lost))
    observed = lost.mean()
    assert abs(observed - expected) <= Z * se, (observed, expected, se)


@pytest.mark.parametrize("params", STAT_PARAMS)
def test_bad_state_occupancy_matches_p_over_p_plus_r(simulated, params):
    _, bad = simulated(params)
    expected = params.p / (params.p + params.r)
    se = math.sqrt(state_asymptotic_variance(params) / len(bad))
    assert abs(bad.mean() - expected) <= Z * se, (bad.mean(), expected, se)


@pytest.mark.parametrize("params", STAT_PARAMS)
def test_batch_means_variance_matches_derived_correlation(simulated, params):
    """The correlation structure itself: 100 batch means of 10^4 packets (>> the correlation time
    1/(p+r) <= 10 packets) have variance sigma^2 / 10^4, so B * var(batch means) / sigma^2 is close to
    chi^2_99 / 99, whose [1e-6, 1 - 1e-6] quantiles are about [0.50, 1.75].  This fails if e.g. the
    loss draw reused the transition uniform (then Cov(X_n, S_{n+1}) != 0) or the chain moved more or
    less than once per packet."""
    lost, _ = simulated(params)
    batch = 10_000
    means = lost[: len(lost) // batch * batch].reshape(-1, batch).mean(axis=1)
    ratio = means.var(ddof=1) * batch / loss_asymptotic_variance(params)
    assert 0.5 <= ratio <= 1.75, ratio


@pytest.mark.parametrize("params", STAT_PARAMS)
def test_transitions_are_markov_and_independent_of_the_loss_draw(simulated, params):
    """Given the state packet n arrived in AND whether it was lost, the next packet's state is bad
    with probability p (from good) or 1 - r (from bad): the transition is a fresh coin, independent
    of the loss draw.  Each conditional frequency is binomial, so 4 binomial standard errors apply.
    Fails if the chain reused the loss uniform (then e.g. P(next bad | good, lost) = 1 for lg < p)."""
    lost, bad = simulated(params)
    now_bad, now_lost, next_bad = bad[:-1], lost[:-1], bad[1:]
    checked = 0
    for state in (0, 1):
        expected = params.p if state == 0 else 1.0 - params.r
        for outcome in (0, 1):
            mask = (now_bad == state) & (now_lost == outcome)
            n = int(mask.sum())
            if n < 100:
                continue
            freq = next_bad[mask].mean()
            se = math.sqrt(expected * (1 - expected) / n)
            assert abs(freq - expected) <= Z * se + 1e-12, (state, outcome, freq, expected, n)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("params", STAT_PARAMS)
def test_mean_run_lengths_are_one_over_r_and_one_over_p(simulated, params):
    """By the Markov property a bad run ends after each packet independently with probability r, so
    bad-run lengths are i.i.d. Geometric(r) on {1, 2, ...}: mean 1/r, variance (1 - r)/r^2, and the
    standard error of the mean of n runs is sqrt((1 - r)/n)/r.  Same for good runs with p.  (The first
    good run starts with the chain, so it is also a full run; only the censored last run is dropped.)"""
    _, bad = simulated(params)
    for value, leave in ((1, params.r), (0, params.p)):
        runs = run_lengths(bad, value)
        assert len(runs) > 1000
        se = math.sqrt((1.0 - leave) / len(runs)) / leave
        assert abs(runs.mean() - 1.0 / leave) <= Z * se + 1e-12, (value, runs.mean(), 1.0 / leave, se)


# --------------------------------------------------------------------------------------------------
# Exact per-packet semantics (deterministic cases and an independent reference)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params", STAT_PARAMS)
def test_packet_clock_matches_reference_on_the_same_streams(params):
    """Reference: state drawn before the loss, one transition uniform per packet, one loss uniform per
    packet, from the streams Link uses.  Pins the stream layout that makes Link runs reproducible."""
    model = make_ge(params, seed=7, key="ref")
    transitions = UniformStream(7, "ref", "ge-transitions")
    draws = UniformStream(7, "ref", "loss-draws")
    bad = False
    for i in range(20_000):
        state = "bad" if bad else "good"
        expect_lost = draws.next() < (params.loss_bad if bad else params.loss_good)
        u = transitions.next()
        bad = (u >= params.r) if bad else (u < params.p)
        assert model.lost(0.001 * i) == expect_lost, i
        assert model.last_state == state, i


def test_last_state_is_none_before_any_packet():
    assert make_ge(GilbertElliottParams(p=0.1, r=0.2)).last_state is None


def test_loss_uses_arrival_state_then_transitions_p1_r0():
    """p=1, r=0: the first packet arrives in good (so is never lost), every later one in bad.
    A model that transitions before drawing (as the Linux kernel's netem does) would lose packet 0."""
    model = make_ge(GilbertElliottParams(p=1.0, r=0.0, loss_bad=1.0, loss_good=0.0))
    outcomes = [(model.lost(0.0), model.last_state) for _ in range(1000)]
    assert outcomes[0] == (False, "good")
    assert all(o == (True, "bad") for o in outcomes[1:])


def test_alternating_chain_p1_r1():
    model = make_ge(GilbertElliottParams(p=1.0, r=1.0, loss_bad=1.0, loss_good=0.0))
    for i in range(1000):
        lost = model.lost(0.0)
        assert model.last_state == ("bad" if i % 2 else "good")
        assert lost == bool(i % 2)


def test_p_zero_never_loses_with_default_loss_probabilities():
    params = GilbertElliottParams(p=0.0, r=0.5)
    assert (params.loss_bad, params.loss_good) == (1.0, 0.0)
    lost, bad = run_packets(make_ge(params), 100_000)
    assert lost.sum() == 0 and bad.sum() == 0


def test_dataclass_defaults_and_required_r():
    """r has no default (GilbertElliottParams(p) is an error); the rest default to the simple
    Gilbert model (loss_bad=1, loss_good=0) with a per-packet clock and 30 slots per second."""
    with pytest.raises(TypeError):
        GilbertElliottParams(0.1)  # type: ignore[call-arg]
    fields = {f.name: f for f in dataclasses.fields(GilbertElliottParams)}
    assert fields["p"].default is dataclasses.MISSING
    assert fields["r"].default is dataclasses.MISSING
    params = GilbertElliottParams(p=0.1, r=0.2)
    assert params.loss_bad == 1.0 and params.loss_good == 0.0
    assert params.clock == "packet"
    assert params.slot_s == pytest.approx(1 / 30)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.p = 0.5  # type: ignore[misc]


def test_p_and_r_zero_stays_good_and_loses_at_loss_good():
    params = GilbertElliottParams(p=0.0, r=0.0, loss_bad=1.0, loss_good=0.2)
    assert params.stationary_loss() == 0.2
    n = 200_000
    lost, bad = run_packets(make_ge(params), n)
    assert bad.sum() == 0
    se = math.sqrt(0.2 * 0.8 / n)
    assert abs(lost.mean() - 0.2) <= Z * se


def test_r_zero_absorbs_in_bad():
    params = GilbertElliottParams(p=0.01, r=0.0, loss_bad=1.0, loss_good=0.0)
    lost, bad = run_packets(make_ge(params), 20_000)
    first_bad = int(np.argmax(bad))
    assert bad[first_bad] == 1
    assert bad[first_bad:].all() and lost[first_bad:].all()
    assert not lost[:first_bad].any()


def test_loss_only_in_bad_state_when_loss_good_zero():
    params = GilbertElliottParams(p=0.05, r=0.3, loss_bad=1.0, loss_good=0.0)
    lost, bad = run_packets(make_ge(params), 100_000)
    assert np.array_equal(lost, bad)


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------

def _link_outcomes(params, seed, *key, n=5000):
    link = Link(LinkParams(loss=params), seed, *key)
    out = []
    for i in range(n):
        d = link.transmit(1000, i * 0.001)
        out.append((d.drop, d.ge_state))
    return out


def test_same_seed_and_key_are_identical_different_key_or_seed_differ():
    params = GilbertElliottParams(loss_bad=0.5, **THESIS)
    a = _link_outcomes(params, 3, "path", "up")
    assert a == _link_outcomes(params, 3, "path", "up")
    assert a != _link_outcomes(params, 3, "path", "down")
    assert a != _link_outcomes(params, 4, "path", "up")
    # Direct construction with the streams Link derives from (seed, *key, purpose) gives the same run.
    direct = []
    model = GilbertElliottLoss(params, UniformStream(3, "path", "up", "ge-transitions"),
                               UniformStream(3, "path", "up", "loss-draws"))
    for i in range(5000):
        lost = model.lost(i * 0.001)
        direct.append(("loss" if lost else None, model.last_state))
    assert direct == a


# --------------------------------------------------------------------------------------------------
# Frame clock
# --------------------------------------------------------------------------------------------------

SLOT = 1 / 30


def _slot_states(link: Link, arrivals: list[tuple[int, float]]) -> dict[int, set[str]]:
    per_slot: dict[int, set[str]] = {}
    for slot, t in arrivals:
        per_slot.setdefault(slot, set()).add(link.transmit(200, t).ge_state)
    return per_slot


def _arrival_times(n_slots: int, per_slot: int, rng: random.Random,
                   include_boundary: bool) -> list[tuple[int, float]]:
    """(slot, time) of `per_slot` packets at irregular offsets inside each slot."""
    arrivals = []
    for k in range(n_slots):
        offsets = sorted(rng.uniform(0.0, 0.999) for _ in range(per_slot))
        if include_boundary and k % 7 == 0:
            offsets[0] = 0.0  # exactly on the slot boundary: belongs to slot k
        arrivals.extend((k, k * SLOT + o * SLOT) for o in offsets)
    return arrivals


@pytest.mark.parametrize("clock", ["frame", "packet"])
def test_frame_clock_state_is_a_function_of_the_slot_only(clock):
    params = GilbertElliottParams(p=0.2, r=0.4, loss_bad=0.7, loss_good=0.05, clock=clock, slot_s=SLOT)
    n_slots = 3000
    rng = random.Random(99)
    sparse = _slot_states(Link(LinkParams(loss=params), 11, "call", "up"),
                          _arrival_times(n_slots, 3, rng, include_boundary=False))
    dense = _slot_states(Link(LinkParams(loss=params), 11, "call", "up"),
                         _arrival_times(n_slots, 11, rng, include_boundary=True))
    assert set(sparse) == set(dense) == set(range(n_slots))
    within_slot_constant = all(len(s) == 1 for s in sparse.values()) and all(
        len(s) == 1 for s in dense.values())
    same_sequence = within_slot_constant and all(sparse[k] == dense[k] for k in range(n_slots))
    if clock == "frame":
        assert within_slot_constant, "the chain moved within a slot"
        assert same_sequence
        states = [next(iter(dense[k])) for k in range(n_slots)]
        changes = sum(a != b for a, b in zip(states, states[1:]))
        assert states[0] == "good"
        assert 0.2 < states.count("bad") / n_slots < 0.5  # pi_b = 1/3, not a degenerate sequence
        assert changes > 500
    else:
        assert not same_sequence  # per-packet clocks diverge with different packet rates


def test_frame_clock_advances_through_empty_slots():
    """A link that sees packets only in every 5th slot reports the same state in those slots as one
    that sees packets in every slot: the chain moves once per slot of virtual time, not per packet."""
    params = GilbertElliottParams(p=0.3, r=0.3, loss_bad=1.0, loss_good=0.0, clock="frame")
    every = Link(LinkParams(loss=params), 5, "k")
    sparse = Link(LinkParams(loss=params), 5, "k")
    for k in range(5000):
        t = (k + 0.5) * SLOT
        state = every.transmit(100, t).ge_state
        if k % 5 == 0:
            assert sparse.transmit(100, t).ge_state == state, k


def test_frame_clock_with_one_packet_per_slot_equals_packet_clock():
    """One packet per slot: both clocks step the same transition stream once between packets and use
    one loss draw per packet, so the outcomes are identical packet by packet."""
    base = dict(p=0.068, r=0.852, loss_bad=0.5, loss_good=0.04)
    frame = make_ge(GilbertElliottParams(clock="frame", **base), seed=8)
    packet = make_ge(GilbertElliottParams(clock="packet", **base), seed=8)
    for k in range(20_000):
        t = (k + 0.25) * SLOT
        assert frame.lost(t) == packet.lost(t), k
        assert frame.last_state == packet.last_state, k


def test_frame_clock_slot_boundaries_p1_r1():
    """p = r = 1 flips the state every slot: slot k is bad iff k is odd.  A packet exactly on the
    boundary k*slot_s belongs to slot k; one a microsecond earlier to slot k - 1.  Many packets within
    one slot never move the chain."""
    params = GilbertElliottParams(p=1.0, r=1.0, clock="frame", slot_s=SLOT)
    model = make_ge(params)
    for k in range(0, 3000, 3):
        for t, slot in (((k * SLOT) - 1e-6, k - 1), (k / 30, k), (k * SLOT, k), (k * (1 / 30) + 0.5 * SLOT, k)):
            if t < 0:
                continue
            model.lost(t)
            assert model.last_state == ("bad" if slot % 2 else "good"), (k, t)
    model = make_ge(params)
    for t in np.linspace(0.0, SLOT * 0.999, 50):
        model.lost(float(t))
        assert model.last_state == "good"
    for t in np.linspace(SLOT, SLOT * 1.999, 50):
        model.lost(float(t))
        assert model.last_state == "bad"


def test_frame_clock_stationary_statistics():
    """State per slot follows the same chain: occupancy p/(p+r) within 4 correlated standard errors."""
    params = GilbertElliottParams(p=0.01, r=0.1, loss_bad=1.0, loss_good=0.0, clock="frame")
    model = make_ge(params, seed=31)
    n_slots = 300_000
    bad = np.empty(n_slots, dtype=np.uint8)
    for k in range(n_slots):
        model.lost((k + 0.5) * SLOT)
        bad[k] = model.last_state == "bad"
    expected = params.p / (params.p + params.r)
    se = math.sqrt(state_asymptotic_variance(params) / n_slots)
    assert abs(bad.mean() - expected) <= Z * se
    runs = run_lengths(bad, 1)
    assert abs(runs.mean() - 1 / params.r) <= Z * math.sqrt((1 - params.r) / len(runs)) / params.r
