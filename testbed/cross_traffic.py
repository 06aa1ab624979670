"""The cross-traffic flows of a run as sans-IO endpoints, so both backends drive them like a scheme's."""

from __future__ import annotations

import numpy as np

from testbed.analysis.log_schema import CROSS_FLOW_PREFIX
from testbed.codecs.endpoint import Datagram, Endpoint
from testbed.codecs.probe import ProbeReceiver, probe_packet
from testbed.emulator.cross_traffic import cross_roles, send_times
from testbed.spec import Run


def cross_flow_name(index: int) -> str:
    """Flow name of the run's `index`-th cross-traffic flow, 1-based."""
    return f"{CROSS_FLOW_PREFIX}{index}"


class CrossTrafficSender:
    """Sends probe datagrams of `packet_bytes` at planned times; expects nothing back."""

    def __init__(self, times_s: np.ndarray, packet_bytes: int, flow: str):
        self.times_s = times_s.tolist()
        self.packet_bytes = packet_bytes
        self.flow = flow
        self._next = 0
        self._outbox: list[Datagram] = []

    def get_timer(self) -> float | None:
        """Planned time of the next datagram, None when done."""
        return self.times_s[self._next] if self._next < len(self.times_s) else None

    def handle_timer(self, now: float) -> None:
        """Emit every datagram planned by `now`."""
        while self._next < len(self.times_s) and self.times_s[self._next] <= now:
            self._outbox.append(Datagram(probe_packet(self._next, now, self.packet_bytes), flow=self.flow))
            self._next += 1

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Cross traffic takes no feedback."""

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Hand over the due datagrams."""
        out, self._outbox = self._outbox, []
        return out


def cross_traffic_endpoints(run: Run) -> list[tuple[str, Endpoint, Endpoint]]:
    """(flow name, sender, receiver) of every cross-traffic flow of the run's network, in spec order."""
    network = run.network
    flows = []
    for index, params in enumerate(network.cross_traffic, start=1):
        flow = cross_flow_name(index)
        times = send_times(params, run.experiment.duration_s, run.seed, network.name, flow)
        flows.append((flow, CrossTrafficSender(times, params.packet_bytes, flow), ProbeReceiver()))
    return flows


def cross_endpoint(run: Run, role: str) -> Endpoint:
    """The endpoint an agent in cross-traffic role `role` (see `cross_roles`) plays in `run`."""
    for index, (_, sender, receiver) in enumerate(cross_traffic_endpoints(run), start=1):
        sender_role, receiver_role = cross_roles(index)
        if role == sender_role:
            return sender
        if role == receiver_role:
            return receiver
    raise ValueError(f"role {role!r} is not a cross-traffic role of network {run.network.name!r} "
                     f"({len(run.network.cross_traffic)} cross-traffic flows)")
