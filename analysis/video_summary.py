"""Frame-level summary of runs: PSNR tail, non-rendered frames, W3C freezes, latency, FEC overhead."""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.analysis.freeze import w3c_freezes
from testbed.analysis.network_summary import AGGREGATE_KEYS, ALL, RUN_KEYS
from testbed.analysis.quality import quantile

VIDEO_COLUMNS = [
    "frames", "psnr_median_db", "psnr_p10_db", "psnr_worst10_mean_db", "ssim_median", "non_rendered_pct",
    "freeze_count", "freeze_total_s", "latency_p50_ms", "latency_p95_ms", "fec_overhead_pct",
]


def worst_mean(values: np.ndarray, fraction: float = 0.1) -> float:
    """Mean of the worst `fraction` of values (at least one value)."""
    if len(values) == 0:
        return float("nan")
    count = max(1, int(np.ceil(len(values) * fraction)))
    return float(np.mean(np.sort(values)[:count]))


def _quality(frames: pd.DataFrame) -> dict[str, float]:
    psnr = frames["psnr_db"].to_numpy(dtype=float)
    latency = frames["latency_ms"].dropna().to_numpy(dtype=float)
    ssim = frames["ssim"].dropna().to_numpy(dtype=float)

    return {
        "frames": len(frames),
        "psnr_median_db": quantile(psnr, 0.5),
        "psnr_p10_db": quantile(psnr, 0.1),
        "psnr_worst10_mean_db": worst_mean(psnr),
        "ssim_median": quantile(ssim, 0.5),
        "non_rendered_pct": 100.0 * float((~frames["rendered"]).mean()) if len(frames) else float("nan"),
        "latency_p50_ms": quantile(latency, 0.5),
        "latency_p95_ms": quantile(latency, 0.95),
    }


def _freezes(frames: pd.DataFrame) -> tuple[int, float]:
    stats = w3c_freezes(frames.loc[frames["rendered"], "display_ms"].sort_values().to_list())
    return stats.count, stats.total_s


def _fec_overhead(packets: pd.DataFrame) -> float:
    media = packets.loc[packets["flow"] == "media", "bytes"].sum()
    fec = packets.loc[packets["flow"] == "fec", "bytes"].sum()
    return 100.0 * float(fec) / float(media) if media else float("nan")


def summarize_video(frames: pd.DataFrame, packets: pd.DataFrame) -> pd.DataFrame:
    """One row per run and one per (scheme, network); aggregates pool frames, freezes are means per run."""
    rows = []
    packets_by_run = {key: group for key, group in packets.groupby(RUN_KEYS, sort=False)}
    per_run_freezes: dict[tuple, tuple[int, float]] = {}
    for key, group in frames.groupby(RUN_KEYS, sort=False):
        per_run_freezes[key] = _freezes(group)
        count, total = per_run_freezes[key]
        run_packets = packets_by_run.get(key, packets.iloc[:0])
        rows.append({"level": "run", **dict(zip(RUN_KEYS, key)), **_quality(group), "freeze_count": count,
                     "freeze_total_s": total, "fec_overhead_pct": _fec_overhead(run_packets)})
    for key, group in frames.groupby(AGGREGATE_KEYS, sort=False):
        runs = [v for k, v in per_run_freezes.items() if k[:2] == key]
        selected = packets[(packets["scheme"] == key[0]) & (packets["network"] == key[1])]
        rows.append({"level": "aggregate", **dict(zip(AGGREGATE_KEYS, key)), "video": ALL, "seed": ALL,
                     **_quality(group), "freeze_count": float(np.mean([c for c, _ in runs])),
                     "freeze_total_s": float(np.mean([t for _, t in runs])),
                     "fec_overhead_pct": _fec_overhead(selected)})
    return pd.DataFrame(rows, columns=["level", *RUN_KEYS, *VIDEO_COLUMNS])
