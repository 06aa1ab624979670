"""The one exception type raised by every trace reader."""

from __future__ import annotations

from pathlib import Path


class TraceError(ValueError):
    """A trace file that cannot be read or breaks its format, located as path:line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        """Record the file, the 1-based line (None when the problem is the whole file) and the problem."""
        # Handing all three to ValueError keeps `args` complete, so the error survives pickling
        # (e.g. when raised in a multiprocessing worker).
        super().__init__(str(path), line, message)
        self.path = str(path)
        self.line = line
        self.message = message

    def __str__(self) -> str:
        """Format as `path:line: message`, the convention editors and compilers jump to."""
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"
