"""`testbed report DIR`: tables, figures and the report documents, computed from a results directory's logs."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Callable

import pandas as pd

from testbed.analysis.aggregate import paired_deltas, summarize_deltas, summarize_runs
from testbed.analysis.fidelity import TOLERANCES, compare_backends, fidelity_overview
from testbed.analysis.figures import render_all
from testbed.analysis.lpips import lpips_available
from testbed.analysis.network_summary import ALL, summarize_cross_traffic
from testbed.analysis.report_document import ReportContent, ReportTable, write_report

Progress = Callable[[int, int, str], None]

# The runner stores, next to a mininet run's logs, the packet log of the same spec on the sim backend.
SIM_PACKETS = "sim_packets.parquet"

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


def _setup_note(environment: dict) -> str:
    """Backend and version, and for mininet runs the shaper, why it was chosen and the clock."""
    note = f"Backend: {environment.get('backend', '?')}; testbed {environment.get('testbed_version', '?')}."
    mininet = environment.get("mininet")
    if isinstance(mininet, dict):
        note += f" Shaper: {mininet.get('shaper', '?')} ({mininet.get('shaper_reason', 'no reason recorded')})."
        if mininet.get("clock"):
            note += f" Clock: {mininet['clock']}."
    return note


def _fidelity_table(results_dir: Path, packets: pd.DataFrame, spec: dict, environment: dict) -> ReportTable | None:
    """The mininet-vs-sim comparison when the results directory holds the sim packet log; None otherwise."""
    sim_path = results_dir / SIM_PACKETS
    if not sim_path.exists():
        return None
    comparison = compare_backends(pd.read_parquet(sim_path), packets, float(spec["experiment"]["duration_s"]))
    verdicts = comparison.loc[comparison["seed"] != ALL, "within"]
    shaper = (environment.get("mininet") or {}).get("shaper", "unknown")
    tolerances = "; ".join(f"{metric} {tolerance.describe()}" for metric, tolerance in TOLERANCES.items())
    caption = (
        f"The same spec on the sim backend ({SIM_PACKETS}) against this run's packets (emulated, shaper: "
        f"{shaper}): network metrics per scheme, network and path, packets pooled over seeds; seeds_within "
        f"counts the seeds that passed. Difference = emulated - sim; tolerances (points, ms, kbps, packets): "
        f"{tolerances}, reasons in testbed.analysis.fidelity. Loss by cause is n/a under netem (drops "
        f"unattributed). Per-seed comparisons: {int(verdicts.eq(True).sum())} within, "
        f"{int(verdicts.eq(False).sum())} outside, {int(verdicts.isna().sum())} not comparable; "
        f"tables/fidelity.csv has every row."
    )
    return ReportTable("fidelity", "Fidelity: mininet vs sim", fidelity_overview(comparison), caption,
                       csv=comparison)


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
    spec_text = (results_dir / "spec.toml").read_text(encoding="utf-8")
    environment = json.loads((results_dir / "environment.json").read_text(encoding="utf-8"))
    spec = tomllib.loads(spec_text)
    fidelity = _fidelity_table(results_dir, packets, spec, environment)
    if fidelity is not None:
        tables.append(fidelity)
    cross = summarize_cross_traffic(packets, float(spec["experiment"]["duration_s"]))
    if not cross.empty:
        tables.append(ReportTable("cross_traffic", "Cross traffic on the bottleneck", cross,
                                  "The competing flows of each network (spec key cross_traffic), videos and seeds "
                                  "pooled: rates per run in kbps, loss by cause in %, one-way delay in ms. The "
                                  "summary above counts the schemes' own packets only."))
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
    experiment = environment.get("spec", {}).get("path", results_dir.name)
    notes = [*_NOTES, _lpips_note(frames), _setup_note(environment)]
    content = ReportContent(f"Report: {Path(experiment).stem}", tables, figures,
                            {name: FIGURE_CAPTIONS.get(name, "") for name in figures}, notes, spec_text, environment)
    return {**figures, **write_report(content, results_dir)}
