"""Two-column numeric CSV rows, the shared layout of rate schedules and loss intervals."""

from __future__ import annotations

import math
import re
from pathlib import Path

from testbed.traces.errors import TraceError
from testbed.traces.textfile import content_lines

# Plain decimal notation only: float() alone would also take "nan", "inf" and "1_000".
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def read_number_pairs(path: str | Path, columns: tuple[str, str]) -> list[tuple[int, float, float]]:
    """Return (line number, first, second) per data row; a header naming `columns` may come first."""
    rows = []
    for index, (line, text) in enumerate(content_lines(path)):
        fields = [field.strip() for field in text.split(",")]
        # Only the first content line may be the header; a repeated header later is a broken row.
        if index == 0 and tuple(fields) == columns:
            continue
        if len(fields) != 2:
            raise TraceError(path, line, f"expected 2 comma-separated values, got {len(fields)}")
        first = _parse_number(path, line, columns[0], fields[0])
        second = _parse_number(path, line, columns[1], fields[1])
        rows.append((line, first, second))
    return rows


def _parse_number(path: str | Path, line: int, name: str, field: str) -> float:
    """Parse one field as a finite decimal number, naming the column when it is not."""
    if not _NUMBER.fullmatch(field):
        raise TraceError(path, line, f"{name} is not a number: {field!r}")
    value = float(field)
    # Well-formed but huge literals such as 1e999 overflow to inf.
    if not math.isfinite(value):
        raise TraceError(path, line, f"{name} is too large: {field!r}")
    return value
