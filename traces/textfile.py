"""Reading a trace file as numbered text lines, with I/O and encoding failures as TraceError."""

from __future__ import annotations

from pathlib import Path

from testbed.traces.errors import TraceError


def read_lines(path: str | Path) -> list[str]:
    """Return the file's lines as C++ getline yields them (line n at index n-1), minus a trailing CR."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise TraceError(path, None, f"cannot read: {error.strerror or error}") from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TraceError(path, data.count(b"\n", 0, error.start) + 1, "not valid UTF-8") from error
    # Split on "\n" only: str.splitlines would also break on form feeds, U+2028 and the like.
    lines = text.split("\n")
    # A final newline ends the last line instead of starting an empty one, exactly as with getline.
    if lines[-1] == "":
        lines.pop()
    # Tolerate files written with Windows line endings.
    return [line.removesuffix("\r") for line in lines]


def content_lines(path: str | Path) -> list[tuple[int, str]]:
    """Return (line number, stripped text) for every line that is neither blank nor a '#' comment."""
    numbered = ((number, line.strip()) for number, line in enumerate(read_lines(path), start=1))
    return [(number, text) for number, text in numbered if text and not text.startswith("#")]
