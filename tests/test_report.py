"""`testbed report DIR`: works from the logs alone, on a copied directory, and gives the same files twice."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from testbed.cli import main

SPEC = """
[experiment]
name = "report"
duration_s = 3
seeds = [1, 2]

[[video]]
name = "head"
source = "synthetic:talking-head"
size = [64, 64]

[[scheme]]
name = "streaming"
kind = "vp9"
target_kbps = 120
fec = "streaming"
redundancy = 0.5

[[scheme]]
name = "nofec"
kind = "vp9"
target_kbps = 120
fec = "none"

[[network]]
name = "ge-high"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.75, clock = "frame" }
"""

PROBE_SPEC = """
[experiment]
name = "probe-report"
duration_s = 30

[[scheme]]
name = "probe"
kind = "probe"
rate_kbps = 400

[[network]]
name = "fifo"
rate = { kbps = 320 }
queue = { bytes = 6000 }
"""

OUTPUTS = ("report.html", "report.md")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    spec = folder / "spec.toml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(folder / "results")]) == 0
    return folder / "results"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_is_idempotent_and_works_on_a_copy(results: Path, tmp_path: Path) -> None:
    assert main(["report", str(results)]) == 0
    first = snapshot(results)
    assert main(["report", str(results)]) == 0
    assert snapshot(results) == first
    copy = tmp_path / "elsewhere"
    shutil.copytree(results, copy)
    for name in OUTPUTS + ("figures", "tables"):
        target = copy / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(["report", str(copy)]) == 0
    assert snapshot(copy) == first


def test_report_tables_match_the_summary(results: Path) -> None:
    assert main(["report", str(results)]) == 0
    summary = pd.read_csv(results / "summary.csv")
    aggregate = summary[summary["level"] == "aggregate"]
    table = pd.read_csv(results / "tables" / "summary.csv")
    assert list(zip(table["scheme"], table["network"])) == list(zip(aggregate["scheme"], aggregate["network"]))
    assert table["psnr_p10_db"].to_numpy() == pytest.approx(aggregate["psnr_p10_db"].to_numpy())
    deltas = pd.read_csv(results / "tables" / "deltas.csv")
    assert set(deltas["scheme"]) == {"nofec"} and set(deltas["baseline"]) == {"streaming"}
    assert (deltas["units"] == 2).all()
    html = (results / "report.html").read_text()
    markdown = (results / "report.md").read_text()
    # Self-contained: every src is inline data, nothing is linked or fetched.
    assert re.findall(r'src="([a-z]+):', html) == ["data"] * html.count('src="')
    assert "<link" not in html and "url(" not in html
    assert html.count("data:image/png;base64,") == len(list((results / "figures").glob("*.png"))) >= 3
    assert "| streaming | ge-high |" in markdown and "RGB" in html and "LPIPS" in html


def test_probe_only_results_get_a_network_report(tmp_path: Path) -> None:
    spec = tmp_path / "spec.toml"
    spec.write_text(PROBE_SPEC)
    assert main(["run", str(spec), "--out", str(tmp_path / "results")]) == 0
    assert main(["report", str(tmp_path / "results")]) == 0
    table = pd.read_csv(tmp_path / "results" / "tables" / "summary.csv")
    assert list(table.columns[:3]) == ["scheme", "network", "bitrate_kbps"]
    assert table.loc[0, "queue_drop_pct"] == pytest.approx(20, abs=1)


def test_report_of_a_folder_that_is_not_a_results_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a results directory (missing spec.toml" in capsys.readouterr().err


def test_sim_results_have_no_fidelity_section_and_no_shaper(results: Path) -> None:
    assert main(["report", str(results)]) == 0
    html = (results / "report.html").read_text()
    markdown = (results / "report.md").read_text()
    for text in (html, markdown):
        assert "Backend: sim; testbed" in text
        assert "Fidelity" not in text and "Shaper:" not in text
    assert not (results / "tables" / "fidelity.csv").exists()
