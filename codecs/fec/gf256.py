"""GF(2^8) arithmetic on numpy uint8 arrays (primitive polynomial x^8+x^4+x^3+x^2+1 = 0x11d).

Matrices are 2-D uint8 arrays. In products the right operand's rows are byte strings (packet payloads),
so `matmul(C, D)` with C (m x k) and D (k x L) computes m linear combinations of the k rows of D.
"""

from __future__ import annotations

import numpy as np

PRIMITIVE_POLYNOMIAL = 0x11D
FIELD_SIZE = 256


def _exp_log_tables() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(2 * FIELD_SIZE, dtype=np.uint8)
    log = np.zeros(FIELD_SIZE, dtype=np.int64)
    value = 1
    for power in range(FIELD_SIZE - 1):
        exp[power] = value
        log[value] = power
        value <<= 1
        if value & FIELD_SIZE:
            value ^= PRIMITIVE_POLYNOMIAL
    # A doubled exp table lets log(a) + log(b) index it without a modulo.
    exp[FIELD_SIZE - 1 : 2 * (FIELD_SIZE - 1)] = exp[: FIELD_SIZE - 1]
    return exp, log


EXP, LOG = _exp_log_tables()
_ELEMENTS = np.arange(FIELD_SIZE)
# The full 64 KiB product table: every multiplication below is one gather from it.
MUL_TABLE = np.where(
    (_ELEMENTS[:, None] == 0) | (_ELEMENTS[None, :] == 0),
    0,
    EXP[LOG[_ELEMENTS][:, None] + LOG[_ELEMENTS][None, :]],
).astype(np.uint8)
INVERSE_TABLE = np.zeros(FIELD_SIZE, dtype=np.uint8)
INVERSE_TABLE[1:] = EXP[(FIELD_SIZE - 1) - LOG[1:]]
for _table in (EXP, LOG, MUL_TABLE, INVERSE_TABLE):
    _table.setflags(write=False)


def _as_field(array: np.ndarray | int) -> np.ndarray:
    return np.asarray(array, dtype=np.uint8)


def add(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Elementwise sum (and difference): bitwise xor."""
    return np.bitwise_xor(_as_field(a), _as_field(b))


def mul(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Elementwise product of broadcastable uint8 arrays."""
    return MUL_TABLE[_as_field(a), _as_field(b)]


def inverse(a: np.ndarray | int) -> np.ndarray:
    """Elementwise multiplicative inverse; raises ZeroDivisionError on a zero element."""
    a = _as_field(a)
    if np.any(a == 0):
        raise ZeroDivisionError("0 has no inverse in GF(256)")
    return INVERSE_TABLE[a]


def div(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Elementwise quotient a / b; raises ZeroDivisionError if any divisor is zero."""
    return mul(a, inverse(b))


def matmul(matrix: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Product (m x k) @ (k x L) over GF(256): m linear combinations of the k byte rows."""
    matrix = _as_field(matrix)
    rows = _as_field(rows)
    if matrix.ndim != 2 or rows.ndim != 2 or matrix.shape[1] != rows.shape[0]:
        raise ValueError(f"cannot multiply shapes {matrix.shape} and {rows.shape}")
    product = np.zeros((matrix.shape[0], rows.shape[1]), dtype=np.uint8)
    # One gather per source row, vectorized over the m outputs and L bytes (k is at most a few hundred);
    # all-zero columns (stripes a parity does not combine) are skipped.
    for column in np.flatnonzero(matrix.any(axis=0)):
        product ^= MUL_TABLE[matrix[:, column]][:, rows[column]]
    return product


def matvec(matrix: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Product (m x k) @ (k,) over GF(256)."""
    return matmul(matrix, _as_field(vector)[:, None])[:, 0]


def row_reduce(matrix: np.ndarray, pivot_columns: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Reduced row echelon form and its pivot columns, pivoting only in the first `pivot_columns` columns.

    With `pivot_columns` = number of unknowns, `matrix` = [A | B] reduces the system A X = B: the
    trailing columns are carried along as right-hand sides.
    """
    reduced = _as_field(matrix).copy()
    if reduced.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {reduced.shape}")
    n_rows, n_columns = reduced.shape
    search_columns = n_columns if pivot_columns is None else min(pivot_columns, n_columns)
    pivots: list[int] = []
    for column in range(search_columns):
        rank = len(pivots)
        if rank == n_rows:
            break
        candidates = np.flatnonzero(reduced[rank:, column])
        if candidates.size == 0:
            continue
        pivot_row = rank + int(candidates[0])
        if pivot_row != rank:
            reduced[[rank, pivot_row]] = reduced[[pivot_row, rank]]
        reduced[rank] = MUL_TABLE[INVERSE_TABLE[reduced[rank, column]]][reduced[rank]]
        factors = reduced[:, column].copy()
        factors[rank] = 0
        # Only rows with a nonzero entry in the pivot column need touching.
        touched = np.flatnonzero(factors)
        if touched.size:
            reduced[touched] ^= MUL_TABLE[factors[touched]][:, reduced[rank]]
        pivots.append(column)
    return reduced, pivots


def rank(matrix: np.ndarray) -> int:
    """Rank of a matrix over GF(256)."""
    return len(row_reduce(matrix)[1])


def solve(matrix: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solve A X = B for square nonsingular A; B is (n,) or (n x L); raises ValueError if A is singular."""
    matrix = _as_field(matrix)
    rhs = _as_field(rhs)
    size = matrix.shape[0]
    if matrix.ndim != 2 or matrix.shape[1] != size or rhs.shape[0] != size:
        raise ValueError(f"cannot solve shapes {matrix.shape} and {rhs.shape}")
    columns = rhs.reshape(size, -1)
    reduced, pivots = row_reduce(np.hstack([matrix, columns]), pivot_columns=size)
    if len(pivots) != size:
        raise ValueError("singular matrix")
    return reduced[:, size:].reshape(rhs.shape)
