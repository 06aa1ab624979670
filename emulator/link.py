"""One direction of a bottleneck: loss on arrival -> drop-tail FIFO -> serializer -> propagation delay."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from testbed.emulator.delay import PropagationDelay
from testbed.emulator.loss import (
    BernoulliLoss,
    GilbertElliottLoss,
    GilbertElliottParams,
    IntervalTraceLoss,
    LossModel,
    NoLoss,
    PacketTraceLoss,
)
from testbed.emulator.queue import DropTailQueue
from testbed.emulator.random_stream import UniformStream
from testbed.emulator.serializer import (
    ConstantRate,
    DeliveryOpportunities,
    RateSchedule,
    Serializer,
    UnlimitedRate,
)

DROP_LOSS = "loss"
DROP_QUEUE = "queue"


@dataclass(frozen=True)
class BernoulliParams:
    """Independent loss with probability `rate`."""

    rate: float


@dataclass(frozen=True)
class PacketTraceParams:
    """Recorded per-packet outcomes (1 = lost)."""

    outcomes: np.ndarray = field(compare=False)
    loop: bool = True


@dataclass(frozen=True)
class IntervalTraceParams:
    """Recorded lossy intervals, rows of [start_s, end_s)."""

    intervals: np.ndarray = field(compare=False)


LossParams = GilbertElliottParams | BernoulliParams | PacketTraceParams | IntervalTraceParams


@dataclass(frozen=True)
class ConstantRateParams:
    """A fixed link rate."""

    kbps: float


@dataclass(frozen=True)
class RateScheduleParams:
    """A piecewise-constant rate from a `time_s,kbps` schedule."""

    times_s: np.ndarray = field(compare=False)
    kbps: np.ndarray = field(compare=False)


@dataclass(frozen=True)
class DeliveryTraceParams:
    """A Mahimahi delivery-opportunity trace (ms timestamps)."""

    opportunities_ms: np.ndarray = field(compare=False)
    loop: bool = True


RateParams = ConstantRateParams | RateScheduleParams | DeliveryTraceParams


@dataclass(frozen=True)
class LinkParams:
    """Everything that shapes one direction of the bottleneck."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    reorder: bool = False
    loss: LossParams | None = None
    rate: RateParams | None = None
    queue_bytes: int | None = None
    queue_packets: int | None = None


class Delivery(NamedTuple):
    """Fate of one packet: arrival time at the far end (None if dropped or never delivered)."""

    arrival: float | None
    drop: str | None
    ge_state: str | None


def _build_loss(params: LossParams | None, seed: int, key: tuple[str, ...]) -> LossModel:
    if params is None:
        return NoLoss()
    if isinstance(params, GilbertElliottParams):
        return GilbertElliottLoss(params, UniformStream(seed, *key, "ge-transitions"),
                                  UniformStream(seed, *key, "loss-draws"))
    if isinstance(params, BernoulliParams):
        return BernoulliLoss(params.rate, UniformStream(seed, *key, "loss-draws"))
    if isinstance(params, PacketTraceParams):
        return PacketTraceLoss(params.outcomes, params.loop)
    return IntervalTraceLoss(params.intervals)


def _build_serializer(params: RateParams | None) -> Serializer:
    if params is None:
        return UnlimitedRate()
    if isinstance(params, ConstantRateParams):
        return ConstantRate(params.kbps)
    if isinstance(params, RateScheduleParams):
        return RateSchedule(params.times_s, params.kbps)
    return DeliveryOpportunities(params.opportunities_ms, params.loop)


class Link:
    """A one-way bottleneck; `transmit` decides a packet's fate the moment it arrives."""

    __slots__ = ("loss", "queue", "serializer", "delay")

    def __init__(self, params: LinkParams, seed: int, *key: str):
        """Build the models; random streams are keyed by (seed, *key, purpose), never by order."""
        self.loss = _build_loss(params.loss, seed, key)
        self.queue = DropTailQueue(params.queue_bytes, params.queue_packets)
        self.serializer = _build_serializer(params.rate)
        jitter_draws = UniformStream(seed, *key, "jitter") if params.jitter_s > 0 else None
        self.delay = PropagationDelay(params.delay_s, params.jitter_s, params.reorder, jitter_draws)

    def transmit(self, size: int, now: float) -> Delivery:
        """Send `size` bytes into the link at `now` (seconds)."""
        if self.loss.lost(now):
            return Delivery(None, DROP_LOSS, self.loss.last_state)
        if not self.queue.admits(size, now):
            return Delivery(None, DROP_QUEUE, self.loss.last_state)
        start, finish = self.serializer.serve(size, now)
        self.queue.enqueue(size, start)
        if finish == math.inf:
            return Delivery(None, None, self.loss.last_state)
        return Delivery(self.delay.arrival(finish), None, self.loss.last_state)
