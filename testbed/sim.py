"""The `sim` backend: schemes' sans-IO endpoints joined by link models in deterministic virtual time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import pyarrow as pa

from testbed.codecs.endpoint import Endpoint
from testbed.cross_traffic import cross_traffic_endpoints
from testbed.emulator.events import EventLoop
from testbed.emulator.link import Link
from testbed.logs import PacketLog
from testbed.schemes import build_session
from testbed.spec import Run


@dataclass(frozen=True)
class RunOutput:
    """Logs of one run (frames and bitstreams are None for schemes without video)."""

    packets: pa.Table
    frames: pa.Table | None
    bitstreams: pa.Table | None


class _Node:
    """An endpoint, the link it sends on, and its armed timer."""

    __slots__ = ("endpoint", "link", "peer", "timer_at", "timer_token")

    def __init__(self, endpoint: Endpoint, link: Link):
        self.endpoint = endpoint
        self.link = link
        self.peer: _Node | None = None
        self.timer_at: float | None = None
        self.timer_token = 0


class SimNetwork:
    """Drives a sender and a receiver over a forward and a reverse link until `end_s`.

    Cross-traffic (sender, receiver) pairs send into the same forward link, so their packets compete with
    the scheme's for its loss model, FIFO and rate (a dumbbell); their receivers' replies, if any, would take
    the reverse link.
    """

    def __init__(self, sender: Endpoint, receiver: Endpoint, forward: Link, reverse: Link, end_s: float,
                 after_receiver: Callable[[], None] = lambda: None,
                 cross_traffic: Sequence[tuple[Endpoint, Endpoint]] = ()):
        self.loop = EventLoop()
        self.after_receiver = after_receiver
        self.log = PacketLog()
        self.end_s = end_s
        self.sender = _Node(sender, forward)
        self.receiver = _Node(receiver, reverse)
        self.nodes = [self.sender, self.receiver]
        for cross_sender, cross_receiver in cross_traffic:
            self.nodes += [_Node(cross_sender, forward), _Node(cross_receiver, reverse)]
        for node, peer in zip(self.nodes[::2], self.nodes[1::2]):
            node.peer, peer.peer = peer, node

    def run(self) -> PacketLog:
        """Run to the end time and return the packet log."""
        for node in self.nodes:
            self._after_call(node)
        loop = self.loop
        while (when := loop.next_time()) is not None and when <= self.end_s:
            loop.run_next()
        return self.log

    def _after_call(self, node: _Node) -> None:
        """Send what the endpoint queued and re-arm its timer."""
        now = self.loop.now
        for datagram in node.endpoint.datagrams_to_send(now):
            size = len(datagram.payload)
            arrival, drop, ge_state = node.link.transmit(size, now)
            if arrival is not None and arrival > self.end_s:
                arrival = None  # still in flight when the run ends
            self.log.add(datagram.flow, datagram.frame_id, size, now, arrival, drop, ge_state)
            if arrival is not None:
                self.loop.call_at(arrival, self._deliver, node.peer, datagram.payload)
        timer = node.endpoint.get_timer()
        if timer != node.timer_at:
            node.timer_at = timer
            node.timer_token += 1
            if timer is not None:
                self.loop.call_at(timer, self._fire, node, node.timer_token)
        if node is self.receiver:
            self.after_receiver()

    def _deliver(self, node: _Node, payload: bytes) -> None:
        node.endpoint.receive_datagram(payload, self.loop.now)
        self._after_call(node)

    def _fire(self, node: _Node, token: int) -> None:
        if token != node.timer_token:
            return  # superseded by a later get_timer()
        node.timer_at = None
        node.endpoint.handle_timer(self.loop.now)
        self._after_call(node)


def simulate(run: Run) -> RunOutput:
    """Execute one run on the `sim` backend."""
    session = build_session(run)
    network = run.network
    forward = Link(network.forward, run.seed, network.name, "forward")
    reverse = Link(network.reverse, run.seed, network.name, "reverse")
    end_s = run.experiment.duration_s + run.experiment.drain_s
    cross_traffic = [(sender, receiver) for _, sender, receiver in cross_traffic_endpoints(run)]
    log = SimNetwork(session.sender, session.receiver, forward, reverse, end_s, session.after_receiver,
                     cross_traffic).run()
    names = (run.scheme.name, network.name, run.video_name, run.seed)
    return RunOutput(log.to_table(*names), session.frames_table(*names), session.bitstreams_table(*names))
