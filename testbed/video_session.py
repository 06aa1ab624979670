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


def sender_frame_columns(sender: VpxSender) -> dict[str, list]:
    """The sender's half of frames.parquet: what was captured and sent, frame by frame."""
    sent = sender.frames
    return {
        "frame_id": [f.frame_id for f in sent],
        # Milliseconds rounded to the microsecond, as in packets.parquet.
        "capture_ms": [round(f.capture_s * 1000, 3) for f in sent],
        "sent_bytes": [f.sent_bytes for f in sent],
        "keyframe": [f.keyframe for f in sent],
        "resolution": [sender.resolution] * len(sent),
    }


def receiver_frame_columns(scorer: FrameScorer, frame_count: int) -> dict[str, list]:
    """The receiver's half of frames.parquet for `frame_count` slots; slots never decided count as not rendered."""
    while len(scorer.psnr) < frame_count:
        scorer.add(FrameOutcome(len(scorer.psnr), False, False, None))
    scorer.flush_lpips()
    outcomes = [scorer.outcomes[frame_id] for frame_id in range(frame_count)]
    return {
        "frame_id": list(range(frame_count)),
        "decodable": [o.decodable for o in outcomes],
        "rendered": [o.rendered for o in outcomes],
        "shown_frame_id": scorer.shown_id[:frame_count],
        "display_ms": [round(o.display_s * 1000, 3) if o.rendered else None for o in outcomes],
        "psnr_db": scorer.psnr[:frame_count],
        "ssim": scorer.ssim[:frame_count],
        "lpips": scorer.lpips[:frame_count] if scorer.lpips_metric is not None else [None] * frame_count,
    }


def frames_table(sender_columns: dict[str, list], receiver_columns: dict[str, list], scheme: str, network: str,
                 video: str, seed: int) -> pa.Table:
    """Join both halves into the frames.parquet rows of one run, adding latency and freeze marks."""
    if sender_columns["frame_id"] != receiver_columns["frame_id"]:
        raise ValueError(f"sender logged {len(sender_columns['frame_id'])} frames, receiver "
                         f"{len(receiver_columns['frame_id'])}: the halves do not match")
    n = len(sender_columns["frame_id"])
    display_ms = receiver_columns["display_ms"]
    latency_ms = [None if shown is None else round(shown - captured, 3)
                  for shown, captured in zip(display_ms, sender_columns["capture_ms"])]
    freeze_ends = {f.end_ms for f in w3c_freezes([d for d in display_ms if d is not None]).freezes}
    columns = {
        "scheme": [scheme] * n, "network": [network] * n, "video": [video] * n, "seed": [seed] * n,
        **sender_columns,
        **{key: value for key, value in receiver_columns.items() if key != "frame_id"},
        "latency_ms": latency_ms,
        "freeze": _first_frames_at(display_ms, freeze_ends),
    }
    return pa.Table.from_pydict(columns, schema=FRAMES_SCHEMA)


def bitstreams_table(scorer: FrameScorer, codec: str, scheme: str, network: str, video: str, seed: int) -> pa.Table:
    """The bitstreams.parquet rows of one run: what the receiver decoded, frame by frame."""
    n = len(scorer.bitstreams)
    return pa.Table.from_pydict({
        "scheme": [scheme] * n, "network": [network] * n, "video": [video] * n, "seed": [seed] * n,
        "frame_id": [frame_id for frame_id, _ in scorer.bitstreams],
        "codec": [codec] * n,
        "data": [data for _, data in scorer.bitstreams],
    }, schema=BITSTREAMS_SCHEMA)


class VideoSession:
    """Sender, receiver and scorer of one video run.

    With `score_live` (the `sim` backend) each frame is scored as soon as the receiver decides it; without it
    (a wall-clock agent) decided frames are kept and scored after the run, so scoring never delays the receiver.
    """

    def __init__(self, sender: VpxSender, receiver: VpxReceiver, scorer: FrameScorer, score_live: bool = True):
        self.sender = sender
        self.receiver = receiver
        self.scorer = scorer
        self.score_live = score_live
        self._unscored: list[FrameOutcome] = []

    def after_receiver(self) -> None:
        """Collect the frames the receiver decided since the last call (and score them when live)."""
        self._unscored.extend(self.receiver.pop_outcomes())
        if self.score_live:
            self._score()

    def _score(self) -> None:
        for outcome in self._unscored:
            self.scorer.add(outcome)
        self._unscored = []

    def receiver_columns(self) -> dict[str, list]:
        """The receiver's half of frames.parquet, after scoring every frame decided so far."""
        self.after_receiver()
        self._score()
        return receiver_frame_columns(self.scorer, self.scorer.source.frame_count)

    def bitstreams_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table:
        """The bitstreams.parquet rows of this run."""
        return bitstreams_table(self.scorer, self.receiver.codec, scheme, network, video, seed)

    def frames_table(self, scheme: str, network: str, video: str, seed: int) -> pa.Table:
        """The frames.parquet rows of this run."""
        return frames_table(sender_frame_columns(self.sender), self.receiver_columns(), scheme, network, video, seed)
