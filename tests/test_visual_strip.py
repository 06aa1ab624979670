"""The freeze strip: the window around the longest freeze, and pictures re-decoded from the bitstream log."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from testbed.analysis.quality import psnr
from testbed.analysis.visual_strip import CONTEXT_FRAMES, MAX_COLUMNS, worst_freeze_window
from testbed.cli import main
from testbed.codecs.synthetic_video import synthetic_clip
from testbed.codecs.video_source import VideoSource
from testbed.visual_strip import decoded_pictures, render_visual_strip


def frames_with_gap(scheme: str, gap: tuple[int, int] | None, count: int = 40) -> pd.DataFrame:
    """30 fps display times; frames inside `gap` (exclusive bounds) not rendered, its end marked as a freeze."""
    rendered = [gap is None or not gap[0] < i < gap[1] for i in range(count)]
    return pd.DataFrame({
        "scheme": scheme, "network": "net", "video": "v", "seed": 1, "frame_id": range(count),
        "rendered": rendered, "display_ms": [i * 100 / 3 if r else np.nan for i, r in enumerate(rendered)],
        "freeze": [gap is not None and i == gap[1] for i in range(count)],
    })


def test_window_surrounds_the_longest_freeze() -> None:
    frames = pd.concat([frames_with_gap("a", (10, 15)), frames_with_gap("b", (20, 27)), frames_with_gap("c", None)])
    window = worst_freeze_window(frames)
    assert window is not None and window.scheme == "b"
    assert window.freeze_ms == pytest.approx(7 * 100 / 3)
    assert window.frame_ids == tuple(range(20 - CONTEXT_FRAMES, 27 + CONTEXT_FRAMES + 1))
    long = worst_freeze_window(frames_with_gap("a", (5, 35)))
    assert len(long.frame_ids) == MAX_COLUMNS and long.frame_ids[0] == 3 and long.frame_ids[-1] == 37
    assert worst_freeze_window(frames_with_gap("a", None)) is None


def test_strip_shows_the_decoded_pictures_of_every_scheme(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text("""
[experiment]
name = "strip"
duration_s = 6
[[video]]
name = "head"
source = "synthetic:talking-head"
size = [64, 64]
[[scheme]]
name = "nofec"
kind = "vp9"
target_kbps = 150
fec = "none"
[[scheme]]
name = "streaming"
kind = "vp9"
target_kbps = 150
fec = "streaming"
redundancy = 0.5
[[network]]
name = "ge-high"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.75, clock = "frame" }
""")
    results = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(results)]) == 0
    streams = pd.read_parquet(results / "bitstreams.parquet")
    frames = pd.read_parquet(results / "frames.parquet")
    # One encoded frame per rendered frame, nothing else.
    assert len(streams) == int(frames["rendered"].sum())
    # Re-decoding the log gives back exactly the pictures that were scored during the run.
    run = frames[frames["scheme"] == "streaming"].set_index("frame_id")
    wanted = set(run.index[run["rendered"]][:40])
    stream = streams[streams["scheme"] == "streaming"].sort_values("frame_id")
    pictures = decoded_pictures(stream, wanted)
    clip = synthetic_clip("talking-head", (64, 64))
    source = VideoSource(clip, 30, 6)
    assert set(pictures) == wanted
    for frame_id in wanted:
        assert psnr(source.frame(frame_id), pictures[frame_id]) == pytest.approx(run.loc[frame_id, "psnr_db"])
    path = render_visual_strip(results, tmp_path / "out")
    assert path == tmp_path / "out" / "figures" / "visual_strip.png"
    picture = matplotlib.image.imread(path)
    assert picture.shape[0] > 300 and picture.std() > 0.05
