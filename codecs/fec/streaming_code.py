"""A Tambur-style streaming code: parity of FEC frame t also protects frames t-1..t-tau.

Sender: `StreamingEncoder.encode` turns each FEC frame (at most 16384 bytes; split bigger video frames)
into data packets then parity packets, numbering FEC frames 0, 1, 2, ... (see streaming_layout for the
packetization and streaming_coefficients for the code itself).

Frame-size protection is a plain repetition code: every packet carries its own frame's size and the
sizes of the previous tau frames, so a receiver learns the size (hence the stripe count) of a frame that
lost all its packets from any packet of the next tau frames. (Tambur uses a small separate erasure code;
repetition costs 4*tau header bytes and is trivially robust.)

Receiver window rule (what `StreamingDecoder` implements, packet by packet):
  1. A malformed packet, or one that contradicts what is already known (sizes, packet counts), is
     dropped and counted in `malformed`.
  2. Let N be the newest FEC frame seen; the window is frames max(0, N-2tau)..N. A packet of a frame
     below the window is dropped. When a packet moves N forward, every frame that leaves the window
     without being recovered is abandoned for good (reported once by `abandoned()`), including frames
     of which nothing ever arrived.
  3. The unknowns are the missing stripes of the unrecovered window frames whose size is known. A
     received parity stripe of a window frame is usable iff each stripe it combines is known (received
     or decoded) or is one of the unknowns; parities touching an abandoned frame's missing stripes are
     not. An unknown is decoded iff it is determined by the usable parities (its unit vector lies in
     their row space), found by Gaussian elimination on the actual bytes.
  4. A frame is recovered once all its data stripes are known; `receive` reports it then, once.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from testbed.codecs.fec import gf256
from testbed.codecs.fec.streaming_coefficients import coefficient_table
from testbed.codecs.fec.streaming_layout import (
    MAX_FEC_FRAME_BYTES,
    MAX_STRIPES_PER_PACKET,
    STRIPE_BYTES,
    FrameLayout,
    data_stripe_count,
)

DEFAULT_TAU = 3


@dataclass(frozen=True)
class StreamingPacket:
    """One packet of FEC frame `fec_frame`: positions below data_packets carry data, the rest parity.

    previous_sizes[i] is the size of FEC frame fec_frame-1-i (0 for frames before frame 0).
    """

    fec_frame: int
    position: int
    data_packets: int
    parity_packets: int
    frame_size: int
    previous_sizes: tuple[int, ...]
    payload: bytes


def _stripes_of(data: bytes, stripe_count: int) -> np.ndarray:
    padded = data.ljust(stripe_count * STRIPE_BYTES, b"\0")
    return np.frombuffer(padded, dtype=np.uint8).reshape(stripe_count, STRIPE_BYTES)


class StreamingEncoder:
    """Encodes consecutive FEC frames; keeps the stripes of the last tau frames for their parity."""

    def __init__(self, tau: int = DEFAULT_TAU, max_stripes_per_packet: int = MAX_STRIPES_PER_PACKET):
        self.tau = tau
        self.max_stripes_per_packet = max_stripes_per_packet
        self._coefficients = coefficient_table(tau)
        self._next_frame = 0
        # Most recent last; entry i from the end is frame next_frame-1-i.
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=tau)

    def encode(self, data: bytes, ratio: Fraction) -> list[StreamingPacket]:
        """Packets of the next FEC frame: data packets, then ceil(stripes * ratio) stripes of parity."""
        layout = FrameLayout.for_frame(len(data), Fraction(ratio), self.max_stripes_per_packet)
        stripes = _stripes_of(bytes(data), layout.data_stripes)
        parity = gf256.matmul(self._coefficients[0, : layout.parity_stripes, : layout.data_stripes], stripes)
        for distance, (_, old_stripes) in enumerate(reversed(self._history), start=1):
            weights = self._coefficients[distance, : layout.parity_stripes, : len(old_stripes)]
            parity ^= gf256.matmul(weights, old_stripes)
        previous_sizes = tuple(size for size, _ in reversed(self._history))
        previous_sizes += (0,) * (self.tau - len(previous_sizes))
        per_packet = layout.stripes_per_packet
        payloads = [
            rows[start : start + per_packet].tobytes()
            for rows in (stripes, parity)
            for start in range(0, len(rows), per_packet)
        ]
        frame = self._next_frame
        self._next_frame += 1
        self._history.append((len(data), stripes))
        return [
            StreamingPacket(
                frame, position, layout.data_packets, layout.parity_packets, len(data), previous_sizes, payload
            )
            for position, payload in enumerate(payloads)
        ]


# A packet this far beyond the newest frame is refused: it would abandon the whole window, and listing
# the skipped frames must stay bounded (Tambur's wire format wraps frame numbers at 15 bits anyway).
MAX_FRAME_JUMP = 1 << 14


@dataclass
class _FrameState:
    """What the receiver knows of one FEC frame whose size it has learnt."""

    size: int
    stripes: np.ndarray
    known: np.ndarray
    packet_counts: tuple[int, int] | None = None
    parity: dict[int, np.ndarray] = field(default_factory=dict)
    recovered: bool = False

    @classmethod
    def of_size(cls, size: int) -> _FrameState:
        stripe_count = data_stripe_count(size)
        return cls(size, np.zeros((stripe_count, STRIPE_BYTES), np.uint8), np.zeros(stripe_count, bool))


@dataclass
class _ParityBlock:
    """The received parity stripes of one frame, restricted to the current unknowns."""

    frame: int
    parity_indices: np.ndarray
    unknown_weights: np.ndarray


def _is_int(value: object) -> bool:
    return type(value) is int


def _well_formed(packet: StreamingPacket, tau: int) -> FrameLayout | None:
    """The packet's frame layout if its fields are self-consistent, else None."""
    fields = (packet.fec_frame, packet.position, packet.data_packets, packet.parity_packets, packet.frame_size)
    if not all(_is_int(value) for value in fields) or not isinstance(packet.payload, bytes):
        return None
    sizes = packet.previous_sizes
    if not isinstance(sizes, tuple) or len(sizes) != tau or not all(_is_int(size) for size in sizes):
        return None
    if packet.fec_frame < 0 or not all(0 <= size <= MAX_FEC_FRAME_BYTES for size in sizes):
        return None
    # Frames before frame 0 do not exist and are announced as size 0.
    if any(sizes[i] != 0 for i in range(packet.fec_frame, tau)):
        return None
    layout = FrameLayout.from_packet_counts(packet.frame_size, packet.data_packets, packet.parity_packets)
    if layout is None or not 0 <= packet.position < layout.data_packets + layout.parity_packets:
        return None
    return layout if len(packet.payload) == layout.payload_bytes else None


class StreamingDecoder:
    """Receiver side of the streaming code; see the module docstring for the window rule."""

    def __init__(self, tau: int = DEFAULT_TAU):
        self.tau = tau
        self.malformed = 0
        self._coefficients = coefficient_table(tau)
        self._frames: dict[int, _FrameState] = {}
        self._newest: int | None = None
        self._window_start = 0
        self._newly_abandoned: list[int] = []

    @property
    def newest_frame(self) -> int | None:
        """Highest FEC frame number accepted so far (None before the first packet)."""
        return self._newest

    def receive(self, packet: StreamingPacket) -> list[int]:
        """Take one packet; return the FEC frames it made recovered, ascending."""
        layout = _well_formed(packet, self.tau)
        if layout is None or packet.fec_frame - (-1 if self._newest is None else self._newest) > MAX_FRAME_JUMP:
            self.malformed += 1
            return []
        if packet.fec_frame < self._window_start:
            return []
        if not self._consistent(packet):
            self.malformed += 1
            return []
        if self._newest is None or packet.fec_frame > self._newest:
            self._advance_window(packet.fec_frame)
        self._learn_sizes(packet)
        state = self._frames[packet.fec_frame]
        state.packet_counts = (packet.data_packets, packet.parity_packets)
        if not self._store(state, layout, packet):
            return []
        self._decode()
        return self._collect_recovered()

    def frame_data(self, fec_frame: int) -> bytes | None:
        """Bytes of a recovered frame (padding stripped), while it is among the last 3*tau+1 frames."""
        state = self._frames.get(fec_frame)
        if state is None or not state.recovered:
            return None
        return state.stripes.tobytes()[: state.size]

    def frame_size(self, fec_frame: int) -> int | None:
        """Size of a frame as learnt from its own packets or later packets' headers, while it is held."""
        state = self._frames.get(fec_frame)
        return None if state is None else state.size

    def abandoned(self) -> list[int]:
        """Frames that left the window unrecovered since the last call, ascending; clears the list."""
        frames, self._newly_abandoned = self._newly_abandoned, []
        return frames

    def _announced_sizes(self, packet: StreamingPacket) -> list[tuple[int, int]]:
        announced = [(packet.fec_frame, packet.frame_size)]
        announced += [(packet.fec_frame - 1 - i, size) for i, size in enumerate(packet.previous_sizes)]
        return [(frame, size) for frame, size in announced if frame >= 0]

    def _consistent(self, packet: StreamingPacket) -> bool:
        for frame, size in self._announced_sizes(packet):
            state = self._frames.get(frame)
            if state is not None and state.size != size:
                return False
        state = self._frames.get(packet.fec_frame)
        counts = (packet.data_packets, packet.parity_packets)
        return state is None or state.packet_counts in (None, counts)

    def _advance_window(self, newest: int) -> None:
        start = max(0, newest - 2 * self.tau)
        for frame in range(self._window_start, start):
            state = self._frames.get(frame)
            if state is None or not state.recovered:
                self._newly_abandoned.append(frame)
            if state is not None:
                state.parity.clear()
        # Parity of window frames combines frames down to start - tau: keep those (known stripes matter).
        for frame in [frame for frame in self._frames if frame < start - self.tau]:
            del self._frames[frame]
        self._newest = newest
        self._window_start = start

    def _learn_sizes(self, packet: StreamingPacket) -> None:
        for frame, size in self._announced_sizes(packet):
            if frame >= self._window_start and frame not in self._frames:
                self._frames[frame] = _FrameState.of_size(size)

    def _store(self, state: _FrameState, layout: FrameLayout, packet: StreamingPacket) -> bool:
        """Keep the packet's stripes; False if it taught nothing new."""
        per_packet = layout.stripes_per_packet
        rows = np.frombuffer(packet.payload, dtype=np.uint8).reshape(per_packet, STRIPE_BYTES)
        if packet.position < layout.data_packets:
            first = packet.position * per_packet
            new = ~state.known[first : first + per_packet]
            if state.recovered or not new.any():
                return False
            state.stripes[first : first + per_packet][new] = rows[new]
            state.known[first : first + per_packet] = True
            return True
        first = (packet.position - layout.data_packets) * per_packet
        if first in state.parity:
            return False
        for offset, row in enumerate(rows):
            state.parity[first + offset] = row
        return True

    def _unknown_columns(self) -> dict[int, tuple[int, np.ndarray]]:
        """For each unrecovered window frame of known size: (first column, its missing stripe indices)."""
        columns: dict[int, tuple[int, np.ndarray]] = {}
        offset = 0
        for frame in range(self._window_start, self._newest + 1):
            state = self._frames.get(frame)
            if state is not None and not state.recovered:
                missing = np.flatnonzero(~state.known)
                columns[frame] = (offset, missing)
                offset += len(missing)
        return columns

    def _parity_blocks(self, columns: dict[int, tuple[int, np.ndarray]], unknowns: int) -> list[_ParityBlock]:
        """Usable received parity of the window that involves at least one unknown."""
        blocks = []
        # Only frames up to tau after an unknown frame can combine its stripes.
        first_parity_frame = min(columns)
        last_parity_frame = min(self._newest, max(columns) + self.tau)
        for parity_frame in range(first_parity_frame, last_parity_frame + 1):
            state = self._frames.get(parity_frame)
            if state is None or not state.parity:
                continue
            parity_indices = np.array(sorted(state.parity))
            weights = np.zeros((len(parity_indices), unknowns), np.uint8)
            usable = np.ones(len(parity_indices), bool)
            for frame in range(max(0, parity_frame - self.tau), parity_frame + 1):
                source = self._frames.get(frame)
                if source is None:
                    usable[:] = False
                    break
                missing = ~source.known
                if not missing.any():
                    continue
                frame_weights = self._coefficients[parity_frame - frame][parity_indices][:, : len(missing)][:, missing]
                if frame in columns:
                    offset = columns[frame][0]
                    weights[:, offset : offset + frame_weights.shape[1]] = frame_weights
                else:
                    # A missing stripe of an abandoned frame can never be solved for.
                    usable &= ~frame_weights.any(axis=1)
            keep = usable & weights.any(axis=1)
            if keep.any():
                blocks.append(_ParityBlock(parity_frame, parity_indices[keep], weights[keep]))
        return blocks

    def _right_hand_side(self, block: _ParityBlock) -> np.ndarray:
        """Received parity bytes minus the contribution of the known stripes they combine."""
        parity_state = self._frames[block.frame]
        rhs = np.stack([parity_state.parity[index] for index in block.parity_indices])
        for frame in range(max(0, block.frame - self.tau), block.frame + 1):
            source = self._frames[frame]
            weights = self._coefficients[block.frame - frame][block.parity_indices][:, : len(source.known)]
            weights = weights[:, source.known]
            rhs ^= gf256.matmul(weights, source.stripes[source.known])
        return rhs

    def _decode(self) -> None:
        columns = self._unknown_columns()
        unknowns = sum(len(missing) for _, missing in columns.values())
        if unknowns == 0:
            return
        blocks = self._parity_blocks(columns, unknowns)
        if not blocks:
            return
        system = np.vstack([block.unknown_weights for block in blocks])
        reduced, pivots = gf256.row_reduce(system)
        # An unknown is determined iff its unit vector is in the row space: in reduced row echelon form,
        # iff its pivot row has no other nonzero entry.
        determined = [(row, column) for row, column in enumerate(pivots) if np.count_nonzero(reduced[row]) == 1]
        if not determined:
            return
        rhs = np.vstack([self._right_hand_side(block) for block in blocks])
        solved, _ = gf256.row_reduce(np.hstack([system, rhs]), pivot_columns=unknowns)
        owner: dict[int, tuple[int, int]] = {}
        for frame, (offset, missing) in columns.items():
            for index, stripe in enumerate(missing):
                owner[offset + index] = (frame, int(stripe))
        for row, column in determined:
            frame, stripe = owner[column]
            state = self._frames[frame]
            state.stripes[stripe] = solved[row, unknowns:]
            state.known[stripe] = True

    def _collect_recovered(self) -> list[int]:
        recovered = []
        for frame in range(self._window_start, self._newest + 1):
            state = self._frames.get(frame)
            if state is not None and not state.recovered and state.known.all():
                state.recovered = True
                recovered.append(frame)
        return recovered
