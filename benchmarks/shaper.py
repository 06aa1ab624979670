"""Userspace shaper benchmark: the highest offered load it carries with < 0.1 % extra loss, and the
added-delay error at 25 ms configured delay. Writes benchmarks/shaper_results.json. Needs root.

Run: sudo .venv/bin/python benchmarks/shaper.py [--mbps 20,50,80,100] [--seconds 2]
Traffic stays inside the Mininet hosts this script creates (testbed.emulator.mininet_topology).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from testbed.emulator.mininet_topology import topology

HERE = Path(__file__).resolve().parent
PAYLOAD = 1200
PORT = 40_001
RECEIVER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(2.0)
print("READY", flush=True)
rows = []
try:
    while True:
        data = s.recv(2048)
        rows.append((*struct.unpack_from("!Id", data), time.clock_gettime(time.CLOCK_MONOTONIC)))
except socket.timeout:
    pass
sys.stdout.write("\\n".join(f"{a} {b} {c}" for a, b, c in rows))
"""
SENDER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
count, interval = int(sys.argv[3]), float(sys.argv[4])
start = time.clock_gettime(time.CLOCK_MONOTONIC)
for seq in range(count):
    # Sleep, not spin: on 2 cores a spinning sender would starve the shaper and inflate its delay error.
    wait = start + seq * interval - time.clock_gettime(time.CLOCK_MONOTONIC)
    if wait > 0:
        time.sleep(wait)
    s.sendto(struct.pack("!Id", seq, time.clock_gettime(time.CLOCK_MONOTONIC)).ljust(int(sys.argv[5]), b"\\0"),
             (sys.argv[1], int(sys.argv[2])))
print(time.clock_gettime(time.CLOCK_MONOTONIC) - start)  # how long sending took: the load actually offered
"""


def measure(mbps: float, seconds: float, folder: Path) -> dict[str, float]:
    """Offer `mbps` of 1200-byte UDP for `seconds` through a 25 ms shaper; loss and delay-error percentiles."""
    count = int(mbps * 1e6 / (PAYLOAD * 8) * seconds)
    with topology() as topo:
        ready, config = folder / f"ready-{mbps}", folder / f"shaper-{mbps}.json"
        config.write_text(json.dumps({
            "left_if": topo.router_left.interface, "right_if": topo.router_right.interface, "seed": 1,
            "log_path": None, "forward": {"delay_s": 0.025}, "reverse": {"delay_s": 0.025}, "ready_file": str(ready),
            "rewrite_macs": {k: list(v) for k, v in topo.shaper_macs().items()}}))
        shaper = subprocess.Popen(topo.exec_argv("router", [sys.executable, "-m", "testbed.emulator.userspace_shaper",
                                                            config]))
        try:
            while not ready.exists():
                time.sleep(0.05)
            receiver = subprocess.Popen(topo.exec_argv("receiver", [sys.executable, "-c", RECEIVER,
                                                                    topo.receiver.ip, PORT]),
                                        stdout=subprocess.PIPE, text=True)
            receiver.stdout.readline()
            sending_s = float(subprocess.run(topo.exec_argv("sender", [sys.executable, "-c", SENDER, topo.receiver.ip,
                                                                       PORT, count, seconds / count, PAYLOAD]),
                                             check=True, capture_output=True, text=True).stdout)
            rows = np.array(receiver.communicate(timeout=60)[0].split(), dtype=float).reshape(-1, 3)
        finally:
            shaper.send_signal(signal.SIGTERM)
            shaper.wait(timeout=10)
    error_ms = (rows[:, 2] - rows[:, 1]) * 1000 - 25 if len(rows) else np.array([np.nan])
    return {"offered_mbps": mbps, "packets": count, "packets_per_s": round(count / seconds),
            "sent_mbps": round(count * PAYLOAD * 8 / sending_s / 1e6, 1),
            "loss_pct": round(100 * (1 - len(rows) / count), 3),
            **{f"delay_error_p{q}_ms": round(float(np.percentile(error_ms, q)), 3) for q in (50, 99, 99.9)},
            "delay_error_max_ms": round(float(np.max(error_ms)), 3)}


def main() -> None:
    """Measure every rate and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mbps", default="10,20,50,100,200,300,400,600,800")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = []
        for mbps in (float(x) for x in args.mbps.split(",")):
            rows.append(measure(mbps, args.seconds, Path(folder)))
            print(rows[-1])
    carried = [r for r in rows if r["loss_pct"] < 0.1]
    best = max(carried, key=lambda r: r["offered_mbps"]) if carried else None
    results = {"created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "configured_delay_ms": 25, "payload_bytes": PAYLOAD, "seconds_per_rate": args.seconds,
               "rates": rows, "highest_mbps_with_under_0.1pct_loss": best and best["offered_mbps"],
               "highest_packets_per_s_with_under_0.1pct_loss": best and best["packets_per_s"],
               "goal": ">= 50 Mbit/s with p99 delay error <= 1 ms"}
    (HERE / "shaper_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {HERE / 'shaper_results.json'}")


if __name__ == "__main__":
    main()
