"""Piecewise-constant rate schedules from `time_s,kbps` CSV files."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.traces.errors import TraceError
from testbed.traces.rate_schedule import read_rate_schedule

from trace_helpers import expect_trace_error, reuse_tmp_path, write_bytes


def write(tmp_path: Path, data: bytes | str) -> Path:
    return write_bytes(tmp_path / "schedule.csv", data)


def expect_error(path: Path, line: int | None, message: str) -> None:
    expect_trace_error(read_rate_schedule, path, line, message)


@pytest.mark.parametrize(
    ("text", "times", "rates"),
    [
        ("time_s,kbps\n0,1000\n# dip\n\n2.5, 500\n10,0\n", [0, 2.5, 10], [1000, 500, 0]),
        ("  time_s ,  kbps \r\n0,1\r\n", [0], [1]),
        ("# made by hand\ntime_s,kbps\n0,1.5e3\n", [0], [1500]),
        ("0.0,750\n.5,+2.\n", [0, 0.5], [750, 2]),
    ],
)
def test_reads(tmp_path: Path, text: str, times: list[float], rates: list[float]) -> None:
    got_times, got_rates = read_rate_schedule(write(tmp_path, text))
    assert got_times.dtype == got_rates.dtype == np.float64
    assert got_times.tolist() == times and got_rates.tolist() == rates


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "no rows"),
        ("time_s,kbps\n# nothing yet\n\n", None, "no rows"),
        ("0,1,2\n", 1, "expected 2 comma-separated values, got 3"),
        ("0,1\n\n5\n", 3, "expected 2 comma-separated values, got 1"),
        ("0;1\n", 1, "expected 2 comma-separated values, got 1"),
        ("kbps,time_s\n0,1\n", 1, "time_s is not a number: 'kbps'"),
        ("time_s,kbps\n0,1\ntime_s,kbps\n", 3, "time_s is not a number: 'time_s'"),
        ("0,abc\n", 1, "kbps is not a number: 'abc'"),
        ("0,\n", 1, "kbps is not a number: ''"),
        ("0,nan\n", 1, "kbps is not a number: 'nan'"),
        ("0,inf\n", 1, "kbps is not a number: 'inf'"),
        ("0,1_000\n", 1, "kbps is not a number: '1_000'"),
        ("0,1e999\n", 1, "kbps is too large: '1e999'"),
        ("1,100\n", 1, "first time_s must be 0, got 1.0"),
        ("0,1\n5,1\n4,1\n", 3, "time_s must be increasing: 4.0 after 5.0"),
        ("0,1\n0,2\n", 2, "time_s must be increasing: 0.0 after 0.0"),
        ("0,-3\n", 1, "kbps must be >= 0, got -3.0"),
        ("0,1\n1,-0.5\n", 2, "kbps must be >= 0, got -0.5"),
        (b"0,1\n1,\xfe\n", 2, "not valid UTF-8"),
    ],
)
def test_errors(tmp_path: Path, text: str | bytes, line: int | None, message: str) -> None:
    expect_error(write(tmp_path, text), line, message)


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "absent.csv", None, "cannot read: No such file or directory")


finite = st.floats(allow_nan=False, allow_infinity=False)


@reuse_tmp_path
@given(
    st.lists(finite.filter(lambda t: t > 0), unique=True, max_size=20).map(lambda ts: [0.0, *sorted(ts)]),
    st.data(),
    st.booleans(),
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from(["{},{}", " {} , {} ", "{},\t{}"]),
)
def test_valid_schedules_round_trip(
    tmp_path: Path, times: list[float], data: st.DataObject, header: bool, newline: str, row: str
) -> None:
    rates = data.draw(st.lists(finite.filter(lambda r: r >= 0), min_size=len(times), max_size=len(times)))
    lines = ["# generated", "time_s,kbps"] if header else []
    for time_s, kbps in zip(times, rates):
        lines += [row.format(repr(time_s), repr(kbps)), ""]
    got_times, got_rates = read_rate_schedule(write(tmp_path, newline.join(lines)))
    assert got_times.tolist() == times and got_rates.tolist() == rates


@reuse_tmp_path
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.sampled_from([b"", b"#", b"time_s,kbps", b"0,1", b"1,2", b"2,-1", b"1,", b",", b"0,1,2", b"nan,1"]),
        ),
        max_size=8,
    )
)
def test_garbage_raises_only_trace_error(tmp_path: Path, lines: list[bytes]) -> None:
    try:
        read_rate_schedule(write(tmp_path, b"\n".join(lines)))
    except TraceError:
        pass
