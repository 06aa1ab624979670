"""Video metrics per run and per (scheme, network), and paired deltas between schemes with bootstrap CIs.

``summarize_runs`` gives one ``run`` row per (scheme, network, video, seed) and one ``aggregate`` row per
(scheme, network) (video and seed ``"all"``), like summary.csv, whose shared columns it reproduces:

- Frame statistics (PSNR, SSIM, LPIPS, latency, non-rendered %) of an aggregate row pool the frames of
  all its runs, as summary.csv does. Percentiles are numpy's linear interpolation; ``pN`` is the N-th
  percentile, so the bad tail is the low percentiles for PSNR / SSIM and the high ones for LPIPS (lower
  is better) and latency. ``psnr_worst10_mean_db`` is the mean of the worst ceil(10 %) of frames.
- PSNR (all frames: a frame not rendered is scored by the picture left on screen) and SSIM in dB are
  capped at ``DB_CAP`` = 100 dB for statistics: identical frames have infinite PSNR, and numpy's
  interpolation between two infinities gives NaN. The cap is monotone, so percentiles below it are
  unchanged; a PSNR above 100 dB takes frames that differ by one level in a handful of samples (one
  sample of a 256x256 RGB frame gives 101 dB). summary.csv keeps inf, so the two agree whenever no frame
  exceeds 100 dB.
- Latency is over rendered frames. Non-rendered frames follow ``~rendered`` unless a mask from
  testbed.analysis.rendering is passed.
- Freezes are computed per run from the display times of rendered frames, by the W3C rule (``freeze_*``,
  as in summary.csv) and libwebrtc's variant (``libwebrtc_freeze_*``), with pauses (gaps > 5 s) from the
  W3C rule; no closing interval at the end of the run (the standards judge an interval only when a
  frame ends it). Aggregate rows hold the mean over runs of every per-run figure, ``freeze_mean_s`` and
  ``freeze_time_pct`` included (a run without freezes contributes 0).
- ``bitrate_kbps`` / ``delivered_kbps`` are per-run means of the 1 s windows of testbed.analysis.bitrate
  (forward flows: media, FEC and retransmissions); aggregate rows hold their mean over the runs that have packets.

``paired_deltas`` pairs each scheme with a baseline scheme on the same (network, video, seed) and
``summarize_deltas`` gives the mean delta per (network, scheme, metric) with a percentile-bootstrap CI
over the paired units (video x seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from testbed.analysis.bitrate import WINDOW_MS, bitrate_windows
from testbed.analysis.freeze import libwebrtc_freezes, w3c_freezes
from testbed.analysis.network_summary import AGGREGATE_KEYS, ALL, RUN_KEYS
from testbed.analysis.quality import quantile, ssim_db
from testbed.analysis.video_summary import worst_mean

DB_CAP = 100.0

QUALITY_COLUMNS = [
    "frames",
    "psnr_median_db", "psnr_p10_db", "psnr_worst10_mean_db", "psnr_p5_db", "psnr_p1_db",
    "ssim_median", "ssim_p10", "ssim_p5", "ssim_p1", "ssim_median_db",
    "lpips_median", "lpips_p95", "lpips_p99",
    "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
    "non_rendered_pct",
]
FREEZE_COLUMNS = [
    "freeze_count", "freeze_total_s", "freeze_mean_s", "freeze_time_pct",
    "libwebrtc_freeze_count", "libwebrtc_freeze_total_s", "libwebrtc_freeze_mean_s", "libwebrtc_freeze_time_pct",
    "pause_count", "pause_total_s",
]
BITRATE_COLUMNS = ["bitrate_kbps", "delivered_kbps"]
SUMMARY_COLUMNS = [*QUALITY_COLUMNS, *FREEZE_COLUMNS, *BITRATE_COLUMNS]

# Paired units: the runs of two schemes that saw the same video and the same loss realization.
UNIT_KEYS = ["network", "video", "seed"]
DELTA_METRICS = (
    "psnr_median_db", "psnr_p10_db", "psnr_worst10_mean_db", "non_rendered_pct", "freeze_count",
    "latency_p95_ms",
)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def capped_db(values: pd.Series) -> np.ndarray:
    """Decibel values with NaN dropped and everything above DB_CAP (inf included) set to DB_CAP."""
    return np.minimum(values.dropna().to_numpy(dtype=float), DB_CAP)


def quality_metrics(frames: pd.DataFrame, non_rendered: pd.Series) -> dict[str, float]:
    """Frame statistics of a group of frames (one run, or the pooled runs of an aggregate)."""
    psnr = capped_db(frames["psnr_db"])
    ssim = frames["ssim"].dropna()
    ssim_values = ssim.to_numpy(dtype=float)
    lpips = frames["lpips"].dropna().to_numpy(dtype=float)
    latency = frames.loc[frames["rendered"].astype(bool), "latency_ms"].dropna().to_numpy(dtype=float)
    return {
        "frames": len(frames),
        "psnr_median_db": quantile(psnr, 0.5),
        "psnr_p10_db": quantile(psnr, 0.1),
        "psnr_worst10_mean_db": worst_mean(psnr),
        "psnr_p5_db": quantile(psnr, 0.05),
        "psnr_p1_db": quantile(psnr, 0.01),
        "ssim_median": quantile(ssim_values, 0.5),
        "ssim_p10": quantile(ssim_values, 0.1),
        "ssim_p5": quantile(ssim_values, 0.05),
        "ssim_p1": quantile(ssim_values, 0.01),
        "ssim_median_db": quantile(capped_db(pd.Series(ssim_db(ssim.to_numpy(dtype=float)))), 0.5),
        "lpips_median": quantile(lpips, 0.5),
        "lpips_p95": quantile(lpips, 0.95),
        "lpips_p99": quantile(lpips, 0.99),
        "latency_p50_ms": quantile(latency, 0.5),
        "latency_p95_ms": quantile(latency, 0.95),
        "latency_p99_ms": quantile(latency, 0.99),
        "non_rendered_pct": 100.0 * float(non_rendered.mean()) if len(frames) else float("nan"),
    }


def freeze_metrics(run_frames: pd.DataFrame) -> dict[str, float]:
    """W3C and libwebrtc freezes and W3C pauses of one run, from the display times of its rendered frames."""
    display = run_frames.loc[run_frames["rendered"].astype(bool), "display_ms"].sort_values().to_list()
    w3c = w3c_freezes(display)
    libwebrtc = libwebrtc_freezes(display)
    return {
        "freeze_count": w3c.count,
        "freeze_total_s": w3c.total_s,
        "freeze_mean_s": w3c.mean_s,
        "freeze_time_pct": w3c.freeze_time_pct,
        "libwebrtc_freeze_count": libwebrtc.count,
        "libwebrtc_freeze_total_s": libwebrtc.total_s,
        "libwebrtc_freeze_mean_s": libwebrtc.mean_s,
        "libwebrtc_freeze_time_pct": libwebrtc.freeze_time_pct,
        "pause_count": w3c.pauses,
        "pause_total_s": w3c.pause_total_s,
    }


def _run_bitrates(packets: pd.DataFrame | None, window_ms: float) -> dict[tuple, dict[str, float]]:
    """Mean windowed total and delivered kbps of every run with forward packets."""
    if packets is None:
        return {}
    windows = bitrate_windows(packets, window_ms)
    means = windows.groupby(RUN_KEYS, sort=False)[["total_kbps", "delivered_kbps"]].mean()
    return {key: {"bitrate_kbps": float(row["total_kbps"]), "delivered_kbps": float(row["delivered_kbps"])}
            for key, row in means.iterrows()}


def summarize_runs(
    frames: pd.DataFrame,
    packets: pd.DataFrame | None = None,
    *,
    non_rendered: pd.Series | None = None,
    window_ms: float = WINDOW_MS,
) -> pd.DataFrame:
    """Tidy table of the module's metrics: a `run` row per run and an `aggregate` row per (scheme, network)."""
    if non_rendered is None:
        non_rendered = ~frames["rendered"].astype(bool)
    elif not non_rendered.index.equals(frames.index):
        raise ValueError("the non_rendered mask must have the index of frames")
    no_bitrate = dict.fromkeys(BITRATE_COLUMNS, float("nan"))
    bitrates = _run_bitrates(packets, window_ms)
    run_rows = []
    for key, run in frames.groupby(RUN_KEYS, sort=False):
        run_rows.append({"level": "run", **dict(zip(RUN_KEYS, key)),
                         **quality_metrics(run, non_rendered[run.index]), **freeze_metrics(run),
                         **bitrates.get(key, no_bitrate)})
    runs = pd.DataFrame(run_rows, columns=["level", *RUN_KEYS, *SUMMARY_COLUMNS])
    per_run_means = runs.groupby(AGGREGATE_KEYS, sort=False)[[*FREEZE_COLUMNS, *BITRATE_COLUMNS]].mean()
    aggregate_rows = []
    for key, group in frames.groupby(AGGREGATE_KEYS, sort=False):
        aggregate_rows.append({"level": "aggregate", **dict(zip(AGGREGATE_KEYS, key)), "video": ALL, "seed": ALL,
                               **quality_metrics(group, non_rendered[group.index]),
                               **per_run_means.loc[key].to_dict()})
    aggregates = pd.DataFrame(aggregate_rows, columns=runs.columns)
    return pd.concat([runs.astype({"seed": object}), aggregates], ignore_index=True)


@dataclass(frozen=True)
class BootstrapCI:
    """Mean of paired deltas with a percentile-bootstrap confidence interval (NaN bounds below 2 units)."""

    units: int
    mean: float
    low: float
    high: float


def bootstrap_mean_ci(
    values: Sequence[float] | np.ndarray,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> BootstrapCI:
    """Mean of `values` and its percentile-bootstrap CI, resampling units with replacement from a fixed seed."""
    data = np.asarray(values, dtype=float)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be within (0, 1), got {confidence}")
    if len(data) == 0:
        return BootstrapCI(0, float("nan"), float("nan"), float("nan"))
    mean = float(np.mean(data))
    if len(data) < 2:
        # One unit has no spread to resample: no interval rather than a degenerate [x, x].
        return BootstrapCI(1, mean, float("nan"), float("nan"))
    # A fresh generator per call makes each CI independent of which other groups were bootstrapped before it.
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return BootstrapCI(len(data), mean, float(low), float(high))


def paired_deltas(
    summary: pd.DataFrame,
    metrics: Sequence[str] = DELTA_METRICS,
    baseline: str | None = None,
) -> pd.DataFrame:
    """Long table of delta = scheme - baseline per paired unit (network, video, seed), scheme and metric.

    Reads the `run` rows of `summarize_runs` (or summary.csv). The baseline defaults to the first scheme
    in the table. Units where either side is missing are left out.
    """
    runs = summary[summary["level"] == "run"]
    unknown = [metric for metric in metrics if metric not in runs.columns]
    if unknown:
        raise ValueError(f"unknown metrics: {', '.join(unknown)}")
    if runs.empty:
        raise ValueError("no run rows to pair")
    schemes = list(runs["scheme"].drop_duplicates())
    baseline = schemes[0] if baseline is None else baseline
    if baseline not in schemes:
        raise ValueError(f"baseline scheme {baseline!r} is not in the table (schemes: {', '.join(schemes)})")
    if runs.duplicated(["scheme", *UNIT_KEYS]).any():
        raise ValueError("more than one run row per (scheme, network, video, seed)")
    base = runs.loc[runs["scheme"] == baseline, [*UNIT_KEYS, *metrics]]
    others = runs.loc[runs["scheme"] != baseline, ["scheme", *UNIT_KEYS, *metrics]]
    paired = others.merge(base, on=UNIT_KEYS, suffixes=("", "@baseline"))
    tables = []
    for metric in metrics:
        value = paired[metric].astype(float)
        baseline_value = paired[f"{metric}@baseline"].astype(float)
        tables.append(pd.DataFrame({
            "network": paired["network"], "video": paired["video"], "seed": paired["seed"],
            "scheme": paired["scheme"], "baseline": baseline, "metric": metric,
            "value": value, "baseline_value": baseline_value, "delta": value - baseline_value,
        }))
    return pd.concat(tables, ignore_index=True)


def summarize_deltas(
    deltas: pd.DataFrame,
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Mean delta and bootstrap CI per (network, scheme, baseline, metric) over units with a defined delta."""
    rows = []
    for (network, scheme, baseline, metric), group in deltas.groupby(
            ["network", "scheme", "baseline", "metric"], sort=False):
        # A NaN delta (e.g. latency of a run that rendered nothing) is no evidence either way.
        ci = bootstrap_mean_ci(group["delta"].dropna().to_numpy(), resamples, confidence, seed)
        rows.append({"network": network, "scheme": scheme, "baseline": baseline, "metric": metric,
                     "units": ci.units, "mean_delta": ci.mean, "ci_low": ci.low, "ci_high": ci.high})
    return pd.DataFrame(rows, columns=["network", "scheme", "baseline", "metric", "units", "mean_delta",
                                       "ci_low", "ci_high"])
