"""GF(256) kernel: field axioms on every product, and matmul / rank / solve against pure-Python references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.codecs.fec import gf256

from gf_reference import slow_mul

ALL = np.arange(256, dtype=np.uint8)


SLOW = [[slow_mul(a, b) for b in range(256)] for a in range(256)]


def reference_matmul(matrix: list[list[int]], rows: list[list[int]]) -> list[list[int]]:
    out = []
    for coefficients in matrix:
        acc = [0] * len(rows[0])
        for c, row in zip(coefficients, rows):
            for i, value in enumerate(row):
                acc[i] ^= SLOW[c][value]
        out.append(acc)
    return out


def reference_rank(matrix: list[list[int]]) -> int:
    """Plain Gaussian elimination (no reduction above the pivot) with the slow multiplication."""
    rows = [list(row) for row in matrix]
    rank = 0
    for column in range(len(rows[0]) if rows else 0):
        pivot = next((i for i in range(rank, len(rows)) if rows[i][column]), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        inv = next(b for b in range(1, 256) if SLOW[rows[rank][column]][b] == 1)
        rows[rank] = [SLOW[inv][v] for v in rows[rank]]
        for i in range(rank + 1, len(rows)):
            factor = rows[i][column]
            if factor:
                rows[i] = [v ^ SLOW[factor][p] for v, p in zip(rows[i], rows[rank])]
        rank += 1
    return rank


def test_product_table_matches_shift_and_add_on_all_pairs():
    assert (gf256.mul(ALL[:, None], ALL[None, :]) == np.array(SLOW, dtype=np.uint8)).all()


def test_commutative_and_identity_and_zero():
    table = gf256.mul(ALL[:, None], ALL[None, :])
    assert (table == table.T).all()
    assert (gf256.mul(ALL, 1) == ALL).all()
    assert (gf256.mul(ALL, 0) == 0).all()


def test_associative_and_distributive_on_all_triples():
    a = ALL[:, None]
    b = ALL[None, :]
    for c in range(256):
        assert (gf256.mul(gf256.mul(a, b), c) == gf256.mul(a, gf256.mul(b, c))).all(), c
        assert (gf256.mul(a, gf256.add(b, c)) == gf256.add(gf256.mul(a, b), gf256.mul(a, c))).all(), c


def test_inverse_and_division():
    nonzero = ALL[1:]
    inverses = gf256.inverse(nonzero)
    assert (gf256.mul(nonzero, inverses) == 1).all()
    assert len(set(inverses.tolist())) == 255
    assert (gf256.div(gf256.mul(ALL[:, None], nonzero[None, :]), nonzero[None, :]) == ALL[:, None]).all()
    with pytest.raises(ZeroDivisionError):
        gf256.inverse(np.array([3, 0], dtype=np.uint8))
    with pytest.raises(ZeroDivisionError):
        gf256.div(5, 0)


def test_multiplicative_group_is_cyclic_of_order_255():
    # 0x11d is primitive: powers of 2 run through every nonzero element before returning to 1.
    powers = [1]
    for _ in range(254):
        powers.append(slow_mul(powers[-1], 2))
    assert sorted(powers) == list(range(1, 256))
    assert gf256.EXP[:255].tolist() == powers


matrices = st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 9)).flatmap(
    lambda shape: st.tuples(
        st.lists(
            st.lists(st.integers(0, 255), min_size=shape[1], max_size=shape[1]), min_size=shape[0], max_size=shape[0]
        ),
        st.lists(
            st.lists(st.integers(0, 255), min_size=shape[2], max_size=shape[2]), min_size=shape[1], max_size=shape[1]
        ),
    )
)


@given(matrices)
@settings(max_examples=200, deadline=None)
def test_matmul_and_matvec_match_reference(pair):
    matrix, rows = pair
    expected = reference_matmul(matrix, rows)
    got = gf256.matmul(np.array(matrix, np.uint8), np.array(rows, np.uint8))
    assert got.tolist() == expected
    column = [row[0] for row in rows]
    assert gf256.matvec(np.array(matrix, np.uint8), np.array(column, np.uint8)).tolist() == [r[0] for r in expected]


def test_matmul_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        gf256.matmul(np.zeros((2, 3), np.uint8), np.zeros((2, 3), np.uint8))


@st.composite
def low_rank_matrices(draw):
    """A random product of (m x r) and (r x n) factors, so ranks below min(m, n) are common."""
    m, n, r = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(0, 7))
    left = draw(st.lists(st.lists(st.integers(0, 255), min_size=r, max_size=r), min_size=m, max_size=m))
    right = draw(st.lists(st.lists(st.integers(0, 255), min_size=n, max_size=n), min_size=r, max_size=r))
    if r == 0:
        return [[0] * n for _ in range(m)]
    return reference_matmul(left, right)


@given(low_rank_matrices())
@settings(max_examples=300, deadline=None)
def test_rank_and_row_reduce_match_reference(matrix):
    array = np.array(matrix, np.uint8)
    expected = reference_rank(matrix)
    assert gf256.rank(array) == expected
    reduced, pivots = gf256.row_reduce(array)
    assert len(pivots) == expected
    # Reduced row echelon form: unit pivots, zero elsewhere in pivot columns, zero rows below the rank.
    for row, column in enumerate(pivots):
        assert reduced[row, column] == 1
        assert np.count_nonzero(reduced[:, column]) == 1
        assert not reduced[row, :column].any()
    assert not reduced[len(pivots) :].any()
    # Same row space: stacking the original rows adds nothing.
    assert reference_rank(reduced.tolist() + matrix) == expected


@st.composite
def square_systems(draw):
    size = draw(st.integers(1, 7))
    width = draw(st.integers(1, 5))
    matrix = draw(st.lists(st.lists(st.integers(0, 255), min_size=size, max_size=size), min_size=size, max_size=size))
    rhs = draw(st.lists(st.lists(st.integers(0, 255), min_size=width, max_size=width), min_size=size, max_size=size))
    return matrix, rhs


@given(square_systems())
@settings(max_examples=300, deadline=None)
def test_solve_matches_reference_or_reports_singular(system):
    matrix, rhs = system
    array = np.array(matrix, np.uint8)
    if reference_rank(matrix) < len(matrix):
        with pytest.raises(ValueError):
            gf256.solve(array, np.array(rhs, np.uint8))
        return
    solution = gf256.solve(array, np.array(rhs, np.uint8))
    assert reference_matmul(matrix, solution.tolist()) == rhs
    vector_solution = gf256.solve(array, np.array([row[0] for row in rhs], np.uint8))
    assert vector_solution.tolist() == solution[:, 0].tolist()


def test_row_reduce_with_right_hand_sides_pivots_only_on_unknowns():
    # [A | B] with A = 0: no pivot may be taken in B's columns.
    augmented = np.array([[0, 0, 7, 9], [0, 0, 1, 2]], np.uint8)
    reduced, pivots = gf256.row_reduce(augmented, pivot_columns=2)
    assert pivots == []
    assert (reduced == augmented).all()
