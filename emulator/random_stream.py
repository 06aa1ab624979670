"""Seeded uniform random streams keyed by name, so one link's draws never depend on another's."""

from __future__ import annotations

import hashlib

import numpy as np

_BLOCK = 4096


def stable_key(*parts: str | int) -> tuple[int, ...]:
    """Map names and numbers to a spawn key that is stable across processes and Python versions."""
    key = []
    for part in parts:
        digest = hashlib.sha256(str(part).encode()).digest()
        key.append(int.from_bytes(digest[:4], "big"))
    return tuple(key)


class UniformStream:
    """Uniform [0, 1) draws from their own PCG64 generator, fetched in blocks for speed.

    Block size never changes the sequence: PCG64 yields one double per 64-bit output.
    """

    __slots__ = ("_generator", "_block", "_index")

    def __init__(self, seed: int, *key: str | int) -> None:
        sequence = np.random.SeedSequence(entropy=seed, spawn_key=stable_key(*key))
        self._generator = np.random.Generator(np.random.PCG64(sequence))
        self._block: list[float] = []
        self._index = 0

    def next(self) -> float:
        """Return the next uniform draw."""
        if self._index >= len(self._block):
            self._block = self._generator.random(_BLOCK).tolist()
            self._index = 0
        value = self._block[self._index]
        self._index += 1
        return value
