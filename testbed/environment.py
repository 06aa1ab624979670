"""environment.json: what produced a results directory (backend, versions, machine, inputs)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import testbed

_PACKAGES = ("numpy", "pandas", "pyarrow", "av", "torch")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def describe_environment(backend: str, spec_path: Path, input_files: tuple[Path, ...], jobs: int,
                         extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready description of the run's software, machine and input files."""
    return {
        "backend": backend,
        "testbed_version": testbed.__version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jobs": jobs,
        "packages": {name: _version(name) for name in _PACKAGES},
        "spec": {"path": str(spec_path.resolve()), "sha256": _sha256(spec_path)},
        "inputs": {str(path): _sha256(path) for path in input_files},
        **(extra or {}),
    }
