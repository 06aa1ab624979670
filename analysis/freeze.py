"""Video freezes from the display times of rendered frames, under three published rules.

Input is one run's display timestamps (ms, non-decreasing) of the frames that were rendered; frames
that were never rendered simply do not appear. Every rule judges the interval between two
consecutively rendered frames against a moving average of earlier intervals:
``freeze if interval (>= or >) max(3 * avg, avg + 150 ms)``. They differ in the details:

``w3c_freezes`` -- W3C webrtc-stats ``freezeCount``/``totalFreezesDuration``/``pauseCount``
    The spec: a freeze when the interval "is equal or exceeds Max(3 * avg_frame_duration_ms,
    avg_frame_duration_ms + 150), where avg_frame_duration_ms is linear average of durations of last
    30 rendered frames"; a pause when the time since the last rendered frame exceeds 5 s, counted
    when the next frame is rendered. Our reading: the average is over the up-to-30 intervals
    *preceding* the judged one (the judged interval is excluded, so a freeze cannot raise its own
    bar); the first interval has no baseline and is never judged; an interval > 5 s is a pause,
    neither judged nor averaged (the spec is silent on the average; libwebrtc, the implementation
    behind the stat in Chrome, keeps paused intervals out of it).

``libwebrtc_freezes`` -- libwebrtc ``video/video_quality_observer2.cc`` (``OnRenderedFrame``)
    Whole-millisecond timestamps (``Timestamp::ms()`` rounds to nearest); the current interval is
    added to a 30-sample ``MovingAverage`` *before* judging; judging starts once the window holds 5
    samples (``kMinFrameSamplesToDetectFreeze``), i.e. the 5th interval is the first judged; the
    average is an integer rounded down (``GetAverageRoundedDown``); ``>=``. Uncertainty: libwebrtc
    marks a pause when no *packet* arrived for 5 s (``OnStreamInactive``, from the frame-buffer
    timeout of ``VideoReceiveStream2``), which render times alone cannot show; we use the W3C
    render-gap rule (> 5 s) instead, with libwebrtc's handling of the paused interval (not
    averaged, not a freeze).

``ringmaster_freezes`` -- Tambur's analysis of Ringmaster runs (``get_freezes_durations`` in
    Thesys-lab/tambur ``src/plot/plot_common.py``): the average is over exactly the 30 previous
    intervals, so the first 30 intervals are never judged; strict ``>``; no pause notion. Its
    ``fec_only`` filter (judge only frames sent while FEC was on) is not reproduced: every interval
    counts. Its own freeze fraction divides by the judged time; ``freeze_time_pct`` here divides by
    the whole displayed span for all three rules.

``end_ms``, when given, closes the run with one more interval: the last picture stays on screen until
then, so a stall at the end of a run is judged like any other (the standards only judge an interval
when a frame ends it, i.e. ``end_ms=None``). It is ignored when no frame was rendered at all.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

WINDOW_INTERVALS = 30
MIN_INCREASE_MS = 150
PAUSE_MS = 5000
LIBWEBRTC_MIN_SAMPLES = 5


@dataclass(frozen=True)
class Freeze:
    """One frozen interval: from the display of the frame before the gap to that of the frame after."""

    start_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        """Length of the frozen interval in ms."""
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class FreezeStats:
    """Freeze and pause figures of one run under one rule."""

    count: int
    total_s: float
    mean_s: float
    freeze_time_pct: float
    pauses: int
    pause_total_s: float
    freezes: tuple[Freeze, ...]


def _timeline(display_ms: Sequence[float], end_ms: float | None) -> list[float]:
    """Validated display times, with the run's end appended as a closing point."""
    times = [float(t) for t in display_ms]
    if not all(math.isfinite(t) for t in times):
        raise ValueError("display times must be finite")
    if any(b < a for a, b in pairwise(times)):
        raise ValueError("display times must be non-decreasing")
    if end_ms is not None and times:
        if not end_ms >= times[-1]:  # written so that a NaN end is rejected too
            raise ValueError(f"end_ms {end_ms} precedes the last display time {times[-1]}")
        times.append(float(end_ms))
    return times


def _threshold(avg: float) -> float:
    """The freeze bar shared by all three rules."""
    return max(3 * avg, avg + MIN_INCREASE_MS)


def _stats(times: Sequence[float], freezes: list[Freeze], pause_ms: list[float]) -> FreezeStats:
    """Aggregate; means and percentages are 0 when there is nothing to divide by."""
    total_ms = math.fsum(f.duration_ms for f in freezes)
    span_ms = times[-1] - times[0] if times else 0.0
    return FreezeStats(
        count=len(freezes),
        total_s=total_ms / 1000,
        mean_s=total_ms / 1000 / len(freezes) if freezes else 0.0,
        freeze_time_pct=100 * total_ms / span_ms if span_ms > 0 else 0.0,
        pauses=len(pause_ms),
        pause_total_s=math.fsum(pause_ms) / 1000,
        freezes=tuple(freezes),
    )


def w3c_freezes(display_ms: Sequence[float], end_ms: float | None = None) -> FreezeStats:
    """W3C webrtc-stats freezes (>=, average of up to 30 preceding intervals) and pauses (> 5 s)."""
    times = _timeline(display_ms, end_ms)
    window: deque[float] = deque(maxlen=WINDOW_INTERVALS)
    freezes: list[Freeze] = []
    pauses: list[float] = []
    for start, end in pairwise(times):
        gap = end - start
        if gap > PAUSE_MS:
            pauses.append(gap)
            continue
        # fsum keeps exactly representable averages exact, so boundary cases are not decided by rounding.
        if window and gap >= _threshold(math.fsum(window) / len(window)):
            freezes.append(Freeze(start, end))
        window.append(gap)
    return _stats(times, freezes, pauses)


def libwebrtc_freezes(display_ms: Sequence[float], end_ms: float | None = None) -> FreezeStats:
    """libwebrtc VideoQualityObserver: integer ms, current interval averaged in, from the 5th interval."""
    # Timestamp::ms() rounds half up for non-negative times; all arithmetic below is then integer.
    times = [math.floor(t + 0.5) for t in _timeline(display_ms, end_ms)]
    window: deque[int] = deque(maxlen=WINDOW_INTERVALS)
    freezes: list[Freeze] = []
    pauses: list[float] = []
    for start, end in pairwise(times):
        gap = end - start
        if gap > PAUSE_MS:
            pauses.append(gap)
            continue
        window.append(gap)
        if len(window) >= LIBWEBRTC_MIN_SAMPLES and gap >= _threshold(sum(window) // len(window)):
            freezes.append(Freeze(start, end))
    return _stats(times, freezes, pauses)


def ringmaster_freezes(display_ms: Sequence[float], end_ms: float | None = None) -> FreezeStats:
    """Tambur/Ringmaster freezes: > bar over the average of exactly the 30 previous intervals, no pauses."""
    times = _timeline(display_ms, end_ms)
    window: deque[float] = deque(maxlen=WINDOW_INTERVALS)
    freezes: list[Freeze] = []
    for start, end in pairwise(times):
        gap = end - start
        if len(window) == WINDOW_INTERVALS and gap > _threshold(math.fsum(window) / WINDOW_INTERVALS):
            freezes.append(Freeze(start, end))
        window.append(gap)
    return _stats(times, freezes, [])
