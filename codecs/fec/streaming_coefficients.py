"""Coefficients of the streaming code: which stripes a parity stripe combines, and with what weights.

Parity stripe r of FEC frame t is sum over d = 0..tau and stripes s of frame t-d of
coefficient(d, r, s) * stripe, where the coefficient is

  * 0 when 0 < d < tau and s is a "u" stripe (odd s): u stripes are protected only by their own frame
    and by frame t+tau, v stripes by frames t..t+tau;
  * otherwise the Cauchy entry 1 / (X(d, r) + Y(s)) with Y(s) = s in 0..63 and
    X(d, r) = 64 + (d * B + r) mod 192, B = 192 // (tau + 1).

X >= 64 > Y, so no entry is 1/0. Each (d) block is a Cauchy matrix (the own-frame block makes a frame
that lost at most p of its stripes decodable from its own parity, and the d = tau block makes the u
stripes decodable from frame t+tau's parity). While r < B, the rows of different d also have distinct X,
so all parity of frames f..f+tau over the stripes of frame f form one Cauchy matrix. The coefficients
depend only on (d, r, s), not on absolute frame numbers, so one table serves the whole stream. GF(256)
has too few elements for one Cauchy matrix over a whole 2*tau+1 window (Tambur uses a wider field), so
systems mixing the unknowns of several lost frames are only generic, not guaranteed to be solvable.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from testbed.codecs.fec import gf256
from testbed.codecs.fec.streaming_layout import MAX_DATA_STRIPES, MAX_PARITY_STRIPES, is_u_stripe

_ROW_SYMBOLS = gf256.FIELD_SIZE - MAX_DATA_STRIPES


@lru_cache(maxsize=None)
def coefficient_table(tau: int) -> np.ndarray:
    """Read-only array [d, r, s] of shape (tau + 1, 64, 64): weight of stripe s of frame t-d in parity r of t."""
    if not 1 <= tau < _ROW_SYMBOLS:
        raise ValueError(f"tau must be in 1..{_ROW_SYMBOLS - 1}")
    block = _ROW_SYMBOLS // (tau + 1)
    distance = np.arange(tau + 1)[:, None, None]
    row = np.arange(MAX_PARITY_STRIPES)[None, :, None]
    stripe = np.arange(MAX_DATA_STRIPES)[None, None, :]
    row_symbol = MAX_DATA_STRIPES + (distance * block + row) % _ROW_SYMBOLS
    table = gf256.inverse((row_symbol ^ stripe).astype(np.uint8))
    u_only_at_ends = (distance > 0) & (distance < tau) & is_u_stripe(stripe)
    table = np.where(u_only_at_ends, 0, table).astype(np.uint8)
    table.setflags(write=False)
    return table
