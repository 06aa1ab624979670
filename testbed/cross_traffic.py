"""The cross-traffic flows of a run as sans-IO endpoints, so both backends drive them like a scheme's."""

from __future__ import annotations

from testbed.analysis.log_schema import CROSS_FLOW_PREFIX
from testbed.codecs.endpoint import Endpoint
from testbed.codecs.probe import ProbeReceiver, ScheduledProbeSender
from testbed.emulator.cross_traffic import cross_roles, send_times
from testbed.spec import Run


def cross_flow_name(index: int) -> str:
    """Flow name of the run's `index`-th cross-traffic flow, 1-based."""
    return f"{CROSS_FLOW_PREFIX}{index}"


def cross_traffic_endpoints(run: Run) -> list[tuple[str, Endpoint, Endpoint]]:
    """(flow name, sender, receiver) of every cross-traffic flow of the run's network, in spec order."""
    network = run.network
    flows = []
    for index, params in enumerate(network.cross_traffic, start=1):
        flow = cross_flow_name(index)
        times = send_times(params, run.experiment.duration_s, run.seed, network.name, flow)
        sender = ScheduledProbeSender(times, params.packet_bytes, flow, tag=index)  # tag: no twin payloads
        flows.append((flow, sender, ProbeReceiver()))
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
