"""The `mininet` backend: one run on real Mininet hosts, real UDP sockets and a real shaper, in wall-clock time.

Per run: a fresh run-prefixed topology (sender host -- router host -- receiver host, plus a pair of hosts per
cross-traffic flow with a switch on each side of the router; see `testbed.emulator.mininet_topology`), the
bottleneck shaped either by the userspace shaper in the router host (`testbed.emulator.userspace_shaper`, the
`sim` link models on AF_PACKET sockets) or by tc qdiscs (`testbed.emulator.netem`, with the router's kernel
forwarding), and one agent per host (`python -m testbed.agent`) running the scheme's, or a cross-traffic
flow's, sans-IO endpoint over asyncio UDP. Time origin: the runner starts every agent, waits until they are
ready, picks `t0` a moment ahead on CLOCK_MONOTONIC, starts the shaper with that origin and hands `t0` to the
agents; every log is then on the same clock as the `sim` backend's (seconds since the run started). The
topology, its qdiscs and every process in it are removed when the run ends, also on errors, SIGINT and SIGTERM.
"""

from __future__ import annotations

import json
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pandas as pd
import pyarrow.parquet as pq

from testbed.agent import AgentConfig
from testbed.cross_traffic import cross_roles
from testbed.emulator.link_config import link_params_to_dict
from testbed.emulator.mininet_topology import Topology, enable_kernel_forwarding, topology
from testbed.emulator.netem import (
    NetemShaper,
    needs_netem_qdisc,
    netem_available,
    plan_direction,
)
from testbed.log_merge import merge_packet_logs
from testbed.sim import RunOutput
from testbed.spec import Run, Spec, netem_problems
from testbed.video_session import frames_table

AGENT_PORT = 5000
READY_TIMEOUT_S = 120.0  # building a video session decodes the clip
START_MARGIN_S = 1.0  # between picking t0 and t0: the shaper must be up by then
AFTER_END_TIMEOUT_S = 120.0  # for an agent to score its frames and write its logs after the run
STDERR_EXCERPT_LINES = 12
AGENT_COMMAND = [sys.executable, "-m", "testbed.agent"]  # + the agent's config file
CLOCK = ("CLOCK_MONOTONIC (time.monotonic), one clock for every namespace of the machine; "
         "every time is seconds since t0, a monotonic instant the runner picks once agents and shaper are ready")


class RunFailed(RuntimeError):
    """A process of the run (an agent or the shaper) failed; the message ends with its stderr excerpt."""


@dataclass(frozen=True)
class ShaperChoice:
    """Which shaper runs the bottleneck, and why."""

    kind: str
    reason: str


def choose_shaper(requested: str, spec: Spec) -> ShaperChoice:
    """Resolve `auto` and check that netem can express every network of the spec."""
    problems = [f'network "{network.name}" {problem}' for network in spec.networks
                for problem in netem_problems(network)]
    if requested == "userspace":
        return ShaperChoice("userspace", "asked for in the spec ([mininet] shaper)")
    available, detail = netem_available()
    if requested == "netem":
        if not available and any(needs_netem_qdisc(params) for network in spec.networks
                                 for params in (network.forward, network.reverse)):
            raise RunFailed(f"shaper = \"netem\" was asked for, but netem cannot run here: {detail}")
        if not available:
            return ShaperChoice("netem", f"asked for in the spec ([mininet] shaper); the kernel has no sch_netem "
                                         f"({detail}), but no network needs it: htb and fifo qdiscs only")
        if problems:
            raise RunFailed("shaper = \"netem\" cannot express this spec: " + "; ".join(problems))
        return ShaperChoice("netem", "asked for in the spec ([mininet] shaper)")
    if not available:
        return ShaperChoice("userspace", f"netem unavailable: {detail}")
    if problems:
        return ShaperChoice("userspace", "netem cannot express " + "; ".join(problems))
    return ShaperChoice("netem", f"the kernel has sch_netem ({detail})")


@dataclass
class _Process:
    role: str
    popen: subprocess.Popen
    stderr_path: Path
    stderr: IO[bytes] = field(repr=False)

    def excerpt(self) -> str:
        """The last lines the process wrote to stderr."""
        self.stderr.flush()
        lines = self.stderr_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return "\n".join(lines[-STDERR_EXCERPT_LINES:]) or "(no output on stderr)"

    def failure(self) -> RunFailed:
        """The error describing this process's exit."""
        return RunFailed(f"{self.role} exited with status {self.popen.returncode}:\n{self.excerpt()}")


def _start(topo: Topology, host: str, role: str, argv: Sequence[str], work_dir: Path, *,
           interactive: bool = False) -> _Process:
    stderr_path = work_dir / f"{role}.stderr.txt"
    stderr = stderr_path.open("wb")
    pipe = subprocess.PIPE if interactive else subprocess.DEVNULL
    # Own session: a Ctrl-C meant for the runner must reach it alone, so it can stop everything in order.
    popen = subprocess.Popen(topo.exec_argv(host, argv), stdin=pipe, stdout=pipe, stderr=stderr,
                             start_new_session=True)
    return _Process(role, popen, stderr_path, stderr)


def _wait_ready(process: _Process, deadline: float) -> None:
    """Wait for the agent's READY line."""
    assert process.popen.stdout is not None
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.popen.stdout], [], [], 0.1)
        if readable:
            line = process.popen.stdout.readline()
            if line.strip() == b"READY":
                return
            if not line and process.popen.poll() is not None:
                raise process.failure()
        elif process.popen.poll() is not None:
            raise process.failure()
    raise RunFailed(f"{process.role} was not ready after {READY_TIMEOUT_S:.0f} s:\n{process.excerpt()}")


def _wait_file(path: Path, process: _Process, deadline: float) -> None:
    while not path.exists():
        if process.popen.poll() is not None:
            raise process.failure()
        if time.monotonic() > deadline:
            raise RunFailed(f"{process.role} did not start in time:\n{process.excerpt()}")
        time.sleep(0.01)


def _stop(process: _Process, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`."""
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        try:
            process.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.popen.kill()
            process.popen.wait()
    process.stderr.close()


def _agent_ends(topo: Topology) -> list[tuple[str, str, str]]:
    """(role, own address, peer address) of every agent, receivers first so they listen before anyone sends."""
    pairs = [("sender", "receiver", topo.sender, topo.receiver)]
    for index, (left, right) in enumerate(zip(topo.cross_senders, topo.cross_receivers), start=1):
        pairs.append((*cross_roles(index), left, right))
    return ([(receiver, right.ip, left.ip) for _, receiver, left, right in pairs]
            + [(sender, left.ip, right.ip) for sender, _, left, right in pairs])


def _userspace_config(run: Run, topo: Topology, work_dir: Path, t0: float) -> dict[str, Any]:
    return {
        "left_if": topo.router_left.interface, "right_if": topo.router_right.interface,
        "seed": run.seed, "stream_key": [run.network.name],  # the `sim` backend's loss realization
        "forward": link_params_to_dict(run.network.forward), "reverse": link_params_to_dict(run.network.reverse),
        "rewrite_macs": {direction: list(macs) for direction, macs in topo.shaper_macs().items()},
        "size_basis": "udp_payload",  # what `sim` charges: the datagram's payload
        "log_path": str(work_dir / "shaper.parquet"), "ready_file": str(work_dir / "shaper.ready"),
        "start_monotonic": t0,
    }


class _RunProcesses:
    """The agents and shaper of one run, started in order and always stopped."""

    def __init__(self, run: Run, topo: Topology, work_dir: Path, shaper: ShaperChoice, agent_argv: list[str]):
        self.run = run
        self.topo = topo
        self.work_dir = work_dir
        self.shaper_choice = shaper
        self.agent_argv = agent_argv
        self.agents: list[_Process] = []
        self.shaper: _Process | None = None
        self.netem: NetemShaper | None = None
        self.netem_report: dict[str, Any] = {}

    def _tc(self, host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
        return subprocess.run(self.topo.exec_argv(host, argv), capture_output=True, text=True, timeout=20)

    def execute(self) -> None:
        """Start everything, run to the end, and stop everything."""
        run, topo, work = self.run, self.topo, self.work_dir
        end_s = run.experiment.duration_s + run.experiment.drain_s
        run_file = work / "run.pickle"
        run_file.write_bytes(pickle.dumps(run))
        if self.shaper_choice.kind == "netem":
            network = run.network
            self.netem = NetemShaper(
                plan_direction("forward", network.forward, entry_host="sender", entry_if=topo.sender.interface,
                               bottleneck_if=topo.router_right.interface),
                plan_direction("reverse", network.reverse, entry_host="receiver", entry_if=topo.receiver.interface,
                               bottleneck_if=topo.router_left.interface),
                self._tc)
            self.netem_report["tree"] = self.netem.install()
            enable_kernel_forwarding(topo)  # the qdiscs shape; the router's kernel forwards
        for role, own, peer in _agent_ends(topo):
            config = AgentConfig(role, str(run_file), (own, AGENT_PORT), (peer, AGENT_PORT), end_s, str(work))
            config_path = work / f"{role}.json"
            config_path.write_text(config.to_json(), encoding="utf-8")
            self.agents.append(_start(topo, role, role, [*self.agent_argv, str(config_path)], work, interactive=True))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for agent in self.agents:
            _wait_ready(agent, deadline)
        t0 = time.monotonic() + START_MARGIN_S
        if self.shaper_choice.kind == "userspace":
            config_path = work / "shaper.json"
            config_path.write_text(json.dumps(_userspace_config(run, topo, work, t0)), encoding="utf-8")
            self.shaper = _start(topo, "router", "shaper",
                                 [sys.executable, "-m", "testbed.emulator.userspace_shaper", str(config_path)], work)
            _wait_file(work / "shaper.ready", self.shaper, t0)
        else:
            assert self.netem is not None
            self.netem.start(t0)
        for agent in self.agents:
            assert agent.popen.stdin is not None
            agent.popen.stdin.write(f"{t0!r}\n".encode())
            agent.popen.stdin.close()
        self._wait_agents(t0 + end_s + AFTER_END_TIMEOUT_S)

    def _wait_agents(self, deadline: float) -> None:
        while any(agent.popen.poll() is None for agent in self.agents):
            for agent in self.agents:
                if agent.popen.poll() not in (None, 0):
                    raise agent.failure()
            if self.shaper is not None and self.shaper.popen.poll() is not None:
                raise self.shaper.failure()
            if time.monotonic() > deadline:
                raise RunFailed("agents did not finish: " + ", ".join(
                    f"{a.role} ({a.excerpt()})" for a in self.agents if a.popen.poll() is None))
            time.sleep(0.05)
        for agent in self.agents:
            if agent.popen.returncode != 0:
                raise agent.failure()

    def stop(self) -> RunFailed | None:
        """Stop the agents, the shaper (it writes its log on SIGTERM) and the qdisc schedule; the shaper's failure."""
        for agent in self.agents:
            _stop(agent)
        if self.netem is not None:
            self.netem_report["statistics"] = self.netem.stop()
        if self.shaper is None:
            return None
        _stop(self.shaper, grace_s=30.0)  # writing a long log takes a moment
        return self.shaper.failure() if self.shaper.popen.returncode not in (0, None) else None


def _read(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def _read_all(work_dir: Path, roles: Sequence[str], log: str) -> pd.DataFrame:
    """One traffic log (``sent`` or ``arrived``) of several agents, in time order."""
    frames = [_read(work_dir / f"{role}.{log}.parquet") for role in roles]
    column = "sent_s" if log == "sent" else "arrived_s"
    return pd.concat(frames, ignore_index=True).sort_values(column, kind="stable", ignore_index=True)


def _collect(run: Run, work_dir: Path, has_shaper_log: bool) -> RunOutput:
    names = (run.scheme.name, run.network.name, run.video_name, run.seed)
    end_s = run.experiment.duration_s + run.experiment.drain_s
    shaper = _read(work_dir / "shaper.parquet") if has_shaper_log else None
    cross = [cross_roles(index) for index in range(1, len(run.network.cross_traffic) + 1)]
    left = ["sender", *(sender for sender, _ in cross)]
    right = ["receiver", *(receiver for _, receiver in cross)]
    packets = merge_packet_logs(
        _read_all(work_dir, left, "sent"), _read_all(work_dir, right, "arrived"),
        _read_all(work_dir, right, "sent"), _read_all(work_dir, left, "arrived"),
        shaper, end_s, (run.network.forward.delay_s, run.network.reverse.delay_s), names)
    frames = bitstreams = None
    if (work_dir / "sender.frames.parquet").exists():
        sender_columns = pq.read_table(work_dir / "sender.frames.parquet").to_pydict()
        receiver_columns = pq.read_table(work_dir / "receiver.frames.parquet").to_pydict()
        frames = frames_table(sender_columns, receiver_columns, *names)
        bitstreams = pq.read_table(work_dir / "receiver.bitstreams.parquet")
    return RunOutput(packets, frames, bitstreams)


def run_on_mininet(run: Run, work_dir: Path, shaper: ShaperChoice) -> tuple[RunOutput, dict[str, Any]]:
    """Execute one run on a fresh topology; return its logs and a description of the shaping used."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with topology(cross_pairs=len(run.network.cross_traffic)) as topo:
        processes = _RunProcesses(run, topo, work_dir, shaper, AGENT_COMMAND)
        try:
            processes.execute()
        finally:
            shaper_failure = processes.stop()  # an error from `execute` takes precedence over this one
        if shaper_failure is not None:
            raise shaper_failure
        details = {"prefix": topo.prefix, "offloads": topo.offloads, "switch": topo.switch,
                   **processes.netem_report}
    return _collect(run, work_dir, shaper.kind == "userspace"), details
