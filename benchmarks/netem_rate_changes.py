"""Rate-change granularity of the netem shaper: how late each scheduled `tc class change ... htb rate` returns.

A schedule of CHANGES steps, STEP_S apart, alternating between two rates, is applied by `NetemShaper` to an
htb class on a veth inside a network namespace this script creates (and always deletes), once per runner:
`ip netns exec NS tc ...` and, when Debian's mnexec is installed, `mnexec -a PID tc ...` (what the mininet
backend uses, PID being a process inside the namespace). The lag of a change is the time `tc` returned
minus its scheduled time. Writes benchmarks/netem_rate_changes.json. Needs root; no traffic leaves the
namespace (UDP load is sent over the veth inside it while the schedule runs).

Run: sudo .venv/bin/python benchmarks/netem_rate_changes.py [--changes 200] [--step-ms 50]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from testbed.emulator.link import LinkParams, RateScheduleParams
from testbed.emulator.netem import NetemShaper, Run, describe_tree, plan_direction

HERE = Path(__file__).resolve().parent
RATES_KBPS = (1000.0, 3000.0)
PEER_MAC = "02:00:00:00:30:02"
LOAD = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    s.sendto(bytes(1000), ("10.202.0.2", 40003))
    time.sleep(0.002)
"""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=20)


def _measure(namespace: str, run: Run, changes: int, step_s: float) -> dict:
    """Install the schedule, apply it under UDP load and summarise the lag of every change."""
    times = np.arange(changes + 1) * step_s
    kbps = np.array([RATES_KBPS[i % 2] for i in range(changes + 1)])
    plan = plan_direction("forward", LinkParams(rate=RateScheduleParams(times, kbps), queue_bytes=20000),
                          entry_host="sender", entry_if="va", bottleneck_if="va")
    empty = plan_direction("reverse", LinkParams(), entry_host="receiver", entry_if="va", bottleneck_if="va")
    shaper = NetemShaper(plan, empty, run)
    shaper.install()
    duration = float(times[-1]) + 1.0
    load = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c", LOAD, str(duration)])
    try:
        shaper.start(time.monotonic() + 0.5)
        time.sleep(duration)
    finally:
        result = shaper.stop()
        load.kill()
        load.wait()
    lags = np.array([r["lag_ms"] for r in result["rate_changes"] if r["error"] is None])
    exec_ms = np.array([(r["returned_s"] - r["issued_s"]) * 1000 for r in result["rate_changes"]])
    wake_ms = np.array([(r["issued_s"] - r["scheduled_s"]) * 1000 for r in result["rate_changes"]])
    return {
        "changes": len(result["rate_changes"]), "failed": result["failed_rate_changes"],
        "lag_ms": {"p50": round(float(np.percentile(lags, 50)), 3), "p99": round(float(np.percentile(lags, 99)), 3),
                   "max": round(float(lags.max()), 3)},
        "tc_exec_ms_p50": round(float(np.median(exec_ms)), 3),
        "wakeup_late_ms_p50": round(float(np.median(wake_ms)), 3),
        "tree": describe_tree(plan),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Measure both runners and write the JSON next to this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    namespace = f"tbnrc{secrets.token_hex(3)}"
    peer = f"{namespace}-b"
    holder = None
    results = {}
    try:
        _ip("netns", "add", namespace)
        _ip("netns", "add", peer)
        _ip("-n", namespace, "link", "add", "name", "va", "type", "veth", "peer", "name", "vb", "netns", peer,
            "address", PEER_MAC)
        _ip("-n", namespace, "addr", "add", "10.202.0.1/30", "dev", "va")
        _ip("-n", peer, "addr", "add", "10.202.0.2/30", "dev", "vb")
        _ip("-n", namespace, "neigh", "replace", "10.202.0.2", "lladdr", PEER_MAC, "dev", "va", "nud", "permanent")
        for ns, dev in ((namespace, "va"), (peer, "vb"), (namespace, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")

        def netns_exec(host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
            return subprocess.run(["ip", "netns", "exec", namespace, *argv], capture_output=True, text=True,
                                  timeout=20)

        results["ip netns exec"] = _measure(namespace, netns_exec, args.changes, args.step_ms / 1000)
        mnexec = shutil.which("mnexec")
        if mnexec is not None:
            # A process living in the namespace, as a Mininet host's shell does.
            holder = subprocess.Popen(["ip", "netns", "exec", namespace, "sleep", "3600"])

            def mnexec_run(host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
                return subprocess.run([mnexec, "-a", str(holder.pid), *argv], capture_output=True, text=True,
                                      timeout=20)

            # drop the first tree: install adds the class anew
            subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "del", "dev", "va", "root"],
                           capture_output=True, timeout=20)
            results["mnexec -a"] = _measure(namespace, mnexec_run, args.changes, args.step_ms / 1000)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        for ns in (namespace, peer):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, timeout=20)
    report = {
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "what": "lag = time `tc class change ... htb rate` returned - its scheduled time (NetemShaper thread)",
        "schedule": {"changes": args.changes, "step_ms": args.step_ms, "rates_kbps": list(RATES_KBPS)},
        "load": "1000-byte UDP every 2 ms over the shaped veth (4 Mbit/s offered)",
        "runners": results,
    }
    (HERE / "netem_rate_changes.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
