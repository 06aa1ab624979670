"""Builds a scheme's sans-IO sender and receiver from its spec."""

from __future__ import annotations

from testbed.codecs.endpoint import Endpoint
from testbed.codecs.probe import ProbeReceiver, ProbeSender
from testbed.spec import Run


def build_endpoints(run: Run) -> tuple[Endpoint, Endpoint]:
    """Return (sender, receiver) for the run's scheme."""
    scheme = run.scheme
    return (ProbeSender(scheme.rate_kbps, scheme.packet_bytes, run.experiment.duration_s),
            ProbeReceiver())
