"""Mahimahi mm-link traces: reading, writing, constant-rate generation."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.traces.errors import TraceError
from testbed.traces.mahimahi import (
    BITS_PER_OPPORTUNITY,
    constant_rate_trace,
    read_mahimahi_trace,
    write_mahimahi_trace,
)

from trace_helpers import expect_trace_error, reuse_tmp_path, write_bytes


def write(tmp_path: Path, data: bytes | str) -> Path:
    return write_bytes(tmp_path / "trace.txt", data)




@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0\n5\n5\n12\n", [0, 5, 5, 12]),
        ("3\n7", [3, 7]),
        ("1\r\n2\r\n", [1, 2]),
        ("007\n", [7]),
        ("9223372036854775807\n", [2**63 - 1]),
        ("0" * 5000 + "1\n", [1]),
    ],
)
def test_reads(tmp_path: Path, text: str, expected: list[int]) -> None:
    times = read_mahimahi_trace(write(tmp_path, text))
    assert times.dtype == np.int64
    assert times.tolist() == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "no timestamps"),
        ("0\n", None, "trace must last a nonzero amount of time"),
        ("0\n0\n0", None, "trace must last a nonzero amount of time"),
        ("\n", 1, "empty line"),
        ("\r\n", 1, "empty line"),
        ("0\n5\n\n", 3, "empty line"),
        ("1\n\n2\n", 2, "empty line"),
        ("1\n-5\n", 2, "expected a non-negative integer timestamp in ms, got '-5'"),
        (" 5\n", 1, "expected a non-negative integer timestamp in ms, got ' 5'"),
        ("5 \n", 1, "expected a non-negative integer timestamp in ms, got '5 '"),
        ("+5\n", 1, "expected a non-negative integer timestamp in ms, got '+5'"),
        ("1.5\n", 1, "expected a non-negative integer timestamp in ms, got '1.5'"),
        ("1e3\n", 1, "expected a non-negative integer timestamp in ms, got '1e3'"),
        ("1\n2\nabc\n", 3, "expected a non-negative integer timestamp in ms, got 'abc'"),
        ("\u0663\n", 1, "expected a non-negative integer timestamp in ms, got '\u0663'"),
        ("9223372036854775808\n", 1, "timestamp too large: '9223372036854775808'"),
        ("1" * 5000, 1, f"timestamp too large: '{'1' * 5000}'"),
        ("5\n3\n", 2, "timestamps must be non-decreasing: 3 after 5"),
        (b"1\n\xff\n", 2, "not valid UTF-8"),
    ],
)
def test_errors(tmp_path: Path, text: str | bytes, line: int | None, message: str) -> None:
    expect_trace_error(read_mahimahi_trace, write(tmp_path, text), line, message)


def test_missing_file(tmp_path: Path) -> None:
    expect_trace_error(read_mahimahi_trace, tmp_path / "absent", None, "cannot read: No such file or directory")


def test_write_format(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    write_mahimahi_trace(path, [0, 1, 1, 20])
    assert path.read_bytes() == b"0\n1\n1\n20\n"


@pytest.mark.parametrize(
    "bad",
    [[], [-1, 2], [3, 2], [0, 0], [1.5, 2.0], [True], [2**64], [[1, 2]]],
)
def test_write_refuses_invalid(tmp_path: Path, bad: list) -> None:
    with pytest.raises(ValueError):
        write_mahimahi_trace(tmp_path / "out.txt", bad)


@reuse_tmp_path
@given(st.lists(st.integers(0, 2**63 - 1), min_size=1).map(sorted).filter(lambda times: times[-1] > 0))
def test_write_read_round_trip(tmp_path: Path, times: list[int]) -> None:
    path = tmp_path / "out.txt"
    write_mahimahi_trace(path, times)
    assert read_mahimahi_trace(path).tolist() == times


@reuse_tmp_path
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from([b"", b"0", b"7", b"3", b"-1", b" 4", b"\r", b"99999999999999999999"]),
        ),
        max_size=8,
    )
)
def test_garbage_raises_only_trace_error(tmp_path: Path, lines: list[bytes]) -> None:
    try:
        read_mahimahi_trace(write(tmp_path, b"\n".join(lines)))
    except TraceError:
        pass


@pytest.mark.parametrize(
    ("kbps", "duration_ms", "expected"),
    [
        (12032, 5, [1, 2, 3, 4, 5]),  # one 1504-byte packet per ms
        (6016, 7, [2, 4, 6]),  # the 4th opportunity (8 ms) falls outside 7 ms
        (24064, 2, [0, 1, 1, 2]),  # two per ms
        (1000, 37, [12, 24, 36]),  # 12.032 ms apart: the 3rd is due at 36.096 ms, inside 37 ms
        (1000, 36, [12, 24]),  # ... but not inside 36 ms
    ],
)
def test_constant_rate_examples(kbps: float, duration_ms: int, expected: list[int]) -> None:
    assert constant_rate_trace(kbps, duration_ms).tolist() == expected


def test_constant_rate_one_minute_at_1_mbps() -> None:
    times = constant_rate_trace(1000, 60_000)
    # floor(60000 / 12.032) = 4986 opportunities; the last at floor(4986 * 12.032) = 59991 ms.
    assert (len(times), times[-1]) == (4986, 59_991)
    assert len(times) * BITS_PER_OPPORTUNITY / times[-1] == pytest.approx(1000, rel=1 / 59_991)


@given(st.floats(1, 1e6), st.integers(1, 5000))
def test_constant_rate_mean_rate(kbps: float, duration_ms: int) -> None:
    try:
        times = constant_rate_trace(kbps, duration_ms)
    except ValueError:
        # Only when no opportunity fits, or the only ones fit in the first ms of a 1 ms loop.
        assert math.floor(duration_ms * kbps / BITS_PER_OPPORTUNITY) == 0 or duration_ms == 1
        return
    period = int(times[-1])
    assert times[0] >= 0 and np.all(np.diff(times) >= 0) and 0 < period <= duration_ms
    # mm-link replays N opportunities every `period` ms; analytic bound: kbps <= rate < kbps * (1 + 1/period).
    rate = len(times) * BITS_PER_OPPORTUNITY / period
    assert kbps * (1 - 1e-12) <= rate < kbps * (1 + 1 / period) * (1 + 1e-12)


def test_constant_rate_is_a_valid_trace(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    times = constant_rate_trace(2500, 1000)
    write_mahimahi_trace(path, times)
    assert np.array_equal(read_mahimahi_trace(path), times)


@pytest.mark.parametrize(
    ("kbps", "duration_ms"),
    [(0, 1000), (-5, 1000), (math.nan, 1000), (math.inf, 1000), (1000, 0), (1, 1000), (20000, 1)],
)
def test_constant_rate_refuses(kbps: float, duration_ms: int) -> None:
    with pytest.raises(ValueError):
        constant_rate_trace(kbps, duration_ms)
