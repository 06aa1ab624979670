"""`testbed doctor`: report what this machine offers the testbed (kernel qdiscs, Mininet, libraries)."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from testbed.emulator.mininet_topology import switch_choice
from testbed.emulator.netem import ProbeFailed, probe_qdiscs_in_namespace
from testbed.environment import package_versions

NETEM_CHECK = "kernel qdisc netem"
TBF_CHECK = "kernel qdisc tbf"
NAMESPACE_PREFIX = "tbdoctor-"
CANNOT_PROBE = "cannot probe: "

MIN_PYTHON = (3, 11)

# Minimal valid parameters for each qdisc kind we rely on; only acceptance by the kernel matters.
_QDISC_ARGS: dict[str, list[str]] = {
    NETEM_CHECK: ["netem", "delay", "1ms"],
    TBF_CHECK: ["tbf", "rate", "1mbit", "burst", "32kbit", "latency", "50ms"],
}

@dataclass(frozen=True)
class Check:
    """One doctor finding; ok=False means absent/unavailable, not necessarily an error."""

    name: str
    ok: bool
    detail: str


def check_python() -> Check:
    """Python interpreter version against the project minimum."""
    version = sys.version_info
    text = ".".join(str(part) for part in version[:3])
    wanted = ".".join(str(part) for part in MIN_PYTHON)
    return Check("python", tuple(version[:2]) >= MIN_PYTHON, f"{text} (need >= {wanted})")


def check_cpu() -> Check:
    """CPU cores this process may run on, next to the machine total."""
    total = os.cpu_count()
    # Affinity (cgroups/taskset) is what the emulated hosts will actually get.
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    return Check("cpu cores", bool(usable), f"{usable} usable of {total}")


def check_root() -> Check:
    """Whether we run as root, which namespaces and qdiscs require."""
    euid = os.geteuid()
    detail = "euid 0" if euid == 0 else f"euid {euid} (network namespaces and tc need root)"
    return Check("root", euid == 0, detail)


def check_mininet() -> Check:
    """Mininet's mnexec helper and its Python package (imported, with its version)."""
    mnexec = shutil.which("mnexec")
    try:
        import mininet.net
    except Exception as exc:  # noqa: BLE001 -- any import failure means the backend cannot use it
        package, detail = False, f"python package not importable ({exc})"
    else:
        package, detail = True, f"python package {mininet.net.VERSION}"
    return Check("mininet", package and mnexec is not None, f"{detail}; mnexec {mnexec or 'not on PATH'}")


def check_binary(name: str) -> Check:
    """Whether an executable is on PATH."""
    path = shutil.which(name)
    return Check(name, path is not None, path or "not on PATH")


def check_switch() -> Check:
    """The switch a cross-traffic dumbbell would use: Open vSwitch where usable, else a Linux bridge (brctl)."""
    try:
        choice = switch_choice()
    except ImportError as exc:  # switch_choice imports Mininet for the Linux bridge class
        return Check("switch (cross traffic)", False, f"mininet not importable ({exc})")
    ok = choice == "ovs" or shutil.which("brctl") is not None
    return Check("switch (cross traffic)", ok, choice if ok else f"{choice}; brctl not on PATH (bridge-utils)")


def _unprobed(reason: str) -> list[Check]:
    """A not-ok check per qdisc kind explaining why no probe ran."""
    return [Check(name, False, CANNOT_PROBE + reason) for name in _QDISC_ARGS]


def probe_qdiscs(ip: str | None, tc: str | None, is_root: bool) -> list[Check]:
    """Try each qdisc kind for real on the loopback of a throwaway network namespace."""
    if not is_root:
        return _unprobed("not running as root")
    if ip is None:
        return _unprobed("ip not on PATH")
    if tc is None:
        return _unprobed("tc not on PATH")
    try:
        results = probe_qdiscs_in_namespace(_QDISC_ARGS, ip, tc, NAMESPACE_PREFIX)
    except ProbeFailed as exc:
        return _unprobed(str(exc))
    return [Check(name, ok, detail) for name, (ok, detail) in results.items()]


def check_packages() -> list[Check]:
    """Installed versions of the numeric/video/ML libraries, without importing them."""
    return [Check(label, version is not None, version or "not installed")
            for label, version in package_versions().items()]


def check_gpu() -> Check:
    """NVIDIA GPU presence via device node or nvidia-smi (cheap, unlike initialising torch.cuda)."""
    found = []
    if Path("/dev/nvidia0").exists():
        found.append("/dev/nvidia0")
    if smi := shutil.which("nvidia-smi"):
        found.append(smi)
    return Check("gpu (nvidia)", bool(found), ", ".join(found) or "no /dev/nvidia0, no nvidia-smi")


def collect_checks() -> list[Check]:
    """Run every doctor check and return the findings in display order."""
    root = check_root()
    ip, tc = check_binary("ip"), check_binary("tc")
    qdiscs = probe_qdiscs(shutil.which("ip"), shutil.which("tc"), root.ok)
    return [
        check_python(), check_cpu(), root, check_mininet(), check_switch(), tc, ip, *qdiscs, *check_packages(),
        check_gpu()
    ]


def shaper_choice(checks: list[Check]) -> tuple[str, str]:
    """Which shaper `auto` picks given the checks: ("netem" | "userspace", reason)."""
    netem = next((check for check in checks if check.name == NETEM_CHECK), None)
    if netem is None:
        return "userspace", "netem was not probed"
    if netem.ok:
        return "netem", "kernel accepts the netem qdisc"
    if netem.detail.startswith(CANNOT_PROBE):
        return "userspace", f"netem unusable ({netem.detail})"
    return "userspace", f"kernel has no sch_netem ({netem.detail})"


def print_report(checks: list[Check], console: Console | None = None) -> None:
    """Print the checks as a table followed by the automatic shaper choice."""
    console = console or Console()
    table = Table(title="testbed doctor")
    table.add_column("check")
    table.add_column("status", justify="center")
    table.add_column("detail")
    for check in checks:
        status = Text("✓", style="green") if check.ok else Text("✗", style="yellow")
        # Text (not markup strings) so brackets in tool output are shown verbatim.
        table.add_row(Text(check.name), status, Text(check.detail))
    console.print(table)
    shaper, reason = shaper_choice(checks)
    console.print(Text(f"shaper (auto): {shaper} — {reason}"))


def main() -> int:
    """Entry point for `testbed doctor`; always 0 because absent features are reported, not failures."""
    print_report(collect_checks())
    return 0
