"""An agent: one side of a run (a scheme's sans-IO sender or receiver) on a real host, over asyncio UDP.

Started by the `mininet` backend inside a Mininet host::

    python -m testbed.agent CONFIG.json

The agent builds its endpoint, binds its UDP socket, prints ``READY`` and waits for the run's time origin
`t0` on standard input: a `time.monotonic()` reading, written by the runner once both agents and the shaper
are ready. From then on the endpoint sees ``now = time.monotonic() - t0``. CLOCK_MONOTONIC is one clock for
the whole machine, the same in every network namespace, so the sender's send times, the shaper's decisions
and the receiver's arrival times are on one time axis without any clock synchronisation.

At `end_s` on that clock the agent stops and writes, into `out_dir`, Parquet files named after its role:
``<role>.sent.parquet`` (every datagram it sent: flow, frame_id, size, sent_s, digest),
``<role>.arrived.parquet`` (every datagram it received: digest, size, arrived_s) and, for video schemes,
``sender.frames.parquet`` / ``receiver.frames.parquet`` (the two halves of frames.parquet) and
``receiver.bitstreams.parquet``. Cross-traffic agents (roles ``cross-sender-<i>`` / ``cross-receiver-<i>``)
play one competing flow of a dumbbell and write only the two traffic logs. The runner matches sends and
arrivals by payload digest. A failure prints the traceback on standard error and exits with status 1; nothing
is written then.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import selectors
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from testbed.codecs.endpoint import Datagram, Endpoint
from testbed.cross_traffic import cross_endpoint
from testbed.emulator.cross_traffic import CROSS_ROLE_PREFIX
from testbed.emulator.payload_digest import payload_digest
from testbed.schemes import build_session
from testbed.spec import Run
from testbed.video_session import VideoSession, sender_frame_columns

ROLES = ("sender", "receiver")
SOCKET_BUFFER = 4 * 1024 * 1024  # bursts of a keyframe's packets must not overflow the socket


@dataclass(frozen=True)
class AgentConfig:
    """What one agent needs: its role, the pickled run, its and its peer's UDP address, where to write."""

    role: str
    run_file: str
    bind: tuple[str, int]
    peer: tuple[str, int]
    end_s: float
    out_dir: str

    @classmethod
    def from_json(cls, text: str) -> AgentConfig:
        """Parse the JSON form written by the backend."""
        data: dict[str, Any] = json.loads(text)
        role = data["role"]
        if role not in ROLES and not role.startswith(CROSS_ROLE_PREFIX):
            raise ValueError(f"role must be one of {', '.join(ROLES)} or a cross-traffic role, got {role!r}")
        return cls(role, data["run_file"], (data["bind"][0], int(data["bind"][1])),
                   (data["peer"][0], int(data["peer"][1])), float(data["end_s"]), data["out_dir"])

    def to_json(self) -> str:
        """The JSON form read by `from_json`."""
        return json.dumps({"role": self.role, "run_file": self.run_file, "bind": list(self.bind),
                           "peer": list(self.peer), "end_s": self.end_s, "out_dir": self.out_dir})


class TrafficLog:
    """Datagrams sent and received by one agent, on the run clock."""

    def __init__(self) -> None:
        self.sent: dict[str, list] = {"flow": [], "frame_id": [], "size": [], "sent_s": [], "digest": []}
        self.arrived: dict[str, list] = {"digest": [], "size": [], "arrived_s": []}

    def add_sent(self, datagram: Datagram, sent_s: float) -> None:
        """Record one datagram handed to the socket."""
        self.sent["flow"].append(datagram.flow)
        self.sent["frame_id"].append(datagram.frame_id)
        self.sent["size"].append(len(datagram.payload))
        self.sent["sent_s"].append(sent_s)
        self.sent["digest"].append(payload_digest(datagram.payload))

    def add_arrived(self, payload: bytes, arrived_s: float) -> None:
        """Record one datagram read from the socket."""
        self.arrived["digest"].append(payload_digest(payload))
        self.arrived["size"].append(len(payload))
        self.arrived["arrived_s"].append(arrived_s)

    def write(self, out_dir: Path, role: str) -> None:
        """Write `<role>.sent.parquet` and `<role>.arrived.parquet`."""
        sent_schema = pa.schema([("flow", pa.string()), ("frame_id", pa.int64()), ("size", pa.int64()),
                                 ("sent_s", pa.float64()), ("digest", pa.int64())])
        arrived_schema = pa.schema([("digest", pa.int64()), ("size", pa.int64()), ("arrived_s", pa.float64())])
        pq.write_table(pa.Table.from_pydict(self.sent, schema=sent_schema), out_dir / f"{role}.sent.parquet")
        pq.write_table(pa.Table.from_pydict(self.arrived, schema=arrived_schema), out_dir / f"{role}.arrived.parquet")


class EndpointDriver(asyncio.DatagramProtocol):
    """Runs a sans-IO endpoint on an asyncio loop: delivers datagrams, fires its timer, sends what it queues."""

    def __init__(self, endpoint: Endpoint, t0: float, log: TrafficLog, after_call=lambda: None):
        self.endpoint = endpoint
        self.t0 = t0
        self.log = log
        self.after_call = after_call
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self.failed: asyncio.Future[None] | None = None  # set with the endpoint's exception, if one raises

    def now(self) -> float:
        """Seconds on the run clock."""
        return time.monotonic() - self.t0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to send on."""
        self.transport = transport  # type: ignore[assignment]  # a datagram transport: we made it so

    def start(self) -> None:
        """Arm the endpoint's first timer (called at t0)."""
        self._guarded(lambda: None)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Hand one arrival to the endpoint."""
        now = self.now()
        self.log.add_arrived(data, now)
        self._guarded(lambda: self.endpoint.receive_datagram(data, now))

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier send (e.g. the peer's port is not open yet): nothing to do for UDP."""

    def _fire(self) -> None:
        self._timer, self._timer_at = None, None
        self._guarded(lambda: self.endpoint.handle_timer(self.now()))

    def _guarded(self, action) -> None:
        """Run one endpoint call, then flush and re-arm; an exception ends the agent's run."""
        if self.failed is not None and self.failed.done():
            return
        try:
            action()
            self._flush()
            self.after_call()
        except Exception as error:  # noqa: BLE001 - re-raised by `_run`; the agent exits non-zero
            if self.failed is not None:
                self.failed.set_exception(error)

    def _flush(self) -> None:
        assert self.transport is not None
        for datagram in self.endpoint.datagrams_to_send(self.now()):
            sent_s = self.now()  # read before the send: a pause in between counts as network delay, not less
            self.transport.sendto(datagram.payload)
            self.log.add_sent(datagram, sent_s)
        timer = self.endpoint.get_timer()
        if timer != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = timer
            self._timer = None if timer is None else asyncio.get_running_loop().call_at(self.t0 + timer, self._fire)

    def stop(self) -> None:
        """Cancel the pending timer."""
        if self._timer is not None:
            self._timer.cancel()


def _open_socket(config: AgentConfig) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
    sock.bind(config.bind)
    sock.connect(config.peer)
    sock.setblocking(False)
    return sock


def _wait_for_t0() -> float:
    """Announce readiness and read the run's time origin from standard input."""
    print("READY", flush=True)
    line = sys.stdin.readline()
    if not line:
        raise RuntimeError("the runner closed standard input before sending t0")
    return float(line)


async def _run(config: AgentConfig, endpoint: Endpoint, after_call, log: TrafficLog) -> None:
    sock = _open_socket(config)
    t0 = _wait_for_t0()
    loop = asyncio.get_running_loop()
    driver = EndpointDriver(endpoint, t0, log, after_call)
    finished: asyncio.Future[None] = loop.create_future()
    driver.failed = finished
    transport, _ = await loop.create_datagram_endpoint(lambda: driver, sock=sock)
    loop.call_at(t0 + config.end_s, lambda: finished.done() or finished.set_result(None))
    loop.call_at(t0, driver.start)
    try:
        await finished
    finally:
        driver.stop()
        transport.close()


def _precise_event_loop() -> asyncio.AbstractEventLoop:
    """An asyncio loop whose timers fire within microseconds: epoll and poll round a wait up to whole
    milliseconds (timers ~0.7 ms late on average), select takes microseconds; an agent has one socket."""
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def _play(config: AgentConfig, endpoint: Endpoint, after_call, log: TrafficLog) -> None:
    """Run the endpoint over UDP from t0 to the end of the run."""
    with asyncio.Runner(loop_factory=_precise_event_loop) as runner:
        runner.run(_run(config, endpoint, after_call, log))


def run_agent(config: AgentConfig) -> None:
    """Play the configured role for one run and write its logs."""
    with open(config.run_file, "rb") as handle:
        run: Run = pickle.load(handle)  # written by our own runner into the run's private work directory
    if config.role.startswith(CROSS_ROLE_PREFIX):
        log = TrafficLog()
        _play(config, cross_endpoint(run, config.role), lambda: None, log)
        log.write(Path(config.out_dir), config.role)
        return
    session = build_session(run)
    if isinstance(session, VideoSession):
        session.score_live = False  # scoring after the run keeps the receiver's clock honest
    sender_side = config.role == "sender"
    endpoint = session.sender if sender_side else session.receiver
    after_call = (lambda: None) if sender_side else session.after_receiver
    log = TrafficLog()
    _play(config, endpoint, after_call, log)
    out_dir = Path(config.out_dir)
    log.write(out_dir, config.role)
    if isinstance(session, VideoSession):
        if sender_side:
            columns = sender_frame_columns(session.sender)
            pq.write_table(pa.Table.from_pydict(columns), out_dir / "sender.frames.parquet")
        else:
            pq.write_table(pa.Table.from_pydict(session.receiver_columns()), out_dir / "receiver.frames.parquet")
            names = (run.scheme.name, run.network.name, run.video_name, run.seed)
            pq.write_table(session.bitstreams_table(*names), out_dir / "receiver.bitstreams.parquet")


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m testbed.agent CONFIG.json`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m testbed.agent CONFIG.json", file=sys.stderr)
        return 2
    try:
        config = AgentConfig.from_json(Path(argv[0]).read_text(encoding="utf-8"))
        run_agent(config)
    except Exception:  # noqa: BLE001 - the runner shows this traceback as the run's failure reason
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
