"""Freeze metrics (testbed.analysis.freeze) on hand-built display-timestamp sequences.

Thresholds are worked out by hand in each test: bar = max(3 * avg, avg + 150 ms). W3C judges an interval
against the average of the up-to-30 preceding intervals with >=; Ringmaster against exactly the 30
preceding ones with >; libwebrtc against the floor of the integer average of the last 30 intervals
including the judged one, with >=, from the 5th interval on.
"""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.analysis.freeze import (
    Freeze,
    FreezeStats,
    libwebrtc_freezes,
    ringmaster_freezes,
    w3c_freezes,
)

RULES = {"w3c": w3c_freezes, "libwebrtc": libwebrtc_freezes, "ringmaster": ringmaster_freezes}
ALL = pytest.mark.parametrize("rule", RULES.values(), ids=RULES.keys())
NOTHING = FreezeStats(count=0, total_s=0.0, mean_s=0.0, freeze_time_pct=0.0, pauses=0, pause_total_s=0.0,
                      freezes=())


def frames(start: float, intervals: int, step: float) -> list[float]:
    """start, then `intervals` more frames `step` ms apart."""
    return [start + i * step for i in range(intervals + 1)]


def with_gap(before: list[float], gap: float, after_intervals: int, step: float) -> list[float]:
    """`before`, a frame `gap` ms after its last one, then `after_intervals` frames `step` apart."""
    return before + frames(before[-1] + gap, after_intervals, step)


# 30 fps: frame i displayed at i * 100/3 ms; frame 60 is at exactly 2000 ms.
FPS30_2S = [i * 100 / 3 for i in range(61)]
# 40 ms frames: frame 39 at 1560 ms, the window before any later gap holds 30 exact 40 ms intervals (avg
# 40, W3C/Ringmaster bar max(120, 190) = 190 exactly).
MS40 = frames(0.0, 39, 40.0)


# --------------------------------------------------------------------------------------------------
# Basic cases, all three rules
# --------------------------------------------------------------------------------------------------

@ALL
def test_steady_30fps_has_no_freeze(rule):
    assert rule([i * 100 / 3 for i in range(301)]) == NOTHING


@ALL
def test_200ms_gap_after_2s_at_30fps_is_one_freeze(rule):
    # avg 33.3 -> bar max(100, 183.3) = 183.3 <= 200 (libwebrtc: floor((967 + 200) / 30) = 38 -> 188).
    stats = rule(with_gap(FPS30_2S, 200.0, 30, 100 / 3))
    assert stats.count == 1
    assert stats.freezes == (Freeze(2000.0, 2200.0),)
    assert stats.freezes[0].duration_ms == 200.0
    assert stats.total_s == pytest.approx(0.2)
    assert stats.mean_s == pytest.approx(0.2)
    assert stats.pauses == 0


@ALL
def test_150ms_gap_at_30fps_is_not_a_freeze(rule):
    # 150 < 183.3 (libwebrtc: floor((967 + 150) / 30) + 150 = 187).
    assert rule(with_gap(FPS30_2S, 150.0, 30, 100 / 3)).count == 0


@ALL
def test_consecutive_freezes_are_counted_separately(rule):
    # 1st 500 ms gap: bar 190 (libwebrtc: floor((29*40 + 500)/30) = 55 -> 205).
    # 2nd: the first gap is now in the window: avg (29*40 + 500)/30 = 55.3 -> bar 205.3
    # (libwebrtc: floor((28*40 + 500 + 500)/30) = 70 -> 220). Both freezes.
    times = MS40 + [2060.0, 2560.0] + frames(2600.0, 9, 40.0)
    stats = rule(times)
    assert stats.freezes == (Freeze(1560.0, 2060.0), Freeze(2060.0, 2560.0))
    assert stats.count == 2
    assert stats.total_s == pytest.approx(1.0)
    assert stats.mean_s == pytest.approx(0.5)


@ALL
@pytest.mark.parametrize("times", [[], [123.0]], ids=["empty", "single"])
def test_empty_and_single_frame_have_nothing(rule, times):
    assert rule(times) == NOTHING
    # A lone frame shown until the run's end: one interval, which has no baseline to be judged against.
    assert rule(times, end_ms=1000.0) == NOTHING


@ALL
def test_freeze_time_pct_is_freeze_time_over_displayed_span(rule):
    # 1000 ms frozen between 1560 and 2560; last frame at 2560 + 36*40 = 4000 -> 25 %.
    times = with_gap(MS40, 1000.0, 36, 40.0)
    assert times[-1] == 4000.0
    stats = rule(times)
    assert stats.count == 1
    assert stats.freeze_time_pct == 25.0


# --------------------------------------------------------------------------------------------------
# The threshold boundary: >= (W3C, libwebrtc) versus > (Ringmaster)
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "gap", "expected"), [
    # W3C: avg of the 30 preceding 40 ms intervals = 40, bar 190, >=.
    (w3c_freezes, 190.0, 1),
    (w3c_freezes, 189.75, 0),
    # Ringmaster: same bar 190, but >.
    (ringmaster_freezes, 190.0, 0),
    (ringmaster_freezes, 190.25, 1),
    # libwebrtc: floor((29*40 + gap)/30) = 45 for gap 180..209, bar 195, >=.
    (libwebrtc_freezes, 195.0, 1),
    (libwebrtc_freezes, 194.0, 0),
    # Display times are rounded half up to whole ms first: 1560 + 194.5 -> 1755, a 195 ms interval.
    (libwebrtc_freezes, 194.5, 1),
    (libwebrtc_freezes, 194.4, 0),
], ids=lambda v: getattr(v, "__name__", None))
def test_threshold_boundary(rule, gap, expected):
    assert rule(with_gap(MS40, gap, 10, 40.0)).count == expected


# --------------------------------------------------------------------------------------------------
# Warm-up
# --------------------------------------------------------------------------------------------------

@ALL
def test_first_interval_is_never_judged(rule):
    assert rule([0.0, 1000.0, 1040.0]).count == 0


@pytest.mark.parametrize(("rule", "expected"), [(w3c_freezes, 1), (libwebrtc_freezes, 0), (ringmaster_freezes, 0)],
                         ids=RULES.keys())
def test_freeze_on_second_interval_only_w3c_sees(rule, expected):
    # W3C: one preceding interval (40) is a baseline: bar 190 <= 1000.
    assert rule([0.0, 40.0, 1040.0]).count == expected


@pytest.mark.parametrize(("intervals_before", "expected"), [(3, 0), (4, 1)])
def test_libwebrtc_judges_from_the_fifth_interval(intervals_before, expected):
    # The window must hold 5 samples, the judged one included. 5th interval (libwebrtc's own
    # ReportsFreezeMetrics test): floor((4*30 + 1000)/5) = 224 -> bar 672 <= 1000.
    times = with_gap(frames(0.0, intervals_before, 30.0), 1000.0, 0, 30.0)
    assert libwebrtc_freezes(times).count == expected
    assert w3c_freezes(times).count == 1


@pytest.mark.parametrize(("intervals_before", "expected"), [(29, 0), (30, 1)])
def test_ringmaster_judges_only_after_30_intervals(intervals_before, expected):
    times = with_gap(frames(0.0, intervals_before, 40.0), 1000.0, 0, 40.0)
    stats = ringmaster_freezes(times)
    assert stats.count == expected
    assert w3c_freezes(times).count == 1


# --------------------------------------------------------------------------------------------------
# The 30-interval window forgets slow frames
# --------------------------------------------------------------------------------------------------

def slow_then_fast(fast_intervals: int, gap: float) -> list[float]:
    """30 intervals of 100 ms, `fast_intervals` of 20 ms, then `gap`, then 5 more 20 ms intervals."""
    return with_gap(frames(0.0, 29, 100.0) + frames(3000.0, fast_intervals, 20.0), gap, 5, 20.0)


@pytest.mark.parametrize(("rule", "first_detected"), [
    # Preceding 30 = (30-N) x 100 + N x 20: avg 100 - 8N/3. 200 ms is a freeze once avg + 150 <= 200
    # (W3C) or < 200 (Ringmaster), i.e. avg <= 50: N = 18 -> 52 (bar 202), N = 19 -> 49.3 (bar 199.3).
    (w3c_freezes, 19),
    (ringmaster_freezes, 19),
    # libwebrtc averages the 200 in: floor(((29-N) x 100 + N x 20 + 200)/30):
    # N = 19 -> floor(1580/30) = 52 (bar 202), N = 20 -> 1500/30 = 50 (bar 200 <= 200).
    (libwebrtc_freezes, 20),
], ids=RULES.keys())
def test_window_average_decides_a_200ms_gap(rule, first_detected):
    detected = [n for n in range(36) if rule(slow_then_fast(n, 200.0)).count]
    assert detected == list(range(first_detected, 36))


@pytest.mark.parametrize("rule", [w3c_freezes, ringmaster_freezes], ids=["w3c", "ringmaster"])
def test_171ms_gap_needs_every_slow_interval_forgotten(rule):
    # N = 29: avg (100 + 29*20)/30 = 22.7, bar 172.7 > 171; N >= 30: avg 20, bar 170 < 171.
    detected = [n for n in range(36) if rule(slow_then_fast(n, 171.0)).count]
    assert detected == list(range(30, 36))


def test_libwebrtc_never_flags_171ms_at_50fps():
    # Averaging the gap in raises the bar: floor((29*20 + 171)/30) = 25 -> 175 > 171, even at N >= 29.
    assert not any(libwebrtc_freezes(slow_then_fast(n, 171.0)).count for n in range(36))


def test_slow_then_fast_layout():
    times = slow_then_fast(2, 200.0)
    assert times[29:34] == [2900.0, 3000.0, 3020.0, 3040.0, 3240.0]
    assert slow_then_fast(0, 200.0)[29:32] == [2900.0, 3000.0, 3200.0]


# --------------------------------------------------------------------------------------------------
# Pauses
# --------------------------------------------------------------------------------------------------

PAUSED = with_gap(frames(0.0, 49, 40.0), 6000.0, 25, 40.0)


@pytest.mark.parametrize("rule", [w3c_freezes, libwebrtc_freezes], ids=["w3c", "libwebrtc"])
def test_6s_gap_is_a_pause_not_a_freeze(rule):
    stats = rule(PAUSED)
    assert (stats.count, stats.pauses, stats.pause_total_s) == (0, 1, 6.0)
    assert stats.total_s == 0.0


def test_ringmaster_has_no_pauses_so_6s_is_a_freeze():
    stats = ringmaster_freezes(PAUSED)
    assert stats.freezes == (Freeze(1960.0, 7960.0),)
    assert (stats.pauses, stats.pause_total_s) == (0, 0.0)


@pytest.mark.parametrize(("gap", "count", "pauses"), [(5000.0, 1, 0), (5000.5, 0, 1)])
def test_pause_starts_strictly_above_5s(gap, count, pauses):
    stats = w3c_freezes(with_gap(MS40, gap, 5, 40.0))
    assert (stats.count, stats.pauses) == (count, pauses)


def test_pause_does_not_feed_the_average():
    # After the pause the window still holds 30 x 40 ms: W3C bar 190, libwebrtc floor(1360/30) = 45 -> 195,
    # both <= 200. Had the 6 s entered the window the bar would exceed 700. Ringmaster does average it.
    times = with_gap(PAUSED[:51], 200.0, 5, 40.0)
    assert times[49:52] == [1960.0, 7960.0, 8160.0]
    for rule in (w3c_freezes, libwebrtc_freezes):
        stats = rule(times)
        assert stats.freezes == (Freeze(7960.0, 8160.0),)
        assert stats.pauses == 1
    assert ringmaster_freezes(times).freezes == (Freeze(1960.0, 7960.0),)


# --------------------------------------------------------------------------------------------------
# Run end and input validation
# --------------------------------------------------------------------------------------------------

@ALL
def test_run_end_closes_a_trailing_stall(rule):
    assert rule(MS40).count == 0
    stats = rule(MS40, end_ms=2560.0)
    assert stats.freezes == (Freeze(1560.0, 2560.0),)
    assert stats.freeze_time_pct == 100 * 1000 / 2560
    assert rule(MS40, end_ms=1560.0) == rule(MS40)


@ALL
@pytest.mark.parametrize(("times", "end_ms"), [
    ([0.0, 40.0, 30.0], None),
    ([0.0, math.nan, 80.0], None),
    ([0.0, math.inf], None),
    ([0.0, 40.0], 39.0),
    ([0.0, 40.0], math.nan),
])
def test_rejects_bad_input(rule, times, end_ms):
    with pytest.raises(ValueError):
        rule(times, end_ms=end_ms)


@ALL
def test_equal_display_times_are_allowed(rule):
    assert rule([0.0, 40.0, 40.0, 80.0]).count == 0


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------

runs = st.tuples(
    st.floats(0, 1e6),
    st.lists(st.one_of(st.floats(0, 300), st.floats(0, 8000), st.sampled_from([0.0, 33.0, 40.0, 200.0])),
             max_size=120),
    st.one_of(st.none(), st.floats(0, 8000)),
)


@ALL
@settings(max_examples=300, deadline=None)
@given(run=runs)
def test_stats_are_consistent(rule, run):
    start, steps, tail = run
    times = [start]
    for step in steps:
        times.append(times[-1] + step)
    end_ms = None if tail is None else times[-1] + tail
    stats = rule(times, end_ms=end_ms)
    intervals = len(times) - 1 + (tail is not None)

    for value in (stats.count, stats.total_s, stats.mean_s, stats.freeze_time_pct, stats.pauses,
                  stats.pause_total_s):
        assert value >= 0
    assert stats.count == len(stats.freezes)
    assert stats.count + stats.pauses <= intervals
    assert math.isclose(stats.total_s, sum(f.duration_ms for f in stats.freezes) / 1000, abs_tol=1e-9)
    assert math.isclose(stats.mean_s * stats.count, stats.total_s, rel_tol=1e-9, abs_tol=1e-9)
    assert stats.freeze_time_pct <= 100 + 1e-9
    assert all(f.duration_ms >= 150 for f in stats.freezes)
    assert all(a.end_ms <= b.start_ms for a, b in pairwise(stats.freezes))
    if rule is not libwebrtc_freezes:  # libwebrtc reports whole-ms (rounded) times
        timeline = times + ([] if end_ms is None else [end_ms])
        assert set((f.start_ms, f.end_ms) for f in stats.freezes) <= set(pairwise(timeline))
    if rule is ringmaster_freezes:
        assert stats.pauses == 0
    else:
        assert stats.pause_total_s > 5 * stats.pauses or stats.pauses == 0
