"""LinkParams as plain JSON data, for processes that shape a link outside the runner (the userspace shaper)."""

from __future__ import annotations

from typing import Any

from testbed.emulator.link import (
    BernoulliParams,
    ConstantRateParams,
    DeliveryTraceParams,
    IntervalTraceParams,
    LinkParams,
    PacketTraceParams,
    RateScheduleParams,
)
from testbed.emulator.loss import GilbertElliottParams


def _loss_to_dict(loss: Any) -> dict[str, Any] | None:
    if loss is None:
        return None
    if isinstance(loss, BernoulliParams):
        return {"kind": "bernoulli", "rate": loss.rate}
    if isinstance(loss, GilbertElliottParams):
        return {"kind": "gilbert_elliott", "p": loss.p, "r": loss.r, "loss_bad": loss.loss_bad,
                "loss_good": loss.loss_good, "clock": loss.clock, "slot_s": loss.slot_s}
    if isinstance(loss, PacketTraceParams):
        return {"kind": "packet_trace", "outcomes": loss.outcomes.astype(int).tolist(), "loop": loss.loop}
    if isinstance(loss, IntervalTraceParams):
        return {"kind": "interval_trace", "intervals": loss.intervals.tolist()}
    raise TypeError(f"unknown loss parameters {loss!r}")


def _rate_to_dict(rate: Any) -> dict[str, Any] | None:
    if rate is None:
        return None
    if isinstance(rate, ConstantRateParams):
        return {"kind": "constant", "kbps": rate.kbps}
    if isinstance(rate, RateScheduleParams):
        return {"kind": "schedule", "times_s": rate.times_s.tolist(), "kbps": rate.kbps.tolist()}
    if isinstance(rate, DeliveryTraceParams):
        return {"kind": "delivery_trace", "opportunities_ms": rate.opportunities_ms.tolist(), "loop": rate.loop}
    raise TypeError(f"unknown rate parameters {rate!r}")


def link_params_to_dict(params: LinkParams) -> dict[str, Any]:
    """The JSON form of `params` that `link_params_from_dict` reads back to an equal LinkParams."""
    return {"delay_s": params.delay_s, "jitter_s": params.jitter_s, "reorder": params.reorder,
            "loss": _loss_to_dict(params.loss), "rate": _rate_to_dict(params.rate),
            "queue_bytes": params.queue_bytes, "queue_packets": params.queue_packets}
