"""StreamingDecoder against an independent oracle, over thousands of random and bursty loss patterns.

The oracle below shares no code with testbed.codecs.fec: its own GF(256) (shift-and-add), its own
coefficients (re-derived from the formula documented in streaming_coefficients), its own packetization
rule, and a rank test instead of the decoder's elimination. It models the decoder's window rule, stated
here independently:

  * Events are packet arrivals. N is the newest frame among arrived packets; the window is frames
    max(0, N - 2*tau) .. N. A packet of a frame below the window is ignored.
  * When N grows, every frame that leaves the window unrecovered is lost for good ("abandoned"),
    whether or not anything of it ever arrived.
  * A frame's size is learnt from any packet of the frame itself or of the next tau frames, but only
    while the frame is in the window.
  * The unknowns are the missing stripes of the unrecovered window frames of learnt size; a stripe once
    determined stays known.
  * A received parity stripe of a window frame is usable iff every stripe it combines with a nonzero
    coefficient is known or is an unknown; so it is unusable if it touches a frame of unlearnt size or a
    missing stripe of an abandoned frame.
  * After each arrival, unknown x_i is determined iff the unit vector e_i lies in the row space of the
    usable parities restricted to the unknowns. A frame is recovered once all its stripes are known.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from fractions import Fraction

import pytest

from testbed.codecs.fec.streaming_code import StreamingDecoder, StreamingEncoder, StreamingPacket

from gf_reference import slow_mul

# --- independent GF(256) and code definition ---------------------------------------------------------


MUL = [[slow_mul(a, b) for b in range(256)] for a in range(256)]
INV = [0] + [next(b for b in range(1, 256) if MUL[a][b] == 1) for a in range(1, 256)]


def coefficient(tau: int, distance: int, row: int, stripe: int) -> int:
    """Weight of stripe `stripe` of frame t-distance in parity stripe `row` of frame t (documented formula)."""
    if not 0 <= distance <= tau:
        return 0
    if 0 < distance < tau and stripe % 2 == 1:
        return 0
    row_symbol = 64 + (distance * (192 // (tau + 1)) + row) % 192
    return INV[row_symbol ^ stripe]


@dataclass(frozen=True)
class Layout:
    data_stripes: int
    parity_stripes: int
    per_packet: int

    @classmethod
    def of(cls, size: int, ratio: Fraction) -> Layout:
        n = max(1, math.ceil(size / 256))
        p = math.ceil(n * ratio)
        k = max(k for k in range(1, 6) if n % k == 0 and p % k == 0)
        return cls(n, p, k)

    @property
    def data_packets(self) -> int:
        return self.data_stripes // self.per_packet


# --- the oracle ----------------------------------------------------------------------------------------


def reduced_basis(rows: list[list[int]]) -> list[tuple[int, list[int]]]:
    """A fully reduced row echelon basis (pivot column, row) of the span of `rows`."""
    basis: list[tuple[int, list[int]]] = []
    for row in rows:
        vector = list(row)
        for pivot, base in basis:
            factor = vector[pivot]
            if factor:
                vector = [x ^ MUL[factor][y] for x, y in zip(vector, base)]
        lead = next((i for i, x in enumerate(vector) if x), None)
        if lead is None:
            continue
        scale = INV[vector[lead]]
        vector = [MUL[scale][x] for x in vector]
        cleaned = []
        for pivot, base in basis:
            factor = base[lead]
            if factor:
                base = [x ^ MUL[factor][y] for x, y in zip(base, vector)]
            cleaned.append((pivot, base))
        basis = cleaned + [(lead, vector)]
    return basis


def in_row_space(vector: list[int], basis: list[tuple[int, list[int]]]) -> bool:
    for pivot, base in basis:
        factor = vector[pivot]
        if factor:
            vector = [x ^ MUL[factor][y] for x, y in zip(vector, base)]
    return not any(vector)


@dataclass
class WindowOracle:
    tau: int
    layouts: list[Layout]
    newest: int | None = None
    start: int = 0
    learnt: set[int] = field(default_factory=set)
    known: dict[int, set[int]] = field(default_factory=dict)
    parity: dict[int, set[int]] = field(default_factory=dict)
    recovered: set[int] = field(default_factory=set)
    abandoned: set[int] = field(default_factory=set)

    def arrive(self, frame: int, position: int) -> tuple[list[int], list[int]]:
        """(frames recovered by this arrival, frames abandoned by it)."""
        if frame < self.start:
            return [], []
        abandoned_now = []
        if self.newest is None or frame > self.newest:
            new_start = max(0, frame - 2 * self.tau)
            for old in range(self.start, new_start):
                if old not in self.recovered:
                    self.abandoned.add(old)
                    abandoned_now.append(old)
            self.newest, self.start = frame, new_start
        for sized in range(max(self.start, frame - self.tau), frame + 1):
            self.learnt.add(sized)
        layout = self.layouts[frame]
        k = layout.per_packet
        if position < layout.data_packets:
            self.known.setdefault(frame, set()).update(range(position * k, position * k + k))
        else:
            first = (position - layout.data_packets) * k
            self.parity.setdefault(frame, set()).update(range(first, first + k))
        self._determine()
        window = range(self.start, self.newest + 1)
        recovered_now = [
            f
            for f in window
            if f in self.learnt
            and f not in self.recovered
            and len(self.known.get(f, ())) == self.layouts[f].data_stripes
        ]
        self.recovered.update(recovered_now)
        return recovered_now, abandoned_now

    def _determine(self) -> None:
        window = range(self.start, self.newest + 1)
        unknowns = [
            (f, s)
            for f in window
            if f in self.learnt and f not in self.recovered
            for s in range(self.layouts[f].data_stripes)
            if s not in self.known.get(f, ())
        ]
        if not unknowns:
            return
        column = {unknown: i for i, unknown in enumerate(unknowns)}
        rows = []
        for t in window:
            for r in sorted(self.parity.get(t, ())):
                row = [0] * len(unknowns)
                usable = True
                for f in range(max(0, t - self.tau), t + 1):
                    if f not in self.learnt:
                        usable = False
                        break
                    for s in range(self.layouts[f].data_stripes):
                        weight = coefficient(self.tau, t - f, r, s)
                        if weight == 0 or s in self.known.get(f, ()):
                            continue
                        if (f, s) in column:
                            row[column[(f, s)]] = weight
                        else:
                            usable = False
                if usable and any(row):
                    rows.append(row)
        basis = reduced_basis(rows)
        for i, (f, s) in enumerate(unknowns):
            unit = [0] * len(unknowns)
            unit[i] = 1
            if in_row_space(unit, basis):
                self.known.setdefault(f, set()).add(s)


# --- loss patterns ---------------------------------------------------------------------------------------


def iid_loss(rate: float):
    def lost(rng: random.Random, packets_per_frame: list[int]) -> list[list[bool]]:
        return [[rng.random() < rate for _ in range(count)] for count in packets_per_frame]

    return lost


def gilbert_elliott_loss(p: float, r: float, loss_good: float, loss_bad: float, per_frame: bool):
    """GE channel; `per_frame` moves the chain once per frame (Tambur's emulation), else once per packet."""

    def lost(rng: random.Random, packets_per_frame: list[int]) -> list[list[bool]]:
        bad = False
        pattern = []
        for count in packets_per_frame:
            frame_pattern = []
            for _ in range(count):
                frame_pattern.append(rng.random() < (loss_bad if bad else loss_good))
                if not per_frame:
                    bad = rng.random() >= r if bad else rng.random() < p
            if per_frame:
                bad = rng.random() >= r if bad else rng.random() < p
            pattern.append(frame_pattern)
        return pattern

    return lost


def shuffle_locally(rng: random.Random, packets: list[StreamingPacket]) -> list[StreamingPacket]:
    """Reorder packets by up to a few positions and duplicate some (a jittery network)."""
    keyed = [(index + rng.uniform(0, 4), packet) for index, packet in enumerate(packets)]
    keyed += [(index + rng.uniform(0, 8), packet) for index, packet in enumerate(packets) if rng.random() < 0.05]
    return [packet for _, packet in sorted(keyed, key=lambda item: item[0])]


RATIOS = [Fraction(0), Fraction(1, 4), Fraction(1, 2), Fraction(1)]


@dataclass(frozen=True)
class Config:
    tau: int
    loss: object
    frames: int = 24
    max_size: int = 1536
    ratios: tuple[Fraction, ...] = (Fraction(1, 2), Fraction(1))
    reorder: bool = False


@dataclass
class Tally:
    patterns: int = 0
    late_recoveries: int = 0
    abandoned: int = 0


def run_pattern(config: Config, seed: int, tally: Tally) -> None:
    rng = random.Random(seed)
    sizes = [rng.choice([rng.randint(0, config.max_size), 512, 1024, 1280, 2048]) for _ in range(config.frames)]
    sizes = [min(size, config.max_size) for size in sizes]
    ratios = [rng.choice(config.ratios) for _ in range(config.frames)]
    data = [rng.randbytes(size) for size in sizes]
    layouts = [Layout.of(size, ratio) for size, ratio in zip(sizes, ratios)]
    encoder = StreamingEncoder(config.tau)
    sent = [encoder.encode(payload, ratio) for payload, ratio in zip(data, ratios)]
    for layout, packets in zip(layouts, sent):
        # The encoder follows the packetization the oracle derives on its own.
        assert [(p.position, p.data_packets, len(p.payload)) for p in packets] == [
            (i, layout.data_packets, layout.per_packet * 256)
            for i in range(layout.data_packets + layout.parity_stripes // layout.per_packet)
        ]
    pattern = config.loss(rng, [len(packets) for packets in sent])
    arrivals = [p for packets, lost in zip(sent, pattern) for p, gone in zip(packets, lost) if not gone]
    if config.reorder:
        arrivals = shuffle_locally(rng, arrivals)
    decoder = StreamingDecoder(config.tau)
    oracle = WindowOracle(config.tau, layouts)
    for event, packet in enumerate(arrivals):
        recovered = decoder.receive(packet)
        abandoned = decoder.abandoned()
        expected_recovered, expected_abandoned = oracle.arrive(packet.fec_frame, packet.position)
        context = f"seed {seed}, event {event}, packet of frame {packet.fec_frame} position {packet.position}"
        assert recovered == expected_recovered, context
        assert abandoned == expected_abandoned, context
        for frame in recovered:
            assert decoder.frame_data(frame) == data[frame], context
            tally.late_recoveries += frame != packet.fec_frame
        tally.abandoned += len(abandoned)
    assert decoder.malformed == 0
    tally.patterns += 1


THESIS_GE = dict(p=0.068, r=0.852, loss_good=0.04, per_frame=True)
CONFIGS = {
    "iid-5%": (Config(3, iid_loss(0.05)), 250),
    "iid-10%": (Config(3, iid_loss(0.10)), 250),
    "iid-20%": (Config(3, iid_loss(0.20)), 250),
    "iid-35%": (Config(3, iid_loss(0.35)), 200),
    "iid-50%": (Config(3, iid_loss(0.50)), 150),
    "ge-thesis-low": (Config(3, gilbert_elliott_loss(loss_bad=0.25, **THESIS_GE)), 200),
    "ge-thesis-medium": (Config(3, gilbert_elliott_loss(loss_bad=0.5, **THESIS_GE)), 200),
    "ge-thesis-high": (Config(3, gilbert_elliott_loss(loss_bad=0.75, **THESIS_GE)), 200),
    "ge-whole-frames": (
        Config(3, gilbert_elliott_loss(0.15, 0.5, 0.0, 1.0, per_frame=True), ratios=tuple(RATIOS)),
        200,
    ),
    "ge-per-packet": (Config(3, gilbert_elliott_loss(0.05, 0.3, 0.02, 0.8, per_frame=False)), 200),
    "tau1-iid-20%": (Config(1, iid_loss(0.2), ratios=tuple(RATIOS)), 150),
    "tau2-ge": (Config(2, gilbert_elliott_loss(0.1, 0.5, 0.02, 0.9, per_frame=True)), 150),
    "tau4-iid-25%": (Config(4, iid_loss(0.25), frames=20), 80),
    "large-frames-iid-15%": (Config(3, iid_loss(0.15), frames=16, max_size=4096), 40),
    "reordered-iid-20%": (Config(3, iid_loss(0.2), reorder=True), 200),
    "reordered-ge": (Config(3, gilbert_elliott_loss(0.1, 0.5, 0.02, 0.9, per_frame=True), reorder=True), 150),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_recovers_exactly_what_the_oracle_says(name):
    config, patterns = CONFIGS[name]
    tally = Tally()
    for seed in range(patterns):
        run_pattern(config, seed * 7919 + len(name), tally)
    assert tally.patterns == patterns
    # Guard against a vacuous comparison: every configuration must exercise decoding across frames.
    assert tally.late_recoveries > 0
    if "5%" not in name:
        assert tally.abandoned > 0


def test_parity_bytes_follow_the_documented_coefficients():
    """Recompute parity stripes byte by byte in pure Python from the oracle's coefficients."""
    rng = random.Random(99)
    tau = 3
    encoder = StreamingEncoder(tau)
    history: list[list[bytes]] = []
    for frame in range(7):
        size = rng.randint(1, 2300)
        payload = rng.randbytes(size)
        layout = Layout.of(size, Fraction(1, 2))
        packets = encoder.encode(payload, Fraction(1, 2))
        padded = payload.ljust(layout.data_stripes * 256, b"\0")
        history.append([padded[i * 256 : (i + 1) * 256] for i in range(layout.data_stripes)])
        parity = b"".join(p.payload for p in packets[layout.data_packets :])
        for r in range(layout.parity_stripes):
            expected = bytearray(256)
            for f in range(max(0, frame - tau), frame + 1):
                for s, stripe in enumerate(history[f]):
                    weight = coefficient(tau, frame - f, r, s)
                    for i, byte in enumerate(stripe):
                        expected[i] ^= MUL[weight][byte]
            assert parity[r * 256 : (r + 1) * 256] == bytes(expected), (frame, r)
