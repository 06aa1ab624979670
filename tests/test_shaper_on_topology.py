"""The two mininet-backend building blocks together: a run topology whose router forwards only through the
userspace shaper (the router's kernel does not forward), with real UDP sockets in the end-host namespaces."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.emulator.namespaces import ns_exec_argv, topology

pytestmark = pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("ip")),
    reason="needs root and iproute2 to create network namespaces and AF_PACKET sockets",
)

PORT = 40_000
COUNT = 400
RECEIVER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(3.0)
print("READY", flush=True)
try:
    while True:
        data = s.recv(2048)
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        seq, sent = struct.unpack_from("!Id", data)
        print(seq, sent, now, flush=True)
except socket.timeout:
    pass
"""
SENDER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(int(sys.argv[3])):
    s.sendto(struct.pack("!Id", seq, time.clock_gettime(time.CLOCK_MONOTONIC)).ljust(1200, b"\\0"),
             (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.002)
"""


def test_udp_between_host_namespaces_crosses_the_shaper_with_its_delay(tmp_path: Path) -> None:
    with topology() as topo:
        log_path = tmp_path / "shaper.parquet"
        ready = tmp_path / "ready"
        config = {
            "left_if": topo.router_left_if, "right_if": topo.router_right_if, "seed": 1, "log_path": str(log_path),
            "forward": {"delay_s": 0.025}, "reverse": {"delay_s": 0.025}, "ready_file": str(ready),
            "rewrite_macs": {"forward": [topo.receiver_mac, topo.router_right_mac],
                             "reverse": [topo.sender_mac, topo.router_left_mac]},
        }
        (tmp_path / "shaper.json").write_text(json.dumps(config))
        shaper = subprocess.Popen(ns_exec_argv(topo.router_ns, [sys.executable, "-m",
                                                                "testbed.emulator.userspace_shaper",
                                                                tmp_path / "shaper.json"]))
        try:
            deadline = time.monotonic() + 10
            while not ready.exists():
                assert shaper.poll() is None and time.monotonic() < deadline, "shaper did not start"
                time.sleep(0.05)
            receiver = subprocess.Popen(ns_exec_argv(topo.receiver_ns, [sys.executable, "-c", RECEIVER,
                                                                        topo.receiver_ip, PORT]),
                                        stdout=subprocess.PIPE, text=True)
            assert receiver.stdout.readline().strip() == "READY"
            subprocess.run(ns_exec_argv(topo.sender_ns, [sys.executable, "-c", SENDER, topo.receiver_ip, PORT,
                                                         COUNT]), check=True, timeout=30)
            lines = receiver.communicate(timeout=30)[0].split()
        finally:
            shaper.send_signal(signal.SIGTERM)
            shaper.wait(timeout=10)
        assert shaper.returncode == 0
    arrivals = np.array(lines, dtype=float).reshape(-1, 3)
    assert sorted(arrivals[:, 0].astype(int)) == list(range(COUNT))
    # One monotonic clock across namespaces: the one-way delay is the shaper's 25 ms (plus microseconds).
    delay_error_ms = (arrivals[:, 2] - arrivals[:, 1]) * 1000 - 25
    assert delay_error_ms.min() >= 0 and np.percentile(delay_error_ms, 99) <= 2.0
    shaped = pd.read_parquet(log_path)
    forward = shaped[shaped["direction"] == "forward"]
    assert len(forward) == COUNT and forward["drop"].isna().all()
