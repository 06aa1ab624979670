"""The `mininet` backend for real: Mininet hosts, asyncio UDP agents and the userspace shaper (root only).

These runs take real time (a few seconds each). The statistics are checked against analytical values and
against the `sim` backend, whose loss realization the userspace shaper reproduces packet for packet.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ge_statistics import loss_asymptotic_variance

from testbed import mininet_backend
from testbed.emulator.loss import GilbertElliottParams
from testbed.emulator.mininet_topology import list_leftovers
from testbed.runner import run_experiment
from testbed.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mnexec")),
    reason="needs root and Mininet's mnexec (Debian package mininet) to build Mininet hosts; "
           "run as root or in the Vagrant VM",
)

GE_MEDIUM = 'loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.50 }'


def write_spec(tmp_path: Path, body: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def probe_spec(tmp_path: Path, name: str, duration_s: float, rate_kbps: float, networks: str, *,
               packet_bytes: int = 1200, seed: int = 1, drain_s: float = 2.0, file: str = "spec.toml") -> Path:
    """A spec file with one probe scheme over the given [[network]] tables (and any further tables)."""
    header = textwrap.dedent(f"""
        [experiment]
        name = "{name}"
        duration_s = {duration_s}
        drain_s = {drain_s}
        seeds = [{seed}]
        [[scheme]]
        name = "probe"
        kind = "probe"
        rate_kbps = {rate_kbps}
        packet_bytes = {packet_bytes}
        """)
    return write_spec(tmp_path, header + textwrap.dedent(networks), file)


@pytest.fixture
def prefixes(monkeypatch) -> list[str]:
    """The prefixes of the topologies the runs of a test create."""
    created: list[str] = []
    real_topology = mininet_backend.topology

    @contextmanager
    def recording_topology(*args, **kwargs):
        with real_topology(*args, **kwargs) as topo:
            created.append(topo.prefix)
            yield topo

    monkeypatch.setattr(mininet_backend, "topology", recording_topology)
    return created


def assert_nothing_left(prefixes: list[str] | None = None) -> None:
    """No process, interface or namespace of these topologies (of any testbed run when None) remains."""
    for prefix in prefixes if prefixes is not None else ["tb"]:
        assert list_leftovers(prefix) == []


def forward(packets: pd.DataFrame) -> pd.DataFrame:
    return packets[packets["flow"] == "media"].sort_values("seq").reset_index(drop=True)


def test_probe_over_ge_channel_matches_sim_and_analysis(tmp_path, prefixes):
    """2,000 packets/s through the thesis GE (medium) channel and 25 ms: same losses as sim, delay error small."""
    spec = load_spec(probe_spec(tmp_path, "ge", 8, 19200, f"""
        [[network]]
        name = "ge-medium"
        delay_ms = 25
        {GE_MEDIUM}
        """, seed=3, drain_s=1))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert len(prefixes) == 1
    assert_nothing_left(prefixes)
    emulated = forward(pd.read_parquet(out / "packets.parquet"))
    simulated = forward(pd.read_parquet(out / "sim_packets.parquet"))
    assert len(emulated) == len(simulated) == 16000
    # The shaper draws from the sim's seeded streams: every packet meets the same fate.
    assert emulated["drop"].fillna("").tolist() == simulated["drop"].fillna("").tolist()
    assert emulated["ge_state"].tolist() == simulated["ge_state"].tolist()
    lost = emulated["arrived_ms"].isna().mean()
    channel = GilbertElliottParams(p=0.068, r=0.852, loss_good=0.04, loss_bad=0.50)
    assert abs(lost - channel.stationary_loss()) < 4 * np.sqrt(loss_asymptotic_variance(channel) / len(emulated))
    error_ms = (emulated["arrived_ms"] - emulated["sent_ms"] - 25.0).dropna()
    assert error_ms.min() >= -0.01  # never early
    assert np.percentile(error_ms, 99) <= 2.0
    environment = json.loads((out / "environment.json").read_text())
    assert environment["backend"] == "mininet"
    assert environment["mininet"]["shaper"] == "userspace"
    assert environment["mininet"]["shaper_reason"]


def test_probe_into_fifo_drops_a_fifth_like_sim(tmp_path, prefixes):
    """400 kbps into 320 kbps with a 6000-byte FIFO: 20 % queue drops, delay bounded by the queue."""
    spec = load_spec(probe_spec(tmp_path, "fifo", 20, 400, """
        [[network]]
        name = "fifo-320k"
        delay_ms = 50
        rate = { kbps = 320 }
        queue = { bytes = 6000 }
        """, packet_bytes=1000))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert len(prefixes) == 1
    assert_nothing_left(prefixes)
    emulated = forward(pd.read_parquet(out / "packets.parquet"))
    simulated = forward(pd.read_parquet(out / "sim_packets.parquet"))
    queue_drops = (emulated["drop"] == "queue").mean()
    assert abs(queue_drops - 0.20) <= 0.015
    assert abs(queue_drops - (simulated["drop"] == "queue").mean()) <= 0.01
    assert set(emulated["drop"].dropna()) == {"queue"}
    delay = (emulated["arrived_ms"] - emulated["sent_ms"]).dropna()
    # 50 ms + at most 6000 bytes queued ahead (150 ms) + its own 25 ms serialization, + 2 ms tolerance.
    assert delay.max() <= 50 + 150 + 25 + 2.0
    assert delay.min() >= 50 + 25 - 0.01


def test_vp9_streaming_fec_runs_end_to_end(tmp_path, prefixes):
    """10 s of VP9 + streaming FEC over the GE channel: every frame logged, video shown, feedback flowing."""
    spec = load_spec(write_spec(tmp_path, """
        [experiment]
        name = "vp9"
        duration_s = 10
        seeds = [1]
        [[video]]
        name = "carphone"
        source = "sample:carphone"
        size = [256, 256]
        [[scheme]]
        name = "vp9-streaming"
        kind = "vp9"
        target_kbps = 140
        fec = "streaming"
        redundancy = 0.5
        ssim = false
        [[network]]
        name = "ge-low"
        delay_ms = 50
        loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.25 }
        """))
    out = tmp_path / "out"
    summary = run_experiment(spec, out, backend="mininet")
    assert_nothing_left(prefixes)
    frames = pd.read_parquet(out / "frames.parquet")
    assert len(frames) == 300
    assert frames["rendered"].mean() > 0.9
    assert frames["psnr_db"].median() > 30
    latency = frames["latency_ms"].dropna()
    assert latency.min() >= 50  # at least the one-way delay
    packets = pd.read_parquet(out / "packets.parquet")
    assert {"media", "fec", "ack"} <= set(packets["flow"])
    assert set(packets["drop"].dropna()) <= {"loss", "queue"}  # nothing lost in hosts or sockets
    assert (summary["status"] == "ok").all()
    assert (out / "bitstreams.parquet").exists() and (out / "sim_packets.parquet").exists()


CRASHING_AGENT = textwrap.dedent("""
    # The real agent, except that the probe receiver raises on its 51st datagram when the network is "crashing".
    import pickle, sys
    from testbed import agent
    from testbed.codecs.probe import ProbeReceiver
    config = agent.AgentConfig.from_json(open(sys.argv[1]).read())
    run = pickle.load(open(config.run_file, "rb"))
    if config.role == "receiver" and run.network.name == "crashing":
        original = ProbeReceiver.receive_datagram
        def receive_datagram(self, data, now):
            if len(self.arrivals) == 50:
                raise ValueError("injected failure")
            original(self, data, now)
        ProbeReceiver.receive_datagram = receive_datagram
    sys.exit(agent.main(sys.argv[1:]))
""")



def test_crashed_agent_fails_its_run_and_the_sweep_goes_on(tmp_path, monkeypatch, prefixes):
    script = tmp_path / "crashing_agent.py"
    script.write_text(CRASHING_AGENT, encoding="utf-8")
    monkeypatch.setattr(mininet_backend, "AGENT_COMMAND", [sys.executable, str(script)])
    spec = load_spec(probe_spec(tmp_path, "crash", 3, 400, """
        [[network]]
        name = "crashing"
        delay_ms = 10
        [[network]]
        name = "fine"
        delay_ms = 10
        """))
    out = tmp_path / "out"
    summary = run_experiment(spec, out, backend="mininet")
    assert len(prefixes) == 2
    assert_nothing_left(prefixes)
    runs = summary[summary["level"] == "run"].set_index("network")
    assert runs.loc["crashing", "status"] == "failed"
    assert "receiver exited with status 1" in runs.loc["crashing", "error"]
    assert "ValueError: injected failure" in runs.loc["crashing", "error"]
    assert runs.loc["fine", "status"] == "ok"
    packets = pd.read_parquet(out / "packets.parquet")
    assert set(packets["network"]) == {"fine"}  # nothing of the failed run is mixed in


BERNOULLI_NETWORK = """
    [[network]]
    name = "bernoulli"
    delay_ms = 20
    loss = { model = "bernoulli", rate = 0.1 }
    """


def _testbed(*args: str) -> list[str]:
    return [sys.executable, "-m", "testbed", *args]


def test_sigint_during_a_run_leaves_nothing(tmp_path):
    spec = probe_spec(tmp_path, "interrupted", 30, 400, BERNOULLI_NETWORK)
    out = tmp_path / "out"
    runner = subprocess.Popen(_testbed("run", str(spec), "--backend", "mininet", "--out", str(out)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".out.partial-*/agents/*/shaper.ready")):  # the run is under way
        assert runner.poll() is None, runner.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    shaper_config = json.loads(next(tmp_path.glob(".out.partial-*/agents/*/shaper.json")).read_text())
    prefix = shaper_config["left_if"].removesuffix("r-l")
    assert list_leftovers(prefix)  # the run's hosts exist...
    time.sleep(1.0)
    runner.send_signal(signal.SIGINT)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 130, stderr.decode()
    assert_nothing_left([prefix])  # ...and are gone
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_two_runs_at_once_do_not_interfere(tmp_path):
    specs = [probe_spec(tmp_path, f"twin{i}", 5, 400, BERNOULLI_NETWORK, file=f"twin{i}.toml") for i in (1, 2)]
    runners = [subprocess.Popen(_testbed("run", str(spec), "--backend", "mininet", "--out", str(tmp_path / spec.stem)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE) for spec in specs]
    for runner in runners:
        _, stderr = runner.communicate(timeout=180)
        assert runner.returncode == 0, stderr.decode()
    for spec in specs:
        out = tmp_path / spec.stem
        run_details = json.loads((out / "environment.json").read_text())["mininet"]["runs"]
        assert_nothing_left([details["prefix"] for details in run_details.values()])
        emulated = forward(pd.read_parquet(out / "packets.parquet"))
        simulated = forward(pd.read_parquet(out / "sim_packets.parquet"))
        assert len(emulated) == len(simulated) == 208  # 5 s of 1200-byte datagrams at 400 kbps
        # Each run saw exactly its own traffic, with the losses its seed dictates.
        assert emulated["drop"].fillna("").tolist() == simulated["drop"].fillna("").tolist()
        assert emulated["arrived_ms"].notna().sum() == simulated["arrived_ms"].notna().sum()


def test_tc_shaper_path_without_netem_qdisc(tmp_path, prefixes):
    """shaper = "netem" with a rate and FIFO only needs htb + bfifo, which this kernel has: run the tc path for real.

    With the size table on the router's root qdisc, htb and bfifo count UDP payload bytes, as `sim` does.
    """
    spec = load_spec(probe_spec(tmp_path, "tc-fifo", 10, 400, """
        [[network]]
        name = "fifo-320k"
        rate = { kbps = 320 }
        queue = { bytes = 6000 }
        [mininet]
        shaper = "netem"
        """, packet_bytes=1000))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert_nothing_left(prefixes)
    environment = json.loads((out / "environment.json").read_text())["mininet"]
    assert environment["shaper"] == "netem"
    (details,) = environment["runs"].values()
    bfifo = [q for q in details["statistics"]["qdiscs"] if q["kind"] == "bfifo" and q["direction"] == "forward"]
    emulated = forward(pd.read_parquet(out / "packets.parquet"))
    assert len(emulated) == 500
    dropped = emulated["arrived_ms"].isna()
    # Every packet that did not arrive was dropped by the bfifo, and the tc counters say so exactly.
    assert set(emulated["drop"].dropna()) == {"unattributed"}
    assert dropped.sum() == bfifo[0]["dropped"] > 0
    # Offered 50 packets/s; the link carries 40/s after the FIFO (6 datagrams) has filled: 94 drops, as in sim.
    assert abs(dropped.sum() - (500 - 10 * 40 - 6)) <= 3
    simulated = forward(pd.read_parquet(out / "sim_packets.parquet"))
    assert abs(dropped.sum() - simulated["arrived_ms"].isna().sum()) <= 3
    delay = (emulated["arrived_ms"] - emulated["sent_ms"]).dropna()
    assert delay.max() <= 6000 * 8 / 320 + 2.0  # htb releases at the start of a transmission, sim at its end


def test_tc_shaper_path_shares_htb_with_cross_traffic(tmp_path, prefixes):
    """The tc path on a dumbbell: the router's htb + bfifo is the one bottleneck of the probe and a cross flow."""
    spec = load_spec(probe_spec(tmp_path, "tc-cross", 10, 200, """
        [[network]]
        name = "fifo-cross"
        rate = { kbps = 320 }
        queue = { bytes = 6000 }
        cross_traffic = { rate_kbps = 200, packet_bytes = 1000, start_s = 0.02 }
        [mininet]
        shaper = "netem"
        """, packet_bytes=1000))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert_nothing_left(prefixes)
    (details,) = json.loads((out / "environment.json").read_text())["mininet"]["runs"].values()
    bfifo = [q for q in details["statistics"]["qdiscs"] if q["kind"] == "bfifo" and q["direction"] == "forward"]
    packets = pd.read_parquet(out / "packets.parquet")
    both = packets[packets["flow"].isin(["media", "cross-1"])]
    assert (both["flow"] == "cross-1").sum() == (both["flow"] == "media").sum() == 250
    dropped = both["arrived_ms"].isna()
    # Both flows' losses are the bfifo's drops, exactly: the cross flow went through the same qdisc.
    assert dropped.sum() == bfifo[0]["dropped"] > 0
    assert abs(dropped.sum() - (500 - 10 * 40 - 6)) <= 3  # 50 datagrams/s offered, 40/s carried, 6 queued


def test_mahimahi_trace_replays_in_real_time_like_sim(tmp_path, prefixes):
    """A Mahimahi trace alternating 4 and 12 Mbit/s each second, replayed by the userspace shaper in real time."""
    slow = [t for t in range(0, 1000, 3)]  # one 1504-byte opportunity per 3 ms: 4 Mbit/s
    fast = list(range(1000, 2000))  # one per ms: 12 Mbit/s
    (tmp_path / "alternating.mahi").write_text("".join(f"{t}\n" for t in [*slow, *fast, 2000]), encoding="utf-8")
    spec = load_spec(probe_spec(tmp_path, "trace", 6, 6000, """
        [[network]]
        name = "alternating"
        delay_ms = 10
        rate = { trace = "alternating.mahi" }
        queue = { packets = 40 }
        """))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert_nothing_left(prefixes)
    emulated = forward(pd.read_parquet(out / "packets.parquet"))
    simulated = forward(pd.read_parquet(out / "sim_packets.parquet"))
    assert len(emulated) == len(simulated) == 3750
    # 6 Mbit/s offered into 4 Mbit/s half of the time: about a sixth is dropped at the queue, as in sim.
    emulated_drops, simulated_drops = (emulated["drop"] == "queue").mean(), (simulated["drop"] == "queue").mean()
    assert 0.10 < simulated_drops < 0.25
    assert abs(emulated_drops - simulated_drops) <= 0.01
    both = emulated["arrived_ms"].notna() & simulated["arrived_ms"].notna()
    assert both.mean() > 0.8
    # Arrivals follow the trace's opportunities: the same packet arrives within a few opportunities of sim.
    difference = (emulated["arrived_ms"] - simulated["arrived_ms"])[both].abs()
    assert difference.median() <= 1.0
    assert np.percentile(difference, 95) <= 5.0


def test_cross_traffic_hosts_share_the_bottleneck_like_sim(tmp_path, prefixes):
    """A dumbbell: a cross-traffic host pair beside the probe's, through one GE channel and one FIFO."""
    # Both flows send a 1000-byte packet every 40 ms, 20 ms apart: far enough that real timer lateness (~1 ms)
    # never changes which reaches the shaper first, so the shared GE chain must give every packet sim's fate.
    spec = load_spec(probe_spec(tmp_path, "dumbbell", 15, 200, """
        [[network]]
        name = "ge-cross"
        delay_ms = 25
        loss = { model = "gilbert-elliott", p = 0.05, r = 0.4 }
        cross_traffic = { kind = "probe", rate_kbps = 200, packet_bytes = 1000, start_s = 0.02 }

        [[network]]
        name = "fifo-cross"
        delay_ms = 25
        rate = { kbps = 320 }
        queue = { bytes = 6000 }
        [[network.cross_traffic]]
        rate_kbps = 100
        packet_bytes = 1000
        start_s = 0.02
        [[network.cross_traffic]]
        kind = "on-off"
        rate_kbps = 200
        packet_bytes = 1000
        on_s = 1
        off_s = 1
        start_s = 0.01
        """, packet_bytes=1000))
    out = tmp_path / "out"
    run_experiment(spec, out, backend="mininet")
    assert len(prefixes) == 2
    assert_nothing_left(prefixes)
    environment = json.loads((out / "environment.json").read_text())
    for details in environment["mininet"]["runs"].values():
        assert details["switch"].startswith(("linux-bridge", "ovs"))
    packets = pd.read_parquet(out / "packets.parquet")
    simulated = pd.read_parquet(out / "sim_packets.parquet")
    keys = ["network", "flow", "seq"]
    both = packets.merge(simulated, on=keys, suffixes=("", "_sim"), validate="one_to_one")
    assert len(both) == len(packets) == len(simulated)
    assert set(packets["drop"].dropna()) <= {"loss", "queue"}  # no host or socket losses

    ge = both[both["network"] == "ge-cross"]
    assert set(ge["flow"]) == {"media", "cross-1"} and (ge["flow"] == "cross-1").sum() == 375
    assert ge["drop"].fillna("").tolist() == ge["drop_sim"].fillna("").tolist()
    assert ge["ge_state"].tolist() == ge["ge_state_sim"].tolist()
    assert (ge.loc[ge["flow"] == "cross-1", "drop"] == "loss").sum() > 0
    delay_error = (ge["arrived_ms"] - ge["sent_ms"] - 25.0).dropna()
    assert delay_error.min() >= -0.01 and np.percentile(delay_error, 99) <= 2.0

    fifo = both[both["network"] == "fifo-cross"]
    # Offered: 200 + 100 + 100 (on half the time) = 400 kbps into 320 kbps: a fifth of all packets overflow.
    steady = fifo[fifo["sent_ms"] >= 3000]
    assert abs((steady["drop"] == "queue").mean() - 0.20) <= 0.02
    assert abs((steady["drop"] == "queue").mean() - (steady["drop_sim"] == "queue").mean()) <= 0.01
    on_off = fifo[fifo["flow"] == "cross-2"]
    assert (np.mod(on_off["sent_ms"] - 10.0, 2000.0) < 1000.0 + 2.0).all()  # sent only while on
    delay = (fifo["arrived_ms"] - fifo["sent_ms"]).dropna()
    assert delay.max() <= 25 + 150 + 25 + 3.0  # one full 6000-byte queue at 320 kbps, one packet, delay
