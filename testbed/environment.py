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

# label -> distribution of the libraries whose versions matter for experiments (doctor reports them too).
PACKAGES = {"numpy": "numpy", "pandas": "pandas", "pyarrow": "pyarrow", "PyAV": "av", "torch": "torch"}


def package_versions() -> dict[str, str | None]:
    """Installed version of each library in PACKAGES (None if absent), read without importing it."""
    versions: dict[str, str | None] = {}
    for label, distribution in PACKAGES.items():
        try:
            versions[label] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[label] = None
    return versions


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
        "packages": package_versions(),
        "spec": {"path": str(spec_path.resolve()), "sha256": _sha256(spec_path)},
        "inputs": {str(path): _sha256(path) for path in input_files},
        **(extra or {}),
    }
