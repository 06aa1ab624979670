"""The userspace shaper, for real: three namespaces (sender, router, receiver), two veth pairs, UDP probes.

Needs root and `ip`; skipped otherwise. Every namespace carries a unique `tbsh<hex>-` prefix and is deleted
in the fixture teardown. Set TESTBED_SHAPER_BENCH=1 to also run the (slow, informational) throughput probe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from testbed.emulator.link import BernoulliParams, ConstantRateParams, Link, LinkParams
from testbed.emulator.link_config import link_params_from_dict
from testbed.emulator.payload_digest import payload_digest
from testbed.emulator.userspace_shaper import LOG_COLUMNS, MacRewrite, ShaperLog, _classify

PYTHON = sys.executable
FRAME_OVERHEAD = 14 + 20 + 8  # Ethernet + IPv4 + UDP
PAYLOAD = 1200
PORT = 45000

_why_not = None
if not sys.platform.startswith("linux"):
    _why_not = "network namespaces need Linux"
elif os.geteuid() != 0:
    _why_not = "needs root to create network namespaces and AF_PACKET sockets"
elif shutil.which("ip") is None:
    _why_not = "iproute2 `ip` is not installed"

real = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

PROBE = textwrap.dedent(r'''
    import socket, struct, sys, time, numpy as np
    from testbed.emulator.payload_digest import payload_digest
    mode = sys.argv[1]
    if mode == "recv":
        bind, port, out, ready, idle = sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], float(sys.argv[6])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((bind, port))
        open(ready, "w").write("ok")
        s.settimeout(30.0)
        rows = []
        first = True
        while True:
            try:
                data = s.recv(65535)
            except socket.timeout:
                break
            t = time.monotonic()
            seq, sent = struct.unpack_from("!Qd", data)
            if seq == 0xFFFFFFFFFFFFFFFF:
                s.settimeout(idle)   # end marker: wait out whatever is still in flight
                continue
            rows.append((seq, sent, t))
        np.save(out, np.array(rows, dtype=np.float64).reshape(-1, 3))
    else:
        dst, port, n, pps, size, out = (sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]),
                                        int(sys.argv[6]), sys.argv[7])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        pad = bytes(size - 16)
        gap = 1.0 / pps
        start = time.monotonic() + 0.01
        mono = time.monotonic
        digests = []
        for seq in range(n):
            due = start + seq * gap
            now = mono()
            if due > now:
                time.sleep(due - now)  # no spinning: leave the CPU to the shaper (send time is stamped below)
            payload = struct.pack("!Qd", seq, mono()) + pad
            s.sendto(payload, (dst, port))
            digests.append(payload_digest(payload))
        np.save(out, np.array(digests, dtype=np.int64))
        for _ in range(3):
            s.sendto(struct.pack("!Qd", 0xFFFFFFFFFFFFFFFF, mono()) + pad[:16], (dst, port))
            time.sleep(0.01)
''')


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", ns, *args] if ns else list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


class Topology:
    """sender (10.77.x.1) -- [r-s | router | r-d] -- receiver (10.77.x.2), one subnet, static neighbours."""

    def __init__(self, tmp: Path):
        tag = uuid.uuid4().hex[:6]
        self.prefix = f"tbsh{tag}"
        self.s, self.r, self.d = f"{self.prefix}-s", f"{self.prefix}-r", f"{self.prefix}-d"
        self.tmp = tmp
        octet = int(tag[:2], 16)
        self.src_ip, self.dst_ip = f"10.77.{octet}.1", f"10.77.{octet}.2"
        self.probe_script = tmp / "probe.py"
        self.probe_script.write_text(PROBE)

    def up(self) -> None:
        for ns in (self.s, self.r, self.d):
            _ip("ip", "netns", "add", ns)
            for key in ("all", "default"):
                _ip("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", ns=ns, check=False)
        _ip("ip", "link", "add", "eth0", "netns", self.s, "type", "veth", "peer", "name", "r-s", "netns", self.r)
        _ip("ip", "link", "add", "eth0", "netns", self.d, "type", "veth", "peer", "name", "r-d", "netns", self.r)
        _ip("ip", "addr", "add", f"{self.src_ip}/24", "dev", "eth0", ns=self.s)
        _ip("ip", "addr", "add", f"{self.dst_ip}/24", "dev", "eth0", ns=self.d)
        for ns, devs in ((self.s, ["eth0", "lo"]), (self.d, ["eth0", "lo"]), (self.r, ["r-s", "r-d", "lo"])):
            for dev in devs:
                _ip("ip", "link", "set", dev, "up", ns=ns)
                if dev != "lo" and shutil.which("ethtool"):
                    _ip("ethtool", "-K", dev, "tx", "off", "gro", "off", "tso", "off", "gso", "off", ns=ns, check=False)
        deadline = time.monotonic() + 10  # veth carrier comes up via linkwatch, up to ~1 s later
        for ns, dev in ((self.s, "eth0"), (self.d, "eth0"), (self.r, "r-s"), (self.r, "r-d")):
            while json.loads(_ip("ip", "-j", "link", "show", dev, ns=ns).stdout)[0].get("operstate") != "UP":
                assert time.monotonic() < deadline, f"{dev} in {ns} has no carrier"
                time.sleep(0.05)
        self.static_neighbours()

    def static_neighbours(self) -> None:
        mac = {ns: json.loads(_ip("ip", "-j", "link", "show", "eth0", ns=ns).stdout)[0]["address"]
               for ns in (self.s, self.d)}
        _ip("ip", "neigh", "replace", self.dst_ip, "lladdr", mac[self.d], "dev", "eth0", "nud", "permanent",
            ns=self.s)
        _ip("ip", "neigh", "replace", self.src_ip, "lladdr", mac[self.s], "dev", "eth0", "nud", "permanent",
            ns=self.d)

    def flush_neighbours(self) -> None:
        for ns, peer in ((self.s, self.dst_ip), (self.d, self.src_ip)):
            _ip("ip", "neigh", "del", peer, "dev", "eth0", ns=ns)
            assert "PERMANENT" not in _ip("ip", "neigh", "show", "dev", "eth0", ns=ns).stdout

    def down(self) -> None:
        for ns in (self.s, self.r, self.d):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def start_shaper(self, forward: dict, reverse: dict | None = None, seed: int = 7, name: str = "shaper"):
        ready = self.tmp / f"{name}.ready"
        ready.unlink(missing_ok=True)
        cfg = {"left_if": "r-s", "right_if": "r-d", "seed": seed, "forward": forward, "reverse": reverse or {},
               "log_path": str(self.tmp / f"{name}.parquet"), "ready_file": str(ready)}
        cfg_path = self.tmp / f"{name}.json"
        cfg_path.write_text(json.dumps(cfg))
        proc = subprocess.Popen(["ip", "netns", "exec", self.r, PYTHON, "-m", "testbed.emulator.userspace_shaper",
                                 str(cfg_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                raise RuntimeError(f"shaper did not start: {err}")
            time.sleep(0.02)
        return proc, Path(cfg["log_path"])

    def stop_shaper(self, proc, sig=signal.SIGTERM) -> None:
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert proc.returncode == 0, (proc.returncode, err)

    def probe(self, n: int, pps: float, size: int = PAYLOAD, idle: float = 0.5,
              name: str = "rx") -> tuple[np.ndarray, dict[int, int]]:
        """Send n datagrams; (received rows seq/sent/arrived, payload digest -> seq of every datagram sent)."""
        out, ready = self.tmp / f"{name}.npy", self.tmp / f"{name}.rx-ready"
        sent = self.tmp / f"{name}.sent.npy"
        ready.unlink(missing_ok=True)
        rx = subprocess.Popen(["ip", "netns", "exec", self.d, PYTHON, str(self.probe_script), "recv", self.dst_ip,
                               str(PORT), str(out), str(ready), str(idle)], stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 10
            while not ready.exists():
                assert rx.poll() is None and time.monotonic() < deadline, "receiver did not start"
                time.sleep(0.01)
            _ip(PYTHON, str(self.probe_script), "send", self.dst_ip, str(PORT), str(n), str(pps), str(size), str(sent),
                ns=self.s)
            rx.wait(timeout=30)
        finally:
            if rx.poll() is None:
                rx.kill()
        assert rx.returncode == 0, rx.stderr.read()
        return np.load(out), {int(d): seq for seq, d in enumerate(np.load(sent))}


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    if _why_not is not None:
        pytest.skip(_why_not)
    t = Topology(tmp_path_factory.mktemp("shaper"))
    try:
        t.up()
        yield t
    finally:
        t.down()
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert t.prefix not in leftover


def _read_log(path: Path):
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pandas()


def _forward(log, sent: dict[int, int]):
    """The log's forward rows of the probe's datagrams, with their sequence numbers in column `seq`."""
    fwd = log[(log.direction == "forward") & log.digest.isin(sent)].copy()
    fwd["seq"] = fwd.digest.map(sent)
    return fwd


def _replay(rows, params: LinkParams, seed: int):
    """Fates a fresh Link gives the shaper's logged arrival times: must match the live decisions exactly."""
    link = Link(params, seed, "forward")
    return [link.transmit(int(size), float(t)) for size, t in zip(rows["size"], rows["arrival_s"])]


# ------------------------------------------------------------------------------------------ offline tests

def test_link_params_from_dict():
    p = link_params_from_dict({"delay_s": 0.025, "loss": {"kind": "bernoulli", "rate": 0.1},
                               "rate": {"kind": "constant", "kbps": 320}, "queue_bytes": 6000})
    assert p == LinkParams(delay_s=0.025, loss=BernoulliParams(0.1), rate=ConstantRateParams(320), queue_bytes=6000)
    ge = link_params_from_dict({"loss": {"kind": "gilbert_elliott", "p": 0.01, "r": 0.5}})
    assert ge.loss.p == 0.01 and ge.loss.r == 0.5
    with pytest.raises(ValueError):
        link_params_from_dict({"loss": {"kind": "nope"}})


def test_classify_frames():
    eth = bytes(12)
    ip = bytes([0x45, 0, 0, 0, 0x12, 0x34, 0, 0, 64, 17, 0, 0]) + bytes(4) + bytes([10, 200, 2, 11])
    udp = (1000).to_bytes(2, "big") + (2000).to_bytes(2, "big") + (8 + 10).to_bytes(2, "big") + bytes(2)
    payload = (42).to_bytes(8, "big") + b"xy"
    frame = eth + b"\x08\x00" + ip + udp + payload
    destination = bytes([10, 200, 2, 11])
    assert _classify(frame) == ("udp", 10, 0x1234, payload_digest(payload), destination)
    # Ethernet padding after the datagram is not part of the payload
    assert _classify(frame + bytes(6)) == ("udp", 10, 0x1234, payload_digest(payload), destination)
    assert _classify(frame[:-1]) == ("truncated", 0, 0x1234, 0, destination)  # shorter than its UDP length
    assert _classify(frame[:14 + 20 + 4])[0] == "truncated"  # not even a whole UDP header
    more_fragments = eth + b"\x08\x00" + ip[:6] + b"\x20\x00" + ip[8:] + udp + payload
    assert _classify(more_fragments)[0] == "truncated"
    assert _classify(eth + b"\x08\x06" + bytes(28))[0] == "arp"
    assert _classify(eth + b"\x86\xdd" + bytes(40))[0] == "other"


def test_mac_rewrite_picks_the_destination_mac_by_ip():
    rewrite = MacRewrite.from_json(["02:aa:00:00:00:03", {"10.200.2.2": "02:aa:00:00:00:04",
                                                          "10.200.2.11": "02:aa:00:00:00:0b"}])
    headers = rewrite.headers()
    assert headers == {bytes([10, 200, 2, 2]): bytes.fromhex("02aa00000004" "02aa00000003"),
                       bytes([10, 200, 2, 11]): bytes.fromhex("02aa0000000b" "02aa00000003")}


def test_payload_digest_is_a_signed_big_endian_blake2b_prefix():
    assert payload_digest(b"abc") == int.from_bytes(hashlib.blake2b(b"abc", digest_size=8).digest(), "big",
                                                    signed=True)
    values = [payload_digest(bytes([i]) * 100) for i in range(64)]
    assert all(-(1 << 63) <= v < 1 << 63 for v in values) and any(v < 0 for v in values)
    assert len(set(values)) == 64


def test_log_writes_parquet_and_csv(tmp_path):
    import pyarrow.parquet as pq
    log = ShaperLog(start_monotonic=12.5)
    log.add("forward", 0.1, 1242, 1242, None, 0.125, "good", 7, 3)
    log.add("reverse", 0.2, 74, 74, "loss", None, None, 8, -1)
    log.columns["departed_s"][0] = 0.1251
    log.write(tmp_path / "a.parquet")
    table = pq.read_table(tmp_path / "a.parquet")
    assert table.column_names == list(LOG_COLUMNS)
    assert table.column("drop").to_pylist() == [None, "loss"]
    assert float(table.schema.metadata[b"start_monotonic"]) == 12.5
    log.write(tmp_path / "a.csv")
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0].split(",") == list(LOG_COLUMNS) and len(lines) == 3
    assert json.loads((tmp_path / "a.csv.meta.json").read_text())["start_monotonic"] == "12.5"


# ------------------------------------------------------------------------------------------ real tests

@real
def test_delay_only_all_arrive_with_precise_delay(topo):
    proc, log_path = topo.start_shaper({"delay_s": 0.025}, name="delay")
    try:
        rx, sent = topo.probe(n=3000, pps=1000, name="delay")
    finally:
        topo.stop_shaper(proc)
    assert len(rx) == 3000
    error_ms = (rx[:, 2] - rx[:, 1] - 0.025) * 1000
    p50, p99 = np.percentile(error_ms, [50, 99])
    print(f"delay error ms: p50={p50:.3f} p99={p99:.3f} max={error_ms.max():.3f} min={error_ms.min():.3f}")
    assert error_ms.min() > -0.5  # never early (beyond clock-read slack)
    assert p99 <= 2.0
    log = _read_log(log_path)
    fwd = _forward(log, sent)
    assert len(fwd) == 3000 and fwd["drop"].isna().all()
    sent_late = (fwd.departed_s - fwd.scheduled_s) * 1000
    print(f"shaper departure lateness ms: p50={sent_late.median():.3f} p99={sent_late.quantile(0.99):.3f}")
    assert (sent_late >= -1e-6).all()


@real
def test_bernoulli_loss_rate_and_log_agree(topo):
    forward = {"delay_s": 0.01, "loss": {"kind": "bernoulli", "rate": 0.1}}
    proc, log_path = topo.start_shaper(forward, seed=11, name="bern")
    n = 2000
    try:
        rx, sent = topo.probe(n=n, pps=1000, name="bern")
    finally:
        topo.stop_shaper(proc)
    arrived = set(rx[:, 0].astype(int).tolist())
    loss = 1 - len(arrived) / n
    se = math.sqrt(0.1 * 0.9 / n)
    print(f"bernoulli loss {loss:.4f} (expected 0.1 +- {4 * se:.4f})")
    assert abs(loss - 0.1) <= 4 * se
    log = _read_log(log_path)
    fwd = _forward(log, sent)
    assert len(fwd) == n
    delivered = set(fwd.seq[fwd["drop"].isna()].tolist())
    dropped = set(fwd.seq[fwd["drop"].notna()].tolist())
    assert delivered == arrived
    assert dropped.isdisjoint(arrived) and len(dropped) + len(delivered) == n
    assert set(fwd["drop"].dropna()) == {"loss"}
    replay = _replay(fwd, link_params_from_dict(forward), 11)
    assert [d.drop for d in replay] == [None if isinstance(x, float) else x for x in fwd["drop"]]


@real
def test_rate_limited_fifo_drops_a_fifth_by_queue(topo):
    forward = {"delay_s": 0.02, "rate": {"kind": "constant", "kbps": 320}, "queue_bytes": 6000}
    proc, log_path = topo.start_shaper(forward, name="fifo")
    frame_bits = (PAYLOAD + FRAME_OVERHEAD) * 8
    pps = 400_000 / frame_bits  # 400 kbps offered, counted in frame bytes as the shaper charges them
    n = int(pps * 10)
    try:
        rx, sent = topo.probe(n=n, pps=pps, idle=1.0, name="fifo")
    finally:
        topo.stop_shaper(proc)
    drop = 1 - len(rx) / n
    print(f"fifo drop fraction {drop:.4f} over {n} packets")
    assert abs(drop - 0.2) <= 0.03
    log = _read_log(log_path)
    fwd = _forward(log, sent)
    assert set(fwd["drop"].dropna()) == {"queue"}
    assert set(fwd.seq[fwd["drop"].isna()].tolist()) == set(rx[:, 0].astype(int).tolist())
    replay = _replay(fwd, link_params_from_dict(forward), 7)
    assert [d.drop for d in replay] == [None if isinstance(x, float) else x for x in fwd["drop"]]
    # served at 320 kbps: arrivals at the receiver are spaced by at least one frame time
    gaps = np.diff(np.sort(rx[:, 2]))
    assert np.percentile(gaps, 5) >= 0.8 * frame_bits / 320_000


@real
def test_gilbert_elliott_at_2000_pps_logs_states_and_stops_on_sigint(topo):
    forward = {"delay_s": 0.025, "loss": {"kind": "gilbert_elliott", "p": 0.05, "r": 0.5}}
    proc, log_path = topo.start_shaper(forward, seed=3, name="ge")
    n = 4000
    try:
        rx, sent = topo.probe(n=n, pps=2000, name="ge")
    finally:
        topo.stop_shaper(proc, signal.SIGINT)
    log = _read_log(log_path)
    fwd = _forward(log, sent)
    assert len(fwd) == n and set(fwd.ge_state) == {"good", "bad"}
    assert set(fwd.seq[fwd["drop"].isna()].tolist()) == set(rx[:, 0].astype(int).tolist())
    replay = _replay(fwd, link_params_from_dict(forward), 3)
    assert [d.ge_state for d in replay] == list(fwd.ge_state)
    loss = 1 - len(rx) / n
    stationary = 0.05 / 0.55
    print(f"GE loss {loss:.4f} (stationary {stationary:.4f})")
    assert abs(loss - stationary) < 0.04  # bursty: far wider than binomial
    error_ms = (rx[:, 2] - rx[:, 1] - 0.025) * 1000
    print(f"2000 pps delay error ms: p50={np.median(error_ms):.3f} p99={np.percentile(error_ms, 99):.3f}")
    assert np.percentile(error_ms, 99) <= 2.0


@real
def test_arp_passes_unshaped_so_dynamic_neighbours_work(topo):
    topo.flush_neighbours()
    try:
        proc, log_path = topo.start_shaper({"delay_s": 0.01, "loss": {"kind": "bernoulli", "rate": 0.5}}, name="arp")
        try:
            rx, sent = topo.probe(n=50, pps=200, name="arp")
        finally:
            topo.stop_shaper(proc)
    finally:
        topo.static_neighbours()
    import pyarrow.parquet as pq
    meta = pq.read_schema(log_path).metadata
    assert int(meta[b"arp"]) >= 2  # request and reply crossed, never subject to the 50 % loss
    log = _read_log(log_path)
    fwd = _forward(log, sent)
    assert set(fwd.seq[fwd["drop"].isna()].tolist()) == set(rx[:, 0].astype(int).tolist())
    assert 0 < len(rx) < 50


@pytest.mark.parametrize(("key", "value", "message"), [
    ("stream_key", "net", "stream_key must be a list of strings, got 'net'"),
    ("stream_key", ["net", 3], "stream_key must be a list of strings"),
    ("start_monotonic", "soon", "start_monotonic must be a number of seconds, got 'soon'"),
])
def test_bad_config_values_name_the_file_and_key(tmp_path, capsys, key, value, message):
    from testbed.emulator.userspace_shaper import main

    path = tmp_path / "shaper.json"
    path.write_text(json.dumps({"left_if": "a", "right_if": "b", key: value}))
    assert main([str(path)]) == 2
    assert f"{path}: {message}" in capsys.readouterr().err
