"""The packet identity shared by the shaper's and the agents' logs: a 64-bit digest of the UDP payload."""

from __future__ import annotations

import hashlib


def payload_digest(payload: bytes) -> int:
    """BLAKE2b-64 of a UDP payload as a big-endian signed int64 (fits an int64 log column)."""
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "big", signed=True)
