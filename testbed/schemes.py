"""Builds a run's session: the scheme's sans-IO sender and receiver, and what logs their frames."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from testbed.analysis.lpips import LpipsMetric
from testbed.codecs.endpoint import Endpoint
from testbed.codecs.probe import ProbeReceiver, ProbeSender
from testbed.codecs.video_source import VideoSource, load_clip
from testbed.codecs.vpx_receiver import VpxReceiver
from testbed.codecs.vpx_sender import VpxSender, VpxSenderConfig
from testbed.spec import ProbeSchemeSpec, Run, VpxSchemeSpec
from testbed.video_session import FrameScorer, VideoSession


@dataclass
class ProbeSession:
    """A probe run: no frames."""

    sender: Endpoint
    receiver: Endpoint

    def after_receiver(self) -> None:
        """Probes have no frame decisions to collect."""

    def frames_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table | None:
        """Probes write no frames."""
        return None

    def bitstreams_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table | None:
        """Probes decode nothing."""
        return None


Session = ProbeSession | VideoSession


@functools.lru_cache(maxsize=1)
def _clip(source: str, size: tuple[int, int]) -> np.ndarray:
    """Decoded clip, kept for the next run of the same video (sweeps run many in a row); read-only."""
    clip = load_clip(source, size)
    clip.flags.writeable = False
    return clip


def _video_source(run: Run) -> VideoSource:
    assert run.video is not None
    clip = _clip(run.video.source, run.video.size)
    return VideoSource(clip, run.experiment.fps, run.experiment.duration_s, run.video.loop)


def build_session(run: Run) -> Session:
    """Create the endpoints (and frame scoring) of the run's scheme."""
    scheme = run.scheme
    if isinstance(scheme, ProbeSchemeSpec):
        return ProbeSession(ProbeSender(scheme.rate_kbps, scheme.packet_bytes, run.experiment.duration_s),
                            ProbeReceiver())
    assert isinstance(scheme, VpxSchemeSpec)
    source = _video_source(run)
    ratio = None if scheme.redundancy == "adaptive" else Fraction(scheme.redundancy).limit_denominator(1000)
    config = VpxSenderConfig(scheme.kind, scheme.target_kbps, scheme.fec, scheme.tau, ratio, scheme.mtu,
                             scheme.keyframe_interval, scheme.keyframe_request == "pli", scheme.retransmissions)
    receiver = VpxReceiver(scheme.kind, scheme.fec, scheme.tau, scheme.deadline_frames,
                           keyframe_requests=scheme.keyframe_request == "pli", nack=scheme.retransmissions)
    lpips = LpipsMetric() if scheme.lpips else None
    return VideoSession(VpxSender(source, config), receiver, FrameScorer(source, scheme.ssim, lpips))
