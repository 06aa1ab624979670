"""Rebuilds what each scheme showed around the longest freeze, from bitstreams.parquet and the source video."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.analysis.figures import save
from testbed.analysis.visual_strip import StripRow, build_visual_strip, worst_freeze_window
from testbed.codecs.video_source import VideoSource, load_clip
from testbed.codecs.vpx import DecodeError, VpxDecoder


def decoded_pictures(stream: pd.DataFrame, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode a run's rendered frames in order (references need every one) and keep the wanted pictures."""
    pictures: dict[int, np.ndarray] = {}
    if stream.empty:
        return pictures
    decoder = VpxDecoder(str(stream["codec"].iloc[0]))
    last = max(wanted)
    for frame_id, data in zip(stream["frame_id"], stream["data"]):
        if frame_id > last:
            break
        try:
            picture = decoder.decode(data)
        except DecodeError:
            continue  # it decoded during the run; a failure here would only leave a gap in the strip
        if frame_id in wanted:
            pictures[int(frame_id)] = picture
    return pictures


def render_visual_strip(results_dir: Path, out_dir: Path) -> Path | None:
    """Write figures/visual_strip.png for the longest freeze in the results, or None when nothing froze."""
    frames = pd.read_parquet(results_dir / "frames.parquet")
    streams_path = results_dir / "bitstreams.parquet"
    window = worst_freeze_window(frames) if not frames.empty and streams_path.is_file() else None
    if window is None:
        return None
    spec = tomllib.loads((results_dir / "spec.toml").read_text(encoding="utf-8"))
    video = next(v for v in spec["video"] if v["name"] == window.video)
    experiment = spec["experiment"]
    source = VideoSource(load_clip(video["source"], tuple(video["size"])), experiment["fps"],
                         experiment["duration_s"], video.get("loop", "loop"))
    streams = pd.read_parquet(streams_path)
    slots = list(window.frame_ids)
    rows = [StripRow("original", [source.frame(i) for i in slots], [None] * len(slots))]
    black = np.zeros_like(rows[0].pictures[0])
    run = (frames["network"] == window.network) & (frames["video"] == window.video) & (frames["seed"] == window.seed)
    for scheme in frames.loc[run, "scheme"].drop_duplicates():
        shown = frames[run & (frames["scheme"] == scheme)].set_index("frame_id").loc[slots]
        wanted = {int(f) for f in shown["shown_frame_id"].dropna()}
        stream = streams[(streams["scheme"] == scheme) & (streams["network"] == window.network)
                         & (streams["video"] == window.video) & (streams["seed"] == window.seed)]
        pictures = decoded_pictures(stream.sort_values("frame_id"), wanted) if wanted else {}
        rows.append(StripRow(scheme, [pictures.get(int(f), black) if pd.notna(f) else black
                                      for f in shown["shown_frame_id"]], list(shown["psnr_db"])))
    return save(build_visual_strip(window, rows), out_dir / "figures" / "visual_strip.png")
