"""The two mininet-backend building blocks together: Mininet hosts whose router forwards only through the
userspace shaper (the router's kernel does not forward), with real UDP sockets in the end hosts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.emulator.link import Link
from testbed.emulator.link_config import link_params_from_dict
from testbed.emulator.mininet_topology import Topology, topology

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which("mnexec")),
    reason="needs root and Mininet's mnexec to create Mininet hosts and AF_PACKET sockets",
)

PORT = 40_000
RECEIVER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
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
# Prints the payload digest of every datagram it sends, in order.
SENDER = """
import socket, struct, sys, time
from testbed.emulator.payload_digest import payload_digest
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for seq in range(int(sys.argv[3])):
    payload = struct.pack("!Id", seq, time.clock_gettime(time.CLOCK_MONOTONIC)).ljust(1200, b"\\0")
    s.sendto(payload, (sys.argv[1], int(sys.argv[2])))
    print(payload_digest(payload))
    time.sleep(0.002)
"""


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    with topology() as t:
        yield t


@contextmanager
def shaper(topo: Topology, folder: Path, **config) -> Iterator[Path]:
    """Run the userspace shaper in the router host; yields its log path once its sockets are bound."""
    log_path, ready = folder / "shaper.parquet", folder / "ready"
    config = {"left_if": topo.router_left.interface, "right_if": topo.router_right.interface, "seed": 1,
              "log_path": str(log_path), "ready_file": str(ready),
              "rewrite_macs": {k: list(v) for k, v in topo.shaper_macs().items()}, **config}
    (folder / "shaper.json").write_text(json.dumps(config))
    proc = subprocess.Popen(topo.exec_argv("router", [sys.executable, "-m", "testbed.emulator.userspace_shaper",
                                                      folder / "shaper.json"]))
    try:
        while not ready.exists():
            assert proc.poll() is None, "shaper did not start"
            time.sleep(0.02)
        yield log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0


def send(topo: Topology, count: int, timeout: float = 2.0) -> tuple[np.ndarray, list[int]]:
    """`count` 1200-byte datagrams sender -> receiver; (received rows seq/sent/arrived, digests sent)."""
    receiver = subprocess.Popen(topo.exec_argv("receiver", [sys.executable, "-c", RECEIVER, topo.receiver.ip, PORT,
                                                            timeout]), stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "READY"
        sent = subprocess.run(topo.exec_argv("sender", [sys.executable, "-c", SENDER, topo.receiver.ip, PORT,
                                                        count]), check=True, timeout=60, capture_output=True,
                              text=True).stdout.split()
        lines = receiver.communicate(timeout=30)[0].split()
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    return np.array(lines, dtype=float).reshape(-1, 3), [int(d) for d in sent]


def test_udp_between_hosts_crosses_the_shaper_with_its_delay_and_only_through_it(topo: Topology,
                                                                                 tmp_path: Path) -> None:
    nothing, _ = send(topo, 5, timeout=0.5)
    assert len(nothing) == 0  # no shaper, no path: the router's kernel does not forward
    count = 400
    t0 = time.monotonic()  # the run's time origin, shared with the shaper
    with shaper(topo, tmp_path, forward={"delay_s": 0.025}, reverse={"delay_s": 0.025}, start_monotonic=t0):
        arrivals, digests = send(topo, count)
    assert sorted(arrivals[:, 0].astype(int)) == list(range(count))
    # One monotonic clock across hosts: the one-way delay is the shaper's 25 ms (plus microseconds).
    delay_error_ms = (arrivals[:, 2] - arrivals[:, 1]) * 1000 - 25
    assert delay_error_ms.min() >= 0 and np.percentile(delay_error_ms, 99) <= 2.0
    shaped = pd.read_parquet(tmp_path / "shaper.parquet")
    forward = shaped[shaped["direction"] == "forward"].reset_index(drop=True)
    assert forward["drop"].isna().all()
    assert forward["digest"].tolist() == digests  # what was sent, in order, by payload_digest
    assert forward["size"].eq(1200 + 42).all()
    # Times are on the run's clock: each datagram reaches the shaper after it was sent, is due 25 ms later
    # (before the receiver has it) and is sent no earlier. (departed_s is stamped after send() returns,
    # which can be after the receiver's own stamp.)
    by_seq = arrivals[np.argsort(arrivals[:, 0])]
    assert (forward["arrival_s"] >= by_seq[:, 1] - t0).all()
    assert np.allclose(forward["scheduled_s"], forward["arrival_s"] + 0.025)
    assert (forward["scheduled_s"] <= by_seq[:, 2] - t0).all()
    assert (forward["departed_s"] >= forward["scheduled_s"]).all()


def test_stream_key_gives_the_loss_realization_of_a_link_with_that_key(topo: Topology, tmp_path: Path) -> None:
    count, seed = 300, 5
    forward = {"delay_s": 0.005, "loss": {"kind": "bernoulli", "rate": 0.2}}
    with shaper(topo, tmp_path, forward=forward, seed=seed, stream_key=["lossy-net"]):
        arrivals, digests = send(topo, count, timeout=1.0)
    shaped = pd.read_parquet(tmp_path / "shaper.parquet")
    rows = shaped[shaped["direction"] == "forward"].reset_index(drop=True)
    assert rows["digest"].tolist() == digests
    live = [drop if isinstance(drop, str) else None for drop in rows["drop"]]
    params = link_params_from_dict(forward)
    model = Link(params, seed, "lossy-net", "forward")  # what the sim backend builds for network "lossy-net"
    assert live == [model.transmit(1242, 0.001 * i).drop for i in range(count)]
    unkeyed = Link(params, seed, "forward")
    assert live != [unkeyed.transmit(1242, 0.001 * i).drop for i in range(count)]
    delivered = {digests[seq] for seq in arrivals[:, 0].astype(int)}  # the sender prints them in order
    assert delivered == {d for d, drop in zip(digests, live) if drop is None}
    assert 0.1 < live.count("loss") / count < 0.3

