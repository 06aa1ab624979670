"""Typed access to one TOML table with errors that name the file, the table and the key."""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any

_MISSING: Any = object()


class SpecError(ValueError):
    """A spec (or a file it points to) is invalid; the message says where and why."""


class SpecTable:
    """One table of a spec: every read is checked and recorded in `resolved`; `finish` rejects leftovers."""

    def __init__(self, data: Any, source: Path, where: str, prefix: str = ""):
        self.source = source
        self.where = where
        self.prefix = prefix
        if not isinstance(data, dict):
            self.fail("", f"must be a table, got {_describe(data)}")
        self.data: dict[str, Any] = data
        self.resolved: dict[str, Any] = {}
        self._read: set[str] = set()

    def fail(self, key: str, problem: str) -> None:
        """Raise a SpecError naming the file, the table and the key."""
        location = f"{self.where}: " if self.where else ""
        name = f"{self.prefix}{key} " if key else (f"{self.prefix.rstrip('.')} " if self.prefix else "")
        raise SpecError(f"{self.source}: {location}{name}{problem}")

    def has(self, key: str) -> bool:
        """True when the key is present."""
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        """The unchecked value of `key` (marked as read)."""
        self._read.add(key)
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            self.fail(key, "is required")
        return default

    def string(self, key: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None) -> str:
        """A string, optionally one of `choices`."""
        value = self.raw(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {_describe(value)}")
        if choices is not None and value not in choices:
            options = ", ".join(f'"{c}"' for c in choices)
            self.fail(key, f'must be one of {options}, got "{value}"{_suggest(value, choices)}')
        self.resolved[key] = value
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        """A boolean."""
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, got {_describe(value)}")
        self.resolved[key] = value
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float | None = None,
               maximum: float | None = None, above: float | None = None, integer: bool = False) -> float:
        """A finite number within the given bounds (`above` is an exclusive minimum)."""
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, f"must be a number, got {_describe(value)}")
        if integer and not isinstance(value, int):
            self.fail(key, f"must be a whole number, got {value!r}")
        if not math.isfinite(value):
            self.fail(key, f"must be finite, got {value!r}")
        if minimum is not None and maximum is not None and not minimum <= value <= maximum:
            self.fail(key, f"must be within [{_fmt(minimum)}, {_fmt(maximum)}], got {value!r}")
        if minimum is not None and value < minimum:
            self.fail(key, f"must be >= {_fmt(minimum)}, got {value!r}")
        if maximum is not None and value > maximum:
            self.fail(key, f"must be <= {_fmt(maximum)}, got {value!r}")
        if above is not None and value <= above:
            self.fail(key, f"must be > {_fmt(above)}, got {value!r}")
        self.resolved[key] = value
        return value

    def integer_list(self, key: str, default: Any = _MISSING, *, length: int | None = None,
                     minimum: int | None = None) -> list[int]:
        """A non-empty list of whole numbers."""
        value = self.raw(key, default)
        if not isinstance(value, list) or not value:
            self.fail(key, f"must be a non-empty list of whole numbers, got {_describe(value)}")
        if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            self.fail(key, f"must contain only whole numbers, got {value!r}")
        if length is not None and len(value) != length:
            self.fail(key, f"must have {length} entries, got {len(value)}")
        if minimum is not None and min(value) < minimum:
            self.fail(key, f"entries must be >= {minimum}, got {value!r}")
        self.resolved[key] = list(value)
        return list(value)

    def path(self, key: str) -> Path:
        """A path to an existing file, relative to the spec's folder unless absolute."""
        text = self.string(key)
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = (self.source.parent / path).resolve()
        if not path.is_file():
            self.fail(key, f'file not found: "{path}"')
        self.resolved[key] = str(path)
        return path

    def table(self, key: str) -> SpecTable | None:
        """An optional sub-table, checked with the same rules; its resolved values nest into ours."""
        value = self.raw(key, None)
        if value is None:
            return None
        sub = SpecTable(value, self.source, self.where, f"{self.prefix}{key}.")
        self.resolved[key] = sub.resolved
        return sub

    def finish(self) -> None:
        """Reject keys nobody read, suggesting the closest known key."""
        for key in self.data:
            if key not in self._read:
                known = [f"{self.prefix}{k}" for k in sorted(self._read)]
                location = f"{self.where}: " if self.where else ""
                raise SpecError(f'{self.source}: {location}has unknown key "{self.prefix}{key}"'
                                f"{_suggest(self.prefix + key, known)}")


def _suggest(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f' (did you mean "{match[0]}"?)' if match else ""


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list {value!r}"
    return f"{type(value).__name__} {value!r}"


def _fmt(value: float) -> str:
    return f"{value:g}"
