"""Benchmarks of the link models, the sim backend, the VP9 pipeline and the quality metrics (PSNR, SSIM, LPIPS).

Writes benchmarks/results.json. Run: .venv/bin/python benchmarks/run.py [--packets N] [--video-seconds S]
Pinned to one CPU core so the figures mean "per core".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from testbed.analysis.lpips import LpipsMetric, lpips_available
from testbed.analysis.quality import psnr, ssim
from testbed.codecs.video_source import load_clip
from testbed.emulator.link import ConstantRateParams, DeliveryTraceParams, Link, LinkParams
from testbed.emulator.loss import GilbertElliottParams
from testbed.sim import simulate
from testbed.spec import load_spec
from testbed.traces.mahimahi import constant_rate_trace

HERE = Path(__file__).resolve().parent
THESIS_GE = GilbertElliottParams(p=0.068, r=0.852, loss_good=0.04, loss_bad=0.5)


def link_packets_per_second(params: LinkParams, packets: int, interval_s: float) -> float:
    """Push `packets` 1000-byte packets through one link; return packets per wall second."""
    link = Link(params, 1, "bench", "forward")
    transmit = link.transmit
    start = time.perf_counter()
    for i in range(packets):
        transmit(1000, i * interval_s)
    return packets / (time.perf_counter() - start)


def sim_speed(spec_path: Path) -> dict[str, float]:
    """Simulated seconds per wall second over every run of a spec, executed serially."""
    spec = load_spec(spec_path)
    runs = spec.runs()
    start = time.perf_counter()
    packets = sum(simulate(run).packets.num_rows for run in runs)
    wall = time.perf_counter() - start
    simulated = spec.experiment.duration_s * len(runs)
    return {"runs": len(runs), "simulated_s": simulated, "wall_s": round(wall, 3),
            "simulated_s_per_wall_s": round(simulated / wall, 1), "packets": packets,
            "packets_per_wall_s": round(packets / wall)}


PIPELINE_SPEC = """
[experiment]
name = "pipeline-benchmark"
duration_s = {duration_s}

[[video]]
name = "carphone"
source = "sample:carphone"
size = [{size}, {size}]
loop = "pingpong"

[[scheme]]
name = "vp9-streaming"
kind = "vp9"
target_kbps = 300
fec = "streaming"
redundancy = 0.5
ssim = {ssim}

[[network]]
name = "ge-medium"
delay_ms = 50
loss = {{ model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.5, clock = "frame" }}
"""


def pipeline_speed(size: int, ssim: bool, duration_s: int) -> dict[str, float]:
    """Frames per wall second of one full sim run: encode + FEC + network + decode + PSNR (+ SSIM)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spec.toml"
        path.write_text(PIPELINE_SPEC.format(size=size, ssim=str(ssim).lower(), duration_s=duration_s))
        (run,) = load_spec(path).runs()
        simulate(run)  # warm-up: decoding the clip is a one-time cost (cached for later runs of the video)
        walls = []
        for _ in range(3):
            start = time.perf_counter()
            frames = simulate(run).frames.num_rows
            walls.append(time.perf_counter() - start)
    wall = float(np.median(walls))
    fps = frames / wall
    return {"frames": frames, "wall_s_median_of_3": round(wall, 2), "frames_per_s": round(fps, 1),
            "x_real_time_at_30fps": round(fps / 30, 2)}


def quality_metric_speed(size: int, frames: int = 200) -> dict[str, float]:
    """Seconds per 10,000 frames of PSNR + SSIM, and LPIPS frames per second when it can run, on (size x size)
    RGB frames of a real clip vs a degraded copy."""
    clip = load_clip("sample:carphone", (size, size))
    rng = np.random.default_rng(0)
    noisy = np.clip(clip.astype(np.int16) + rng.integers(-6, 7, clip.shape), 0, 255).astype(np.uint8)
    timings = {}
    for name, metric in (("psnr", psnr), ("ssim", ssim)):
        start = time.perf_counter()
        for i in range(frames):
            metric(clip[i % len(clip)], noisy[i % len(clip)])
        timings[f"{name}_s_per_10k_frames"] = round((time.perf_counter() - start) / frames * 10_000, 1)
    timings["psnr+ssim_s_per_10k_frames"] = round(timings["psnr_s_per_10k_frames"]
                                                  + timings["ssim_s_per_10k_frames"], 1)
    available, reason = lpips_available()
    if not available:
        timings["lpips"] = f"not measured: {reason}"
        return timings
    metric = LpipsMetric()
    count = min(32, len(clip))
    metric.batch(clip[:2], noisy[:2])  # warm-up
    start = time.perf_counter()
    metric.batch(clip[:count], noisy[:count])
    timings["lpips_frames_per_s_1_thread"] = round(count / (time.perf_counter() - start), 1)
    return timings


def main() -> None:
    """Run every benchmark and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--video-seconds", type=int, default=20)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)
    # 400 kbps of 1000-byte packets into a 320 kbps link: the queue is always busy and drops a fifth.
    interval = 1000 * 8 / 400_000
    mahimahi_320k = constant_rate_trace(320, 60_000)
    cases = {
        "ge_loss+fifo_6000B+320kbps+delay": LinkParams(delay_s=0.05, loss=THESIS_GE,
                                                       rate=ConstantRateParams(320), queue_bytes=6000),
        "ge_loss+fifo_6000B+mahimahi_320kbps+delay": LinkParams(
            delay_s=0.05, loss=THESIS_GE, rate=DeliveryTraceParams(mahimahi_320k), queue_bytes=6000),
        "delay_only": LinkParams(delay_s=0.05),
    }
    link_results = {}
    for name, params in cases.items():
        rates = [link_packets_per_second(params, args.packets, interval) for _ in range(3)]
        link_results[name] = {"packets": args.packets, "packets_per_s_median_of_3": round(float(np.median(rates)))}
        print(f"{name}: {link_results[name]['packets_per_s_median_of_3']:,} packets/s")
    calibrate = sim_speed(HERE.parent / "experiments" / "calibrate.toml")
    print(f"calibrate.toml on sim: {calibrate['simulated_s_per_wall_s']} simulated s per wall s")
    pipeline = {}
    for size in (256, 512):
        for with_ssim in (False, True):
            name = f"vp9_streaming_{size}x{size}_psnr{'+ssim' if with_ssim else ''}"
            pipeline[name] = pipeline_speed(size, with_ssim, args.video_seconds)
            print(f"{name}: {pipeline[name]['frames_per_s']} frames/s = "
                  f"{pipeline[name]['x_real_time_at_30fps']}x real time")
    metrics = {f"{size}x{size}": quality_metric_speed(size) for size in (256, 512)}
    for name, timing in metrics.items():
        print(f"quality metrics {name}: {timing}")
    results = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu": platform.processor() or platform.machine(), "cores_used": 1},
        "link_models": link_results,
        "sim_calibrate": calibrate,
        "vp9_pipeline": pipeline,
        "quality_metrics": metrics,
        "goals": ["link models >= 200,000 packets/s on one core",
                  "full VP9 pipeline (encode + FEC + network + decode + PSNR) >= 5x real time at 512x512, 30 fps"],
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {HERE / 'results.json'}")


if __name__ == "__main__":
    main()
