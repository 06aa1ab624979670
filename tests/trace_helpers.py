"""Helpers shared by the trace-parser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, settings

from testbed.traces.errors import TraceError

# Hypothesis reuses tmp_path across examples; each example overwrites the same file, so that is safe.
reuse_tmp_path = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_bytes(path: Path, data: bytes | str) -> Path:
    """Write text (UTF-8) or raw bytes to `path` and return it."""
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def expect_trace_error(read: Callable[[Path], object], path: Path, line: int | None, message: str) -> None:
    """`read(path)` must raise a TraceError with exactly this path, line and message."""
    with pytest.raises(TraceError) as caught:
        read(path)
    error = caught.value
    assert (error.path, error.line, error.message) == (str(path), line, message)
    assert str(error) == (f"{path}:{line}: {message}" if line is not None else f"{path}: {message}")
