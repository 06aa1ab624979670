"""Loss traces: per-packet 0/1 outcomes and lossy `start_s,end_s` intervals."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.traces.errors import TraceError
from testbed.traces.loss_trace import read_loss_intervals, read_packet_outcomes

from trace_helpers import expect_trace_error, reuse_tmp_path, write_bytes


def write(tmp_path: Path, data: bytes | str) -> Path:
    return write_bytes(tmp_path / "loss.txt", data)




def test_outcomes_read(tmp_path: Path) -> None:
    outcomes = read_packet_outcomes(write(tmp_path, "0\n1\n# burst\n\n 1 \r\n0"))
    assert outcomes.dtype == np.bool_
    assert outcomes.tolist() == [False, True, True, False]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "no packet outcomes"),
        ("# nothing\n\n", None, "no packet outcomes"),
        ("2\n", 1, "expected 0 or 1, got '2'"),
        ("0\n01\n", 2, "expected 0 or 1, got '01'"),
        ("0\n1\n\ntrue\n", 4, "expected 0 or 1, got 'true'"),
        ("0 1\n", 1, "expected 0 or 1, got '0 1'"),
        ("1 # lost\n", 1, "expected 0 or 1, got '1 # lost'"),
        (b"0\n\x80\n", 2, "not valid UTF-8"),
    ],
)
def test_outcome_errors(tmp_path: Path, text: str | bytes, line: int | None, message: str) -> None:
    expect_trace_error(read_packet_outcomes, write(tmp_path, text), line, message)


def test_outcomes_missing_file(tmp_path: Path) -> None:
    expect_trace_error(read_packet_outcomes, tmp_path / "absent", None, "cannot read: No such file or directory")


@reuse_tmp_path
@given(st.lists(st.booleans(), min_size=1))
def test_outcomes_round_trip(tmp_path: Path, outcomes: list[bool]) -> None:
    text = "".join(f"{int(lost)}\n" for lost in outcomes)
    assert read_packet_outcomes(write(tmp_path, text)).tolist() == outcomes


def test_intervals_read(tmp_path: Path) -> None:
    text = "start_s,end_s\n0,1.5\n1.5,2\n# later\n\n3, 4.25\n"
    intervals = read_loss_intervals(write(tmp_path, text))
    assert intervals.dtype == np.float64 and intervals.shape == (3, 2)
    assert intervals.tolist() == [[0, 1.5], [1.5, 2], [3, 4.25]]


def test_single_interval_keeps_two_dimensions(tmp_path: Path) -> None:
    assert read_loss_intervals(write(tmp_path, "2,3\n")).shape == (1, 2)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("", None, "no intervals"),
        ("start_s,end_s\n", None, "no intervals"),
        ("-1,2\n", 1, "start_s must be >= 0, got -1.0"),
        ("2,2\n", 1, "end_s must be > start_s, got [2.0, 2.0)"),
        ("0,1\n3,2\n", 2, "end_s must be > start_s, got [3.0, 2.0)"),
        ("0,2\n1,3\n", 2, "intervals must be sorted and non-overlapping: 1.0 < previous end 2.0"),
        ("2,3\n0,1\n", 2, "intervals must be sorted and non-overlapping: 0.0 < previous end 3.0"),
        ("0,1,2\n", 1, "expected 2 comma-separated values, got 3"),
        ("a,1\n", 1, "start_s is not a number: 'a'"),
        ("0,1\nstart_s,end_s\n", 2, "start_s is not a number: 'start_s'"),
        ("0,inf\n", 1, "end_s is not a number: 'inf'"),
        (b"0,1\n\xff", 2, "not valid UTF-8"),
    ],
)
def test_interval_errors(tmp_path: Path, text: str | bytes, line: int | None, message: str) -> None:
    expect_trace_error(read_loss_intervals, write(tmp_path, text), line, message)


@reuse_tmp_path
@given(
    st.lists(st.floats(0, 1e9), unique=True, min_size=2, max_size=40)
    .map(sorted)
    .map(lambda edges: edges[: len(edges) // 2 * 2]),
    st.booleans(),
)
def test_intervals_round_trip(tmp_path: Path, edges: list[float], header: bool) -> None:
    intervals = [edges[i : i + 2] for i in range(0, len(edges), 2)]
    lines = (["start_s,end_s"] if header else []) + [f"{start!r},{end!r}" for start, end in intervals]
    assert read_loss_intervals(write(tmp_path, "\n".join(lines))).tolist() == intervals


garbage = st.lists(
    st.one_of(
        st.binary(max_size=12),
        st.sampled_from([b"", b"#", b"0", b"1", b"start_s,end_s", b"0,1", b"1,2", b"0.5,3", b"3,1", b"-1,0"]),
    ),
    max_size=8,
)


@reuse_tmp_path
@given(garbage)
def test_garbage_raises_only_trace_error(tmp_path: Path, lines: list[bytes]) -> None:
    path = write(tmp_path, b"\n".join(lines))
    for read in (read_packet_outcomes, read_loss_intervals):
        try:
            read(path)
        except TraceError:
            pass
