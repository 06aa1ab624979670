"""TraceError formatting and the shared line reader's I/O and encoding errors."""

import pickle
from pathlib import Path

import pytest

from testbed.traces.errors import TraceError
from testbed.traces.textfile import content_lines, read_lines


def test_str_with_line() -> None:
    error = TraceError(Path("/x/trace.csv"), 7, "bad row")
    assert (error.path, error.line, error.message) == ("/x/trace.csv", 7, "bad row")
    assert str(error) == "/x/trace.csv:7: bad row"


def test_str_without_line() -> None:
    assert str(TraceError("t.txt", None, "no rows")) == "t.txt: no rows"


def test_is_value_error_and_pickles() -> None:
    error = pickle.loads(pickle.dumps(TraceError("t.txt", 3, "bad")))
    assert isinstance(error, ValueError)
    assert (error.path, error.line, error.message, str(error)) == ("t.txt", 3, "bad", "t.txt:3: bad")


def test_read_lines_follows_getline(tmp_path: Path) -> None:
    path = tmp_path / "t"
    for data, lines in [
        (b"", []),
        (b"\n", [""]),
        (b"a\nb\n", ["a", "b"]),
        (b"a\nb", ["a", "b"]),
        (b"a\n\n", ["a", ""]),
        (b"a\r\nb\r\n", ["a", "b"]),
        (b"a\x0cb\n", ["a\x0cb"]),
    ]:
        path.write_bytes(data)
        assert read_lines(path) == lines, data


def test_content_lines_skips_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"# head\n\n  a \n   \n  # indented\nb\n")
    assert content_lines(path) == [(3, "a"), (6, "b")]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent"
    with pytest.raises(TraceError) as caught:
        read_lines(path)
    assert (caught.value.path, caught.value.line) == (str(path), None)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError) as caught:
        read_lines(tmp_path)
    assert str(caught.value) == f"{tmp_path}: cannot read: Is a directory"


def test_non_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "t"
    path.write_bytes(b"ok\n\xc3\xa9\nbad \xff here\n")
    with pytest.raises(TraceError) as caught:
        read_lines(path)
    assert (caught.value.line, caught.value.message) == (3, "not valid UTF-8")
    assert str(caught.value) == f"{path}:3: not valid UTF-8"
