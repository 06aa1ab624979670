#!/usr/bin/env bash
# The whole test suite: installs what is needed, lints, then runs pytest. TESTBED_VENV as for install.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --for-tests
venv=${TESTBED_VENV:-.venv}
shellcheck scripts/*.sh
"$venv/bin/ruff" check .
"$venv/bin/python" -m pytest "$@"
