"""The `testbed` command: exit codes, messages, and that failures leave nothing half-written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from testbed.cli import main

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[experiment]
name = "cli"
duration_s = 2

[[scheme]]
name = "probe"
kind = "probe"
rate_kbps = 100

[[network]]
name = "plain"
delay_ms = 10
"""


def test_run_writes_results_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "good.toml"
    spec.write_text(GOOD)
    out = tmp_path / "results"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "probe" in printed and "plain" in printed and str(out) in printed
    assert (out / "packets.parquet").is_file() and (out / "summary.csv").is_file()
    # An existing results directory is never clobbered silently.
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert "exists and is not empty (pass --overwrite" in capsys.readouterr().err
    assert main(["run", str(spec), "--out", str(out), "--overwrite", "--seed", "5"]) == 0
    assert "seeds = [\n    5,\n]" in (out / "spec.toml").read_text()


def test_bad_spec_exits_2_with_the_message_and_writes_nothing(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(GOOD.replace('name = "plain"', 'name = "plain"\nloss = { model = "bernoulli", rate = 1.7 }'))
    out = tmp_path / "results"
    result = subprocess.run([sys.executable, "-m", "testbed", "run", str(spec), "--out", str(out)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert f'{spec}: network "plain": loss.rate must be within [0, 1], got 1.7' in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [spec]


def test_bad_trace_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "link.trace"
    trace.write_text("0\n10\nfast\n")
    spec = tmp_path / "spec.toml"
    spec.write_text(GOOD.replace("delay_ms = 10", 'delay_ms = 10\nrate = { trace = "link.trace" }'))
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.replace("\n", "")
    assert f"{trace}:3:" in error and "fast" in error
    assert not (tmp_path / "out").exists()


def test_failure_during_a_run_removes_the_staging_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "good.toml"
    spec.write_text(GOOD)

    def crash(run: object) -> None:
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("testbed.runner.simulate", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(["run", str(spec), "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.toml"]


def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "good.toml"
    spec.write_text(GOOD)
    with pytest.raises(SystemExit) as info:
        main(["run", str(spec), "--backend", "ns3"])
    assert info.value.code == 2


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/test.sh" in ci
    assert "bash scripts/main.sh" in readme
    main_job = (REPO / "scripts" / "main.sh").read_text()
    assert "testbed run experiments/thesis-ge.toml --backend sim" in main_job
    assert "testbed report results/thesis-ge" in main_job
