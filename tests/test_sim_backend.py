"""End-to-end probe runs on the sim backend: calibration numbers, shared GE states, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from testbed.runner import run_experiment
from testbed.sim import simulate
from testbed.spec import load_spec

REPO = Path(__file__).resolve().parents[1]

FIFO_SPEC = """
[experiment]
name = "fifo"
duration_s = 60

[[scheme]]
name = "probe-400"
kind = "probe"
rate_kbps = 400
packet_bytes = 1000

[[scheme]]
name = "probe-200"
kind = "probe"
rate_kbps = 200
packet_bytes = 1000

[[network]]
name = "fifo-320k"
delay_ms = 50
rate = { kbps = 320 }
queue = { bytes = 6000 }
"""


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def packets_of(spec_path: Path, out: Path, jobs: int = 1) -> pd.DataFrame:
    run_experiment(load_spec(spec_path), out, jobs=jobs)
    return pq.read_table(out / "packets.parquet").to_pandas()


def test_probe_into_fifo_drops_a_fifth_and_bounds_queueing_delay(tmp_path: Path) -> None:
    packets = packets_of(spec_file(tmp_path, FIFO_SPEC), tmp_path / "out")
    fast = packets[packets["scheme"] == "probe-400"]
    steady = fast[fast["sent_ms"] >= 5000]
    # 400 kbps offered into 320 kbps: a fifth of the packets cannot be carried.
    assert (steady["drop"] == "queue").mean() == pytest.approx(0.20, abs=0.005)
    assert steady["drop"].isin(["queue"]).sum() == steady["drop"].notna().sum()
    serialization_ms = 1000 * 8 / 320
    queueing = fast["arrived_ms"] - fast["sent_ms"] - 50
    assert queueing.max() <= 6000 * 8 / 320 + serialization_ms + 1e-6
    assert queueing.min() == pytest.approx(serialization_ms)
    slow = packets[packets["scheme"] == "probe-200"]
    assert slow["drop"].isna().all() and slow["arrived_ms"].notna().all()
    assert np.allclose(slow["arrived_ms"] - slow["sent_ms"], 50 + serialization_ms)


def test_packet_log_columns_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "out"
    packets = packets_of(spec_file(tmp_path, FIFO_SPEC), out)
    assert list(packets.columns) == ["scheme", "network", "video", "seed", "flow", "seq", "frame_id", "bytes",
                                     "sent_ms", "arrived_ms", "drop", "ge_state"]
    fast = packets[packets["scheme"] == "probe-400"]
    assert list(fast["seq"]) == list(range(len(fast))) and len(fast) == 60 * 50
    assert (fast["video"] == "none").all() and (fast["flow"] == "media").all()
    assert fast["frame_id"].isna().all() and fast["ge_state"].isna().all()
    assert np.allclose(fast["sent_ms"].diff().dropna(), 20.0)
    summary = pd.read_csv(out / "summary.csv")
    row = summary[(summary["level"] == "aggregate") & (summary["scheme"] == "probe-400")].iloc[0]
    assert row["bitrate_kbps"] == pytest.approx(400)
    assert row["achieved_kbps"] == pytest.approx(320, abs=2)
    assert row["loss_pct"] == pytest.approx(row["queue_drop_pct"]) and row["loss_model_pct"] == 0
    assert row["delay_max_ms"] <= 50 + 150 + 25 + 1e-6
    assert {p.name for p in out.iterdir()} == {"spec.toml", "environment.json", "packets.parquet",
                                               "frames.parquet", "bitstreams.parquet", "summary.csv"}
    assert pq.read_table(out / "frames.parquet").num_rows == 0


def test_calibration_ge_loss_matches_the_analytical_rate(tmp_path: Path) -> None:
    spec = load_spec(REPO / "experiments" / "calibrate.toml")
    for run in spec.runs():
        if run.network.forward.loss is None or run.seed != 1:
            continue
        packets = simulate(run).packets.to_pandas()
        expected = run.network.forward.loss.stationary_loss()
        lost = packets["drop"] == "loss"
        # 6000 packets: 4 standard errors (inflated 1.3x for the chain's correlation) is about 1.3 points.
        standard_error = 1.3 * np.sqrt(expected * (1 - expected) / len(packets))
        assert abs(lost.mean() - expected) < 4 * standard_error, run.network.name
        assert (packets["ge_state"] == "bad").mean() == pytest.approx(0.068 / (0.068 + 0.852), abs=0.02)


def test_frame_clock_gives_schemes_the_same_state_per_slot(tmp_path: Path) -> None:
    text = FIFO_SPEC.replace("rate = { kbps = 320 }\nqueue = { bytes = 6000 }",
                             'loss = { model = "gilbert-elliott", p = 0.2, r = 0.3, clock = "frame" }')
    text = text.replace("packet_bytes = 1000\n\n[[scheme]]", "packet_bytes = 300\n\n[[scheme]]")
    packets = packets_of(spec_file(tmp_path, text), tmp_path / "out")
    slot = np.floor(packets["sent_ms"] / (1000 / 30) + 1e-6).astype(int)
    states = packets.assign(slot=slot).groupby(["slot", "scheme"])["ge_state"].agg(lambda s: set(s))
    per_slot = states.unstack("scheme").dropna()
    assert len(per_slot) > 1000
    assert all(len(s) == 1 for s in per_slot["probe-400"]), "state changed inside a slot"
    assert (per_slot["probe-400"] == per_slot["probe-200"]).all()
    assert {"good", "bad"} == set().union(*per_slot["probe-400"])


def test_same_seed_gives_identical_logs_and_jobs_do_not_matter(tmp_path: Path) -> None:
    spec_path = REPO / "experiments" / "calibrate.toml"
    first = packets_of(spec_path, tmp_path / "a")
    again = packets_of(spec_path, tmp_path / "b")
    parallel = packets_of(spec_path, tmp_path / "c", jobs=2)
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(first, parallel)
    assert (tmp_path / "a" / "summary.csv").read_text() == (tmp_path / "c" / "summary.csv").read_text()
    other_seed = first[first["seed"] == 2]["drop"].to_numpy()
    assert not np.array_equal(first[first["seed"] == 1]["drop"].to_numpy(), other_seed)


def test_adding_a_scheme_leaves_other_runs_loss_draws_unchanged(tmp_path: Path) -> None:
    base = FIFO_SPEC.replace("rate = { kbps = 320 }\nqueue = { bytes = 6000 }",
                             'loss = { model = "bernoulli", rate = 0.1 }')
    one = base[: base.index("[[scheme]]\nname = \"probe-200\"")] + base[base.index("[[network]]"):]
    alone = packets_of(spec_file(tmp_path, one), tmp_path / "one")
    both = packets_of(spec_file(tmp_path, base), tmp_path / "both")
    pd.testing.assert_frame_equal(alone, both[both["scheme"] == "probe-400"].reset_index(drop=True))
