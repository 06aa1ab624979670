#!/usr/bin/env bash
# The whole test suite: installs what is needed, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --for-tests
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
