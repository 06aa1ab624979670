"""Fidelity check mininet vs sim: exact values on hand-built packet logs, tolerance boundaries, the report section."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.analysis.fidelity import TOLERANCES, Tolerance, compare_backends, fidelity_overview
from testbed.analysis.report import build_report
from testbed.runner import run_experiment
from testbed.spec import load_spec

DURATION_S = 10.0


def packets(loss: int = 50, queue: int = 20, sent: int = 1000, *, delay_shift: float = 0.0, seed: int = 1,
            flow: str = "media", cause: tuple[str, str] = ("loss", "queue"), packet_bytes: int = 1000) -> pd.DataFrame:
    """`sent` packets, the first `loss` dropped by loss and the next `queue` by the FIFO; the rest delivered.

    Delivered delays: 800 at 50 ms, then 60 ms, the last one 75 ms (+ `delay_shift`), so for 884-999 delivered
    packets the linear-interpolated p50 is 50 ms, p95 60 ms and the maximum 75 ms, exactly.
    """
    delivered = sent - loss - queue
    delays = np.full(delivered, 50.0)
    delays[800:] = 60.0
    delays[-1:] = 75.0
    sent_ms = np.arange(sent) * 10.0
    arrived = np.full(sent, np.nan)
    arrived[loss + queue:] = sent_ms[loss + queue:] + delays + delay_shift
    return pd.DataFrame({
        "scheme": "probe", "network": "net", "video": "none", "seed": seed, "flow": flow,
        "seq": np.arange(sent), "frame_id": -1, "bytes": packet_bytes, "sent_ms": sent_ms, "arrived_ms": arrived,
        "drop": [cause[0]] * loss + [cause[1]] * queue + [None] * delivered, "ge_state": None,
    })


def row(table: pd.DataFrame, metric: str, seed: object = 1, path: str = "forward") -> pd.Series:
    selected = table[(table["metric"] == metric) & (table["seed"] == seed) & (table["path"] == path)]
    assert len(selected) == 1
    return selected.iloc[0]


def test_exact_values_of_a_hand_built_pair() -> None:
    table = compare_backends(packets(50, 20), packets(52, 18, delay_shift=1.5), DURATION_S)
    expected = {  # metric: (sim, emulated, tolerance)
        "loss_pct": (7.0, 7.0, 1.0),
        "loss_model_pct": (5.0, 5.2, 0.5),
        "queue_drop_pct": (2.0, 1.8, 1.0),
        "delay_p50_ms": (50.0, 51.5, 2.0),
        "delay_p95_ms": (60.0, 61.5, 2.0),
        "delay_max_ms": (75.0, 76.5, 5.0),
        "achieved_kbps": (744.0, 744.0, 14.88),
        "packets_sent": (1000.0, 1000.0, 10.0),
    }
    assert list(table["metric"].drop_duplicates()) == list(expected)
    for metric, (sim, emulated, tolerance) in expected.items():
        found = row(table, metric)
        assert (found["sim"], found["emulated"], found["tolerance"]) == pytest.approx((sim, emulated, tolerance))
        assert found["difference"] == pytest.approx(emulated - sim)
        assert found["within"] is True
    # One run, forward only: 8 run rows and 8 aggregate rows.
    assert len(table) == 16 and set(table["seed"]) == {1, "all"} and set(table["path"]) == {"forward"}


@pytest.mark.parametrize(("metric", "emulated", "within"), [
    ("loss_model_pct", packets(55, 20), True),  # +0.5 points: on the tolerance
    ("loss_model_pct", packets(56, 20), False),  # +0.6
    ("loss_model_pct", packets(45, 20), True),  # -0.5
    ("queue_drop_pct", packets(50, 30), True),  # +1.0 point
    ("queue_drop_pct", packets(50, 31), False),
    ("loss_pct", packets(50, 10), True),  # 6.0 vs 7.0: -1.0 point
    ("loss_pct", packets(50, 9), False),
    ("delay_p50_ms", packets(delay_shift=2.0), True),
    ("delay_p50_ms", packets(delay_shift=2.001), False),
    ("delay_p95_ms", packets(delay_shift=-2.0), True),
    ("delay_p95_ms", packets(delay_shift=-2.001), False),
    ("delay_max_ms", packets(delay_shift=5.0), True),
    ("delay_max_ms", packets(delay_shift=5.001), False),
    ("packets_sent", packets(sent=1010), True),  # max(2, 1 % of 1000) = 10 packets
    ("packets_sent", packets(sent=1011), False),
    ("achieved_kbps", packets(packet_bytes=1020), True),  # +2 % bytes delivered
    ("achieved_kbps", packets(packet_bytes=1021), False),
])
def test_tolerance_boundaries(metric: str, emulated: pd.DataFrame, within: bool) -> None:
    assert row(compare_backends(packets(), emulated, DURATION_S), metric)["within"] is within


def test_packets_sent_tolerance_has_an_absolute_floor() -> None:
    table = compare_backends(packets(0, 0, sent=100), packets(0, 0, sent=102), DURATION_S)
    assert row(table, "packets_sent")["tolerance"] == 2.0 and row(table, "packets_sent")["within"] is True
    table = compare_backends(packets(0, 0, sent=100), packets(0, 0, sent=103), DURATION_S)
    assert row(table, "packets_sent")["within"] is False


def test_netem_drops_make_loss_by_cause_not_comparable() -> None:
    netem = packets(45, 25, cause=("unattributed", "unattributed"))
    table = compare_backends(packets(50, 20), netem, DURATION_S)
    for metric in ("loss_model_pct", "queue_drop_pct"):
        found = row(table, metric)
        assert found["within"] is None and math.isnan(found["emulated"]) and math.isnan(found["tolerance"])
        assert found["sim"] == pytest.approx(5.0 if metric == "loss_model_pct" else 2.0)
    # Independent realizations: 3 binomial standard errors of the difference, pooled p = 0.07, n = 1000 each.
    loss = row(table, "loss_pct")
    assert loss["tolerance"] == pytest.approx(300 * math.sqrt(0.07 * 0.93 * 2 / 1000))
    assert loss["tolerance"] == pytest.approx(3.4232, abs=1e-4)
    assert loss["within"] is True and loss["difference"] == pytest.approx(0.0)
    # 7.0 vs 10.5 points is within 3 SE at pooled p = 0.0875 (3.79 points); 7.0 vs 11.0 (3.84 points) is not.
    unattributed = ("unattributed", "unattributed")
    assert row(compare_backends(packets(50, 20), packets(80, 25, cause=unattributed), DURATION_S),
               "loss_pct")["within"] is True
    worse = row(compare_backends(packets(50, 20), packets(80, 30, cause=unattributed), DURATION_S), "loss_pct")
    assert worse["tolerance"] == pytest.approx(300 * math.sqrt(0.09 * 0.91 * 2 / 1000)) and worse["within"] is False


def test_aggregate_pools_the_seeds() -> None:
    sim = pd.concat([packets(50, 20, seed=1), packets(50, 20, seed=2)])
    emulated = pd.concat([packets(55, 20, seed=1), packets(45, 20, seed=2), packets(56, 20, seed=3)])
    table = compare_backends(sim, emulated, DURATION_S)
    assert [row(table, "loss_model_pct", seed)["difference"] for seed in (1, 2)] == pytest.approx([0.5, -0.5])
    pooled = row(table, "loss_model_pct", "all")
    # sim has no seed 3: the aggregate pools sim 100 losses of 2000 packets, emulated 156 of 3000.
    assert (pooled["sim"], pooled["emulated"]) == pytest.approx((5.0, 5.2))
    # Achieved kbps of an aggregate is per run: the emulated side pools three runs.
    achieved = row(table, "achieved_kbps", "all")
    assert achieved["sim"] == pytest.approx(744.0)
    assert achieved["emulated"] == pytest.approx(8 * (925 + 935 + 924) * 1000 / (3 * DURATION_S) / 1000)
    # Seed 3 ran only on mininet: compared against nothing, it fails rather than disappearing.
    missing = row(table, "packets_sent", 3)
    assert (missing["sim"], missing["emulated"], missing["within"]) == (0.0, 1000.0, False)
    assert row(table, "loss_pct", 3)["within"] is False and row(table, "delay_p50_ms", 3)["within"] is False
    overview = fidelity_overview(table)
    loss_model = overview[overview["metric"] == "loss_model_pct"].iloc[0]
    assert (loss_model["result"], loss_model["seeds_within"]) == ("pass", "2/3")
    assert overview.loc[overview["metric"] == "packets_sent", "seeds_within"].item() == "2/3"
    assert "seed" not in overview and "within" not in overview


def test_reverse_path_is_compared_separately_and_undefined_delays_are_not_comparable() -> None:
    sim = pd.concat([packets(50, 20), packets(0, 0, sent=100, flow="feedback", packet_bytes=40)])
    # The emulated reverse path lost every feedback packet: no delay on that side, so delays fail there.
    emulated = pd.concat([packets(50, 20), packets(100, 0, sent=100, flow="feedback", packet_bytes=40)])
    table = compare_backends(sim, emulated, DURATION_S)
    assert row(table, "packets_sent", path="reverse")["sim"] == 100.0
    assert row(table, "loss_pct", path="reverse")["within"] is False
    delay = row(table, "delay_p50_ms", path="reverse")
    assert delay["sim"] == pytest.approx(50.0) and math.isnan(delay["emulated"]) and delay["within"] is False
    assert row(table, "loss_pct", path="forward")["within"] is True
    # Both sides lost everything: no delay anywhere is "not comparable", not a pass.
    nothing = packets(100, 0, sent=100, flow="feedback")
    both = compare_backends(nothing, nothing, DURATION_S)
    assert row(both, "delay_max_ms", path="reverse")["within"] is None
    assert row(both, "loss_pct", path="reverse")["within"] is True


def test_tolerance_rule() -> None:
    rule = Tolerance(2.0, relative=0.01)
    assert (rule.allowed(100.0), rule.allowed(1000.0), rule.allowed(-1000.0)) == (2.0, 10.0, 10.0)
    assert Tolerance(1.0, sigmas=3.0).allowed(5.0, standard_error=0.5) == 1.5
    assert TOLERANCES["packets_sent"].describe() == "max(2, 1 % of sim)"
    assert TOLERANCES["achieved_kbps"].describe() == "2 % of sim"


PROBE_SPEC = """
[experiment]
name = "fidelity"
duration_s = 4
seeds = [1, 2]

[[scheme]]
name = "probe"
kind = "probe"
rate_kbps = 400

[[network]]
name = "ge-fifo"
delay_ms = 20
rate = { kbps = 320 }
queue = { bytes = 6000 }
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.5 }
"""


@pytest.fixture(scope="module")
def mininet_like_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sim results directory dressed as a mininet run; sim_packets.parquet is added by each test."""
    folder = tmp_path_factory.mktemp("fidelity")
    (folder / "spec.toml").write_text(PROBE_SPEC)
    run_experiment(load_spec(folder / "spec.toml"), folder / "results")
    results = folder / "results"
    environment = json.loads((results / "environment.json").read_text())
    environment["backend"] = "mininet"
    environment["mininet"] = {"shaper": "userspace", "shaper_reason": "kernel has no sch_netem (test)",
                              "clock": "CLOCK_MONOTONIC", "topology": {}, "netem": None}
    (results / "environment.json").write_text(json.dumps(environment))
    return results


def test_report_section_with_the_sim_log(mininet_like_results: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(mininet_like_results, results)
    emulated = pd.read_parquet(results / "packets.parquet")
    assert (emulated["drop"] == "loss").any() and (emulated["drop"] == "queue").any()
    # sim 3 ms faster than "mininet": p50 and p95 fail (2 ms), the maximum passes (5 ms), losses pass.
    sim = emulated.assign(arrived_ms=emulated["arrived_ms"] - 3.0)
    sim.to_parquet(results / "sim_packets.parquet")
    build_report(results)
    html = (results / "report.html").read_text()
    markdown = (results / "report.md").read_text()
    for text in (html, markdown):
        assert "Fidelity: mininet vs sim" in text
        assert "Shaper: userspace (kernel has no sch_netem (test))" in text
        assert "shaper: userspace" in text and "delay_p50_ms 2" in text
    overview = pd.read_csv(results / "tables" / "fidelity.csv")
    assert list(overview.columns) == ["scheme", "network", "seed", "path", "metric", "sim", "emulated",
                                      "difference", "tolerance", "within"]
    assert set(overview["seed"].astype(str)) == {"1", "2", "all"}
    forward = overview[overview["path"] == "forward"].set_index(["seed", "metric"])["within"]
    assert not forward.loc[(slice(None), ["delay_p50_ms", "delay_p95_ms"])].any()
    assert forward.loc[(slice(None), ["loss_pct", "loss_model_pct", "queue_drop_pct", "delay_max_ms",
                                      "achieved_kbps", "packets_sent"])].all()
    assert "| probe | ge-fifo | forward | delay_p50_ms | " in markdown
    shown = [line for line in markdown.splitlines() if line.startswith("| probe | ge-fifo | forward |")]
    marks = {line.split(" | ")[3]: line.split(" | ")[-2] for line in shown}
    assert marks["delay_p50_ms"] == "FAIL" and marks["delay_max_ms"] == "pass" and marks["loss_pct"] == "pass"
    assert 'id="fidelity"' in html and "FAIL" in html


def test_no_section_without_the_sim_log(mininet_like_results: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(mininet_like_results, results)
    build_report(results)
    assert "Fidelity" not in (results / "report.html").read_text()
    assert "Fidelity" not in (results / "report.md").read_text()
    assert not (results / "tables" / "fidelity.csv").exists()


def test_cross_traffic_flows_are_their_own_paths() -> None:
    sim = pd.concat([packets(50, 20), packets(0, 100, sent=500, flow="cross-1"), packets(0, 0, sent=50, flow="cross-2")])
    emulated = pd.concat([packets(50, 20), packets(0, 150, sent=500, flow="cross-1"),
                          packets(0, 0, sent=50, flow="cross-2")])
    table = compare_backends(sim, emulated, DURATION_S)
    assert set(table["path"]) == {"forward", "cross-1", "cross-2"}  # no cross packet counted as feedback
    assert row(table, "packets_sent")["sim"] == 1000.0  # the scheme's own path holds only its packets
    queue = row(table, "queue_drop_pct", path="cross-1")
    assert (queue["sim"], queue["emulated"], queue["within"]) == (20.0, 30.0, False)
    assert row(table, "queue_drop_pct", path="cross-2")["within"] is True
