"""Tests for `testbed doctor`: shaper choice, the real qdisc probe, namespace cleanup and the report."""

from __future__ import annotations

import importlib.metadata
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rich.console import Console

from testbed import doctor
from testbed.doctor import CANNOT_PROBE, NETEM_CHECK, TBF_CHECK, Check
from testbed.emulator import netem

IP = shutil.which("ip")
TC = shutil.which("tc")
needs_root_and_iproute2 = pytest.mark.skipif(
    os.geteuid() != 0 or IP is None or TC is None,
    reason="real qdisc probe needs root plus the ip and tc binaries",
)


def _namespaces() -> list[str]:
    """Names from `ip netns list` (each line is 'NAME' or 'NAME (id: N)')."""
    assert IP is not None
    out = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class FakeRun:
    """Records subprocess.run argv lists; `fail(argv)` decides per call what to raise or return."""

    def __init__(self, fail: Callable[[list[str]], BaseException | None] = lambda argv: None) -> None:
        self.calls: list[list[str]] = []
        self._fail = fail

    def __call__(self, argv: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # The doctor must never hand a shell string to subprocess, and never wait forever.
        assert isinstance(argv, list), f"expected an argument list, got {argv!r}"
        assert kwargs.get("timeout") and kwargs.get("capture_output") and not kwargs.get("shell")
        self.calls.append(argv)
        error = self._fail(argv)
        if error is not None:
            raise error
        return subprocess.CompletedProcess(argv, 0, "", "")

    def namespace_added(self) -> str:
        """Name passed to the single `ip netns add` call."""
        (name,) = [argv[3] for argv in self.calls if argv[1:3] == ["netns", "add"]]
        return name

    def deleted(self) -> list[str]:
        """Names passed to `ip netns delete`."""
        return [argv[3] for argv in self.calls if argv[1:3] == ["netns", "delete"]]


# --- shaper_choice ---------------------------------------------------------------------------------


def test_shaper_choice_picks_netem_when_kernel_accepts_it() -> None:
    checks = [Check("python", True, "3.11.7"), Check(NETEM_CHECK, True, "accepted")]
    assert doctor.shaper_choice(checks)[0] == "netem"


def test_shaper_choice_falls_back_with_tc_error_in_reason() -> None:
    error = "Error: Specified qdisc kind is unknown."
    checks = [Check(NETEM_CHECK, False, error), Check(TBF_CHECK, True, "accepted")]
    shaper, reason = doctor.shaper_choice(checks)
    assert shaper == "userspace"
    assert "sch_netem" in reason and error in reason


def test_shaper_choice_does_not_blame_kernel_when_probe_could_not_run() -> None:
    shaper, reason = doctor.shaper_choice([Check(NETEM_CHECK, False, CANNOT_PROBE + "not running as root")])
    assert shaper == "userspace"
    assert "not running as root" in reason and "has no sch_netem" not in reason


def test_shaper_choice_without_netem_check_is_userspace() -> None:
    assert doctor.shaper_choice([Check("python", True, "3.11.7")])[0] == "userspace"


# --- real probe on this machine --------------------------------------------------------------------


@pytest.fixture
def independent_namespace() -> Iterator[str]:
    """A namespace of our own, deliberately not named like the doctor's, removed however the test ends."""
    assert IP is not None
    name = f"tbtest-indep-{secrets.token_hex(4)}"
    subprocess.run([IP, "netns", "add", name], capture_output=True, timeout=10, check=True)
    try:
        yield name
    finally:
        subprocess.run([IP, "netns", "delete", name], capture_output=True, timeout=10, check=False)


def _independent_attempt(namespace: str, qdisc: list[str]) -> bool:
    """Whether the kernel takes `qdisc` on lo, via `tc -n` rather than the doctor's `ip netns exec`."""
    assert TC is not None
    argv = [TC, "-n", namespace, "qdisc", "replace", "dev", "lo", "root", *qdisc]
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0


@needs_root_and_iproute2
def test_real_probe_matches_independent_attempt_and_cleans_up(independent_namespace: str) -> None:
    checks = {check.name: check for check in doctor.probe_qdiscs(IP, TC, is_root=True)}

    attempts = [
        (NETEM_CHECK, ["netem", "delay", "1ms"]),
        (TBF_CHECK, ["tbf", "rate", "1mbit", "burst", "32kbit", "latency", "50ms"]),
    ]
    for name, qdisc in attempts:
        check = checks[name]
        assert not check.detail.startswith(CANNOT_PROBE), f"{name}: no definite answer: {check.detail}"
        assert check.ok == _independent_attempt(independent_namespace, qdisc), f"{name}: {check.detail}"
        if not check.ok:
            assert check.detail, "a refused qdisc must carry tc's error"

    # Only our pid's namespaces: a concurrently running doctor may legitimately hold its own.
    ours = f"{doctor.NAMESPACE_PREFIX}{os.getpid()}-"
    assert [name for name in _namespaces() if name.startswith(ours)] == []


@needs_root_and_iproute2
def test_collect_checks_leaves_no_doctor_namespace() -> None:
    names = {check.name for check in doctor.collect_checks()}
    assert {"python", "cpu cores", "root", "mininet", "tc", "ip", NETEM_CHECK, TBF_CHECK} <= names
    assert {"torch", "PyAV", "numpy", "pandas", "pyarrow", "gpu (nvidia)"} <= names
    ours = f"{doctor.NAMESPACE_PREFIX}{os.getpid()}-"
    assert [name for name in _namespaces() if name.startswith(ours)] == []


# --- probe cleanup and failure paths (mocked subprocess) -------------------------------------------


def test_namespace_deleted_when_step_after_add_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(argv: list[str]) -> BaseException | None:
        return None if argv[1:3] in (["netns", "add"], ["netns", "delete"]) else RuntimeError("boom")

    fake = FakeRun(fail)
    monkeypatch.setattr(netem.subprocess, "run", fake)
    with pytest.raises(RuntimeError, match="boom"):
        doctor.probe_qdiscs("/sbin/ip", "/sbin/tc", is_root=True)
    assert fake.deleted() == [fake.namespace_added()]


def test_probe_timeout_is_reported_and_namespace_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(argv: list[str]) -> BaseException | None:
        return subprocess.TimeoutExpired(argv, 10) if "qdisc" in argv else None

    fake = FakeRun(fail)
    monkeypatch.setattr(netem.subprocess, "run", fake)
    checks = doctor.probe_qdiscs("/sbin/ip", "/sbin/tc", is_root=True)
    assert [check.ok for check in checks] == [False, False]
    assert all("timed out" in check.detail for check in checks)
    name = fake.namespace_added()
    assert name.startswith(f"{doctor.NAMESPACE_PREFIX}{os.getpid()}-")
    assert fake.deleted() == [name]


def test_probe_runs_in_namespace_and_reports_success(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun()
    monkeypatch.setattr(netem.subprocess, "run", fake)
    checks = doctor.probe_qdiscs("/sbin/ip", "/sbin/tc", is_root=True)
    assert [(check.name, check.ok) for check in checks] == [(NETEM_CHECK, True), (TBF_CHECK, True)]
    name = fake.namespace_added()
    tc_calls = [argv for argv in fake.calls if "/sbin/tc" in argv]
    assert [argv[:5] for argv in tc_calls] == [["/sbin/ip", "netns", "exec", name, "/sbin/tc"]] * 2
    assert fake.calls[-1] == ["/sbin/ip", "netns", "delete", name]


def test_namespace_names_are_unique(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRun()
    monkeypatch.setattr(netem.subprocess, "run", fake)
    doctor.probe_qdiscs("/sbin/ip", "/sbin/tc", is_root=True)
    doctor.probe_qdiscs("/sbin/ip", "/sbin/tc", is_root=True)
    added = [argv[3] for argv in fake.calls if argv[1:3] == ["netns", "add"]]
    assert len(set(added)) == 2


@pytest.mark.parametrize(
    ("ip", "tc", "is_root", "reason"),
    [
        ("/sbin/ip", "/sbin/tc", False, "not running as root"),
        (None, "/sbin/tc", True, "ip not on PATH"),
        ("/sbin/ip", None, True, "tc not on PATH"),
    ],
)
def test_probe_reports_cannot_probe_without_running_anything(
    monkeypatch: pytest.MonkeyPatch, ip: str | None, tc: str | None, is_root: bool, reason: str
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(netem.subprocess, "run", fake)
    checks = doctor.probe_qdiscs(ip, tc, is_root)
    assert [check.detail for check in checks] == [CANNOT_PROBE + reason] * 2
    assert not any(check.ok for check in checks)
    assert fake.calls == []


# --- other checks and the report -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "ok"),
    [((3, 10, 12, "final", 0), False), ((3, 11, 0, "final", 0), True), ((4, 0, 0, "final", 0), True)],
)
def test_python_version_check(monkeypatch: pytest.MonkeyPatch, version: tuple[Any, ...], ok: bool) -> None:
    monkeypatch.setattr(sys, "version_info", version)
    check = doctor.check_python()
    assert check.ok is ok
    assert check.detail.startswith(".".join(map(str, version[:3])))


def test_missing_package_reported_as_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(dist: str) -> str:
        if dist == "torch":
            raise importlib.metadata.PackageNotFoundError(dist)
        return "1.2.3"

    monkeypatch.setattr(importlib.metadata, "version", version)
    checks = {check.name: check for check in doctor.check_packages()}
    assert checks["torch"] == Check("torch", False, "not installed")
    assert checks["PyAV"] == Check("PyAV", True, "1.2.3")


def test_print_report_renders_every_check_and_shaper_line() -> None:
    checks = [
        Check("python", True, "3.11.7 (need >= 3.11)"),
        Check(NETEM_CHECK, False, "Error: Specified qdisc kind is unknown."),
        Check("odd [bold]name", True, "detail with [brackets]"),
    ]
    console = Console(record=True, width=200)
    doctor.print_report(checks, console)
    text = console.export_text()
    for check in checks:
        assert check.name in text and check.detail in text
    assert "✓" in text and "✗" in text
    expected = "shaper (auto): userspace — kernel has no sch_netem (Error: Specified qdisc kind is unknown.)"
    assert expected in text


def test_main_returns_zero_even_when_things_are_absent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    absent = [Check(NETEM_CHECK, False, CANNOT_PROBE + "not running as root"), Check("mnexec", False, "")]
    monkeypatch.setattr(doctor, "collect_checks", lambda: absent)
    assert doctor.main() == 0
    assert "shaper (auto): userspace" in capsys.readouterr().out


def test_check_mininet_reports_version_mnexec_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    mininet_net = pytest.importorskip("mininet.net", reason="the Python package mininet is not installed")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: "/usr/bin/" + name)

    assert doctor.check_mininet() == Check("mininet", True, f"python package {mininet_net.VERSION}; "
                                                            "mnexec /usr/bin/mnexec")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "mininet.net", None)  # makes `import mininet.net` fail
    check = doctor.check_mininet()
    assert not check.ok
    assert check.detail.startswith("python package not importable (") and check.detail.endswith("mnexec not on PATH")


def test_switch_check_names_the_dumbbell_switch_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "switch_choice", lambda: "linux-bridge (Open vSwitch unusable: ovs-vsctl not found)")
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    check = doctor.check_switch()
    assert not check.ok and "brctl not on PATH" in check.detail and "ovs-vsctl not found" in check.detail
    monkeypatch.setattr(doctor, "switch_choice", lambda: "ovs")
    assert doctor.check_switch() == Check("switch (cross traffic)", True, "ovs")
