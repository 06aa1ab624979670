"""A video scheme's run: its endpoints plus the per-frame log (what was sent, shown, and how good it looked)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from testbed.analysis.freeze import w3c_freezes
from testbed.analysis.log_schema import BITSTREAMS_SCHEMA, FRAMES_SCHEMA
from testbed.analysis.lpips import LpipsMetric
from testbed.analysis.quality import psnr, ssim
from testbed.codecs.video_source import VideoSource
from testbed.codecs.vpx_receiver import FrameOutcome, VpxReceiver
from testbed.codecs.vpx_sender import VpxSender

LPIPS_BATCH = 16


class FrameScorer:
    """Scores every display slot in order: the shown picture (last rendered one on a freeze) vs the original.

    Before the first rendered frame the screen is black.
    """

    def __init__(self, source: VideoSource, with_ssim: bool = True, lpips: LpipsMetric | None = None):
        self.source = source
        self.with_ssim = with_ssim
        self.lpips_metric = lpips
        self._lpips_pending: list[tuple[np.ndarray, np.ndarray]] = []  # scored in batches: far faster
        self.lpips: list[float] = []
        height, width = source.frame(0).shape[:2]
        self._shown = np.zeros((height, width, 3), np.uint8)
        self._shown_id: int | None = None
        self.outcomes: dict[int, FrameOutcome] = {}
        self.shown_id: list[int | None] = []
        self.psnr: list[float] = []
        self.ssim: list[float | None] = []
        self.bitstreams: list[tuple[int, bytes]] = []  # (frame id, encoded frame) of every rendered frame

    def add(self, outcome: FrameOutcome) -> None:
        """Score the slot of the next frame in order (outcomes arrive strictly in frame order)."""
        assert outcome.frame_id == len(self.psnr), "outcomes must arrive in frame order"
        if outcome.image is not None:
            self._shown, self._shown_id = outcome.image, outcome.frame_id
            if outcome.bitstream is not None:
                self.bitstreams.append((outcome.frame_id, outcome.bitstream))
        self.outcomes[outcome.frame_id] = FrameOutcome(outcome.frame_id, outcome.complete, outcome.decodable,
                                                      outcome.display_s)  # drop the picture: memory
        original = self.source.frame(outcome.frame_id)
        self.shown_id.append(self._shown_id)
        self.psnr.append(psnr(original, self._shown))
        self.ssim.append(ssim(original, self._shown) if self.with_ssim else None)
        if self.lpips_metric is not None:
            self._lpips_pending.append((original, self._shown))
            if len(self._lpips_pending) >= LPIPS_BATCH:
                self.flush_lpips()

    def flush_lpips(self) -> None:
        """Score the frames still waiting for LPIPS."""
        if self.lpips_metric is not None and self._lpips_pending:
            references, shown = zip(*self._lpips_pending)
            self.lpips.extend(float(v) for v in self.lpips_metric.batch(list(references), list(shown)))
            self._lpips_pending = []


def _first_frames_at(display_ms: list[float | None], instants: set[float]) -> list[bool]:
    """Mark the first frame shown at each instant: frames released together after a recovery share a time."""
    marked, seen = [], set()
    for value in display_ms:
        first = value is not None and value in instants and value not in seen
        if first:
            seen.add(value)
        marked.append(first)
    return marked


class VideoSession:
    """Sender, receiver and scorer of one video run."""

    def __init__(self, sender: VpxSender, receiver: VpxReceiver, scorer: FrameScorer):
        self.sender = sender
        self.receiver = receiver
        self.scorer = scorer

    def after_receiver(self) -> None:
        """Score the frames the receiver decided since the last call."""
        for outcome in self.receiver.pop_outcomes():
            self.scorer.add(outcome)

    def bitstreams_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table:
        """The bitstreams.parquet rows of this run: what the receiver decoded, frame by frame."""
        n = len(self.scorer.bitstreams)
        return pa.Table.from_pydict({
            "scheme": [scheme] * n, "network": [network] * n, "video": [video] * n, "seed": [seed] * n,
            "frame_id": [frame_id for frame_id, _ in self.scorer.bitstreams],
            "codec": [self.receiver.codec] * n,
            "data": [data for _, data in self.scorer.bitstreams],
        }, schema=BITSTREAMS_SCHEMA)

    def frames_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table:
        """The frames.parquet rows of this run; frames never decided by the end count as not rendered."""
        self.after_receiver()
        while len(self.scorer.psnr) < len(self.sender.frames):
            self.scorer.add(FrameOutcome(len(self.scorer.psnr), False, False, None))
        self.scorer.flush_lpips()
        sent = self.sender.frames
        outcomes = [self.scorer.outcomes[f.frame_id] for f in sent]
        # Milliseconds rounded to the microsecond, as in packets.parquet.
        display_ms = [round(o.display_s * 1000, 3) if o.rendered else None for o in outcomes]
        latency_ms = [round((o.display_s - f.capture_s) * 1000, 3) if o.rendered else None
                      for o, f in zip(outcomes, sent)]
        freeze_ends = {f.end_ms for f in w3c_freezes([d for d in display_ms if d is not None]).freezes}
        n = len(sent)
        capture_ms = [round(f.capture_s * 1000, 3) for f in sent]
        columns = {
            "scheme": [scheme] * n, "network": [network] * n, "video": [video] * n, "seed": [seed] * n,
            "frame_id": [f.frame_id for f in sent],
            "capture_ms": capture_ms,
            "sent_bytes": [f.sent_bytes for f in sent],
            "keyframe": [f.keyframe for f in sent],
            "resolution": [self.sender.resolution] * n,
            "decodable": [o.decodable for o in outcomes],
            "rendered": [o.rendered for o in outcomes],
            "shown_frame_id": self.scorer.shown_id[:n],
            "display_ms": display_ms,
            "latency_ms": latency_ms,
            "psnr_db": self.scorer.psnr[:n],
            "ssim": self.scorer.ssim[:n],
            "lpips": self.scorer.lpips[:n] if self.scorer.lpips_metric is not None else [None] * n,
            "freeze": _first_frames_at(display_ms, freeze_ends),
        }
        return pa.Table.from_pydict(columns, schema=FRAMES_SCHEMA)
