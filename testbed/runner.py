"""Runs every combination of a spec on a backend and writes the results directory atomically."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from testbed.analysis.log_schema import BITSTREAMS_SCHEMA, FRAMES_SCHEMA, PACKETS_SCHEMA
from testbed.analysis.lpips import default_weights_path, lpips_available
from testbed.analysis.network_summary import RUN_KEYS
from testbed.analysis.summary import summarize, with_run_status
from testbed.codecs.video_source import VideoError, load_clip
from testbed.environment import describe_environment
from testbed.mininet_backend import CLOCK, RunFailed, choose_shaper, run_on_mininet
from testbed.sim import RunOutput, simulate
from testbed.spec import Run, Spec
from testbed.spec_table import SpecError

BACKENDS = ("sim", "mininet")
FAILED_RUNS_FILE = "failed_runs.csv"


class OutputDirError(RuntimeError):
    """The output directory cannot be used."""


def _run_dir_name(run: Run) -> str:
    return f"{run.scheme.name}--{run.network.name}--{run.video_name}--seed{run.seed}"


def _execute_mininet(spec: Spec, runs: list[Run], staging: Path, on_done: Callable[[Run], None]
                     ) -> tuple[list[RunOutput], pd.DataFrame, dict[str, Any]]:
    """Run each run on its own topology, one at a time (real time); a failed run is recorded and skipped."""
    shaper = choose_shaper(spec.mininet.shaper, spec)
    outputs, failures, details = [], [], {}
    for run in runs:
        name = _run_dir_name(run)
        try:
            output, details[name] = run_on_mininet(run, staging / "agents" / name, shaper)
            outputs.append(output)
        except RunFailed as error:
            failures.append({"scheme": run.scheme.name, "network": run.network.name, "video": run.video_name,
                             "seed": run.seed, "status": "failed", "error": str(error)})
        on_done(run)
    environment = {"mininet": {"shaper": shaper.kind, "shaper_reason": shaper.reason, "clock": CLOCK,
                               "runs": details}}
    return outputs, pd.DataFrame(failures, columns=[*RUN_KEYS, "status", "error"]), environment


def _execute(runs: list[Run], jobs: int, on_done: Callable[[Run], None]) -> list[RunOutput]:
    """Simulate every run; results come back in run order whatever the number of jobs."""
    if jobs <= 1 or len(runs) <= 1:
        outputs = []
        for run in runs:
            outputs.append(simulate(run))
            on_done(run)
        return outputs
    results: list[RunOutput | None] = [None] * len(runs)
    # spawn: forking a process that runs a progress-bar thread can deadlock.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(simulate, run): index for index, run in enumerate(runs)}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            on_done(runs[index])
    return [r for r in results if r is not None]


def _concat(tables: list[pa.Table | None], schema: pa.Schema) -> pa.Table:
    present = [table for table in tables if table is not None]
    return pa.concat_tables(present) if present else schema.empty_table()


def _check_models(spec: Spec) -> dict[str, dict[str, str]]:
    """Fail early when a scheme asks for LPIPS that cannot run here; describe the weights that will be used."""
    if not any(getattr(scheme, "lpips", False) for scheme in spec.schemes):
        return {}
    available, reason = lpips_available()
    if not available:
        raise SpecError(f"{spec.source}: a scheme sets lpips = true, but LPIPS cannot run here: {reason}")
    weights = default_weights_path()
    return {"lpips": {"model": "LPIPS v0.1, AlexNet (pure-PyTorch port)", "weights": str(weights),
                      "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}}


def _check_videos(spec: Spec) -> None:
    """Open every video once before anything is written, so a bad one fails early and clearly."""
    for video in spec.videos:
        try:
            load_clip(video.source, video.size)
        except VideoError as error:
            raise SpecError(f'{spec.source}: video "{video.name}": {error}') from None


def run_experiment(spec: Spec, out_dir: Path, *, backend: str = "sim", jobs: int = 1, overwrite: bool = False,
                   on_start: Callable[[int], None] = lambda total: None,
                   on_done: Callable[[Run], None] = lambda run: None) -> pd.DataFrame:
    """Run the spec and write spec.toml, environment.json, packets/frames/bitstreams.parquet and summary.csv."""
    if backend not in BACKENDS:
        raise OutputDirError(f"backend {backend!r} is not available; choose one of {', '.join(BACKENDS)}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())) and not overwrite:
        raise OutputDirError(f"{out_dir}: exists and is not empty (pass --overwrite to replace it)")
    _check_videos(spec)
    models = _check_models(spec)
    runs = spec.runs()
    on_start(len(runs))
    staging = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        (staging / "spec.toml").write_text(spec.to_toml(), encoding="utf-8")
        extra: dict[str, Any] = {"models": models}
        failures = pd.DataFrame(columns=[*RUN_KEYS, "status", "error"])
        if backend == "mininet":
            outputs, failures, mininet = _execute_mininet(spec, runs, staging, on_done)
            extra.update(mininet)
            # The same spec on `sim`, for the fidelity check in the report.
            reference = _execute(runs, jobs, lambda run: None)
            pq.write_table(_concat([o.packets for o in reference], PACKETS_SCHEMA), staging / "sim_packets.parquet")
        else:
            outputs = _execute(runs, jobs, on_done)
        environment = describe_environment(backend, spec.source, spec.input_files, jobs, extra)
        (staging / "environment.json").write_text(json.dumps(environment, indent=2) + "\n", encoding="utf-8")
        packets = _concat([o.packets for o in outputs], PACKETS_SCHEMA)
        pq.write_table(packets, staging / "packets.parquet")
        frames = _concat([o.frames for o in outputs], FRAMES_SCHEMA)
        pq.write_table(frames, staging / "frames.parquet")
        pq.write_table(_concat([o.bitstreams for o in outputs], BITSTREAMS_SCHEMA), staging / "bitstreams.parquet")
        summary = summarize(packets.to_pandas(), frames.to_pandas(), spec.experiment.duration_s)
        summary = with_run_status(summary, failures)
        summary.to_csv(staging / "summary.csv", index=False, float_format="%.4f")
        if out_dir.exists():
            shutil.rmtree(out_dir) if out_dir.is_dir() else out_dir.unlink()
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
