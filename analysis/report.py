"""`testbed report DIR`: tables, figures and the report documents, computed from a results directory's logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pandas as pd

from testbed.analysis.aggregate import paired_deltas, summarize_deltas, summarize_runs
from testbed.analysis.figures import render_all
from testbed.analysis.lpips import lpips_available
from testbed.analysis.report_document import ReportContent, ReportTable, write_report

Progress = Callable[[int, int, str], None]

_SUMMARY_COLUMNS = {
    "video": ["scheme", "network", "bitrate_kbps", "loss_pct", "psnr_median_db", "psnr_p10_db",
              "psnr_worst10_mean_db", "ssim_median", "non_rendered_pct", "freeze_count", "freeze_total_s",
              "latency_p50_ms", "latency_p95_ms", "fec_overhead_pct"],
    "network": ["scheme", "network", "bitrate_kbps", "achieved_kbps", "loss_pct", "loss_model_pct",
                "queue_drop_pct", "delay_p50_ms", "delay_p95_ms", "delay_max_ms"],
}
_NOTES = (
    "PSNR is computed on RGB over all three channels (shown frame vs the original of the same display slot; "
    "a slot whose frame was not rendered shows the last rendered frame). SSIM is computed on BT.601 luma.",
    "Freezes follow the W3C webrtc-stats rule (an interval >= max(3 x average, average + 150 ms), average of "
    "the last 30 rendered-frame intervals; gaps > 5 s are pauses). Aggregate freeze counts are means per run.",
)
FIGURE_CAPTIONS = {
    "psnr_cdf": "PSNR distribution of every displayed frame, per network.",
    "psnr_box": "PSNR per loss level and scheme (box: 25th-75th percentile, line: median; whiskers: mean +- 1.5 std).",
    "non_rendered": "Frames not rendered, per network and scheme.",
    "time_series": "One run over time: lost packets and Gilbert-Elliott state per frame, non-rendered frames, PSNR.",
    "frame_sizes": "Bytes sent per frame (media + FEC + headers); keyframes marked.",
    "bitrate_sweep": "Mean PSNR (and bitrate sent) against the scheme's target bitrate.",
    "adaptation": "Achieved bitrate, resolution and quality over time of adaptive schemes.",
    "visual_strip": "The longest freeze: original frames against the picture each scheme showed in the same slots "
                    "(re-decoded from the received bitstream), PSNR under each thumbnail.",
}


def _lpips_note(frames: pd.DataFrame) -> str:
    if not frames.empty and frames["lpips"].notna().any():
        return "LPIPS (AlexNet, pure-PyTorch port with the original LPIPS v0.1 weights) was computed for this run."
    available, reason = lpips_available()
    if available:
        return "LPIPS was not computed for this run (enable it with `lpips = true` on the scheme)."
    return f"LPIPS is not available here ({reason}); the lpips column is empty."


def build_report(results_dir: Path, progress: Progress | None = None,
                 extra_figures: dict[str, Path] | None = None) -> dict[str, Path]:
    """Write figures/, tables/*.csv, report.md and report.html into `results_dir`; name -> path written.

    `extra_figures` are figures made elsewhere from the same logs (the visual strip needs a video decoder).
    """
    results_dir = Path(results_dir)
    frames = pd.read_parquet(results_dir / "frames.parquet")
    packets = pd.read_parquet(results_dir / "packets.parquet")
    summary = pd.read_csv(results_dir / "summary.csv")
    aggregate = summary[summary["level"] == "aggregate"]
    kind = "video" if "psnr_median_db" in aggregate and aggregate["psnr_median_db"].notna().any() else "network"
    columns = [c for c in _SUMMARY_COLUMNS[kind] if c in aggregate]
    tables = [ReportTable("summary", "Summary per scheme and network", aggregate[columns],
                          "One row per scheme x network; runs pooled over videos and seeds.")]
    if not frames.empty:
        runs = summarize_runs(frames, packets)
        tables.append(ReportTable("quality", "Quality, freezes and latency (all statistics)",
                                  runs[runs["level"] == "aggregate"].drop(columns=["level", "video", "seed"])))
        deltas = summarize_deltas(paired_deltas(runs[runs["level"] == "run"]))
        if not deltas.empty:
            tables.append(ReportTable("deltas", "Paired differences against the baseline scheme", deltas,
                                      "Same network, video and seed; mean and bootstrap 95 % interval over pairs."))
        tables.append(ReportTable("runs", "Every run", runs[runs["level"] == "run"].drop(columns=["level"])))
    else:
        tables.append(ReportTable("runs", "Every run", summary[summary["level"] == "run"].drop(columns=["level"])))
    figures = {**render_all(results_dir, results_dir, progress), **(extra_figures or {})}
    spec_text = (results_dir / "spec.toml").read_text(encoding="utf-8")
    environment = json.loads((results_dir / "environment.json").read_text(encoding="utf-8"))
    experiment = environment.get("spec", {}).get("path", results_dir.name)
    notes = [*_NOTES, _lpips_note(frames),
             f"Backend: {environment.get('backend', '?')}; testbed {environment.get('testbed_version', '?')}."]
    content = ReportContent(f"Report: {Path(experiment).stem}", tables, figures,
                            {name: FIGURE_CAPTIONS.get(name, "") for name in figures}, notes, spec_text, environment)
    return {**figures, **write_report(content, results_dir)}
