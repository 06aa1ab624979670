"""LinkParams as plain JSON data, for processes that shape a link outside the runner (the userspace shaper).

The JSON form is documented in `testbed.emulator.userspace_shaper`."""

from __future__ import annotations

from typing import Any

import numpy as np

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


def link_params_from_dict(d: dict[str, Any] | None) -> LinkParams:
    """Build `LinkParams` from its JSON form (the inverse of `link_params_to_dict`)."""
    d = dict(d or {})
    loss = d.pop("loss", None)
    rate = d.pop("rate", None)
    return LinkParams(loss=_loss_from_dict(loss), rate=_rate_from_dict(rate), **d)


def _loss_from_dict(d: dict[str, Any] | None):
    if d is None:
        return None
    d = dict(d)
    kind = d.pop("kind")
    if kind == "bernoulli":
        return BernoulliParams(**d)
    if kind in ("gilbert_elliott", "ge"):
        return GilbertElliottParams(**d)
    if kind == "packet_trace":
        return PacketTraceParams(np.asarray(d.pop("outcomes"), dtype=np.int8), **d)
    if kind == "interval_trace":
        return IntervalTraceParams(np.asarray(d.pop("intervals"), dtype=np.float64).reshape(-1, 2))
    raise ValueError(f"unknown loss kind {kind!r}")


def _rate_from_dict(d: dict[str, Any] | None):
    if d is None:
        return None
    d = dict(d)
    kind = d.pop("kind")
    if kind == "constant":
        return ConstantRateParams(**d)
    if kind == "schedule":
        return RateScheduleParams(np.asarray(d["times_s"], dtype=np.float64), np.asarray(d["kbps"], dtype=np.float64))
    if kind == "delivery_trace":
        return DeliveryTraceParams(np.asarray(d.pop("opportunities_ms"), dtype=np.float64), **d)
    raise ValueError(f"unknown rate kind {kind!r}")
