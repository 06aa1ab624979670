"""summary.csv: network columns for every run, frame columns for video runs, one row per run and aggregate."""

from __future__ import annotations

import pandas as pd

from testbed.analysis.network_summary import RUN_KEYS, summarize_network
from testbed.analysis.video_summary import summarize_video


def summarize(packets: pd.DataFrame, frames: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """The summary table of a results directory."""
    network = summarize_network(packets, duration_s)
    if frames.empty:
        return network
    video = summarize_video(frames, packets)
    return network.merge(video, on=["level", *RUN_KEYS], how="left")


def with_run_status(summary: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """Add `status` ("ok" / "failed") and `error` columns, with one row per failed run (no metrics)."""
    summary = summary.assign(status="ok", error="")
    if failures.empty:
        return summary
    failed = failures.assign(level="run")[["level", *RUN_KEYS, "status", "error"]]
    return pd.concat([summary, failed], ignore_index=True)
