"""Loss models applied when a packet arrives at the bottleneck: Gilbert-Elliott, Bernoulli, trace."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from testbed.emulator.random_stream import UniformStream


class LossModel(Protocol):
    """Decides, per arriving packet, whether the packet is lost."""

    last_state: str | None

    def lost(self, now: float) -> bool:
        """Return True when the packet arriving at `now` (seconds) is lost."""
        ...


@dataclass(frozen=True)
class GilbertElliottParams:
    """netem `loss gemodel p r 1-h 1-k` as probabilities, plus the clock of the state chain."""

    p: float
    r: float
    loss_bad: float = 1.0
    loss_good: float = 0.0
    clock: str = "packet"
    slot_s: float = 1 / 30

    def stationary_loss(self) -> float:
        """Long-run loss probability (r*loss_good + p*loss_bad) / (p + r)."""
        if self.p + self.r == 0:
            return self.loss_good
        return (self.r * self.loss_good + self.p * self.loss_bad) / (self.p + self.r)


class GilbertElliottLoss:
    """Two-state Markov loss starting in good; the loss draw uses the state the packet arrived in.

    With clock "packet" the chain moves once per packet (netem); with clock "frame" it moves once per
    slot of virtual time, so schemes sending different packet counts share one state sequence.
    Transitions and loss draws come from separate streams for the same reason.
    """

    __slots__ = ("params", "last_state", "_bad", "_slot", "_per_packet", "_transitions", "_draws")

    def __init__(self, params: GilbertElliottParams, transitions: UniformStream, draws: UniformStream):
        self.params = params
        self.last_state: str | None = None
        self._bad = False
        self._slot = 0
        self._per_packet = params.clock == "packet"
        self._transitions = transitions
        self._draws = draws

    def _step(self) -> None:
        u = self._transitions.next()
        if self._bad:
            if u < self.params.r:
                self._bad = False
        elif u < self.params.p:
            self._bad = True

    def lost(self, now: float) -> bool:
        """Draw the loss of a packet arriving at `now`, then advance a per-packet chain."""
        if not self._per_packet:
            # Small epsilon: a packet sent exactly on a slot boundary belongs to the new slot.
            slot = int(now / self.params.slot_s + 1e-9)
            while self._slot < slot:
                self._step()
                self._slot += 1
        bad = self._bad
        self.last_state = "bad" if bad else "good"
        lost = self._draws.next() < (self.params.loss_bad if bad else self.params.loss_good)
        if self._per_packet:
            self._step()
        return lost


class BernoulliLoss:
    """Independent loss with a fixed probability."""

    __slots__ = ("rate", "last_state", "_draws")

    def __init__(self, rate: float, draws: UniformStream):
        self.rate = rate
        self.last_state: str | None = None
        self._draws = draws

    def lost(self, now: float) -> bool:
        """Return True with probability `rate`."""
        return self._draws.next() < self.rate


class PacketTraceLoss:
    """Replays per-packet outcomes (True = lost), looping unless `loop` is False (then no more loss)."""

    __slots__ = ("outcomes", "loop", "last_state", "_index")

    def __init__(self, outcomes: np.ndarray, loop: bool = True):
        self.outcomes = [bool(x) for x in outcomes]
        self.loop = loop
        self.last_state: str | None = None
        self._index = 0

    def lost(self, now: float) -> bool:
        """Return the next recorded outcome."""
        index = self._index
        self._index += 1
        if index >= len(self.outcomes):
            if not self.loop:
                return False
            index %= len(self.outcomes)
        return self.outcomes[index]


class IntervalTraceLoss:
    """Loses every packet arriving inside one of the recorded [start, end) intervals (seconds)."""

    __slots__ = ("_starts", "_ends", "last_state")

    def __init__(self, intervals: np.ndarray):
        self._starts = [float(s) for s, _ in intervals]
        self._ends = [float(e) for _, e in intervals]
        self.last_state: str | None = None

    def lost(self, now: float) -> bool:
        """Return True when `now` falls inside a lossy interval."""
        i = bisect.bisect_right(self._starts, now) - 1
        return i >= 0 and now < self._ends[i]


class NoLoss:
    """A lossless path."""

    __slots__ = ("last_state",)

    def __init__(self) -> None:
        self.last_state: str | None = None

    def lost(self, now: float) -> bool:
        """Never lose."""
        return False
