#!/usr/bin/env bash
# Installs everything the testbed needs on a Debian/Ubuntu machine: system packages (through
# scripts/install-system-packages.sh, the one script that runs apt-get), Python packages into a venv. Idempotent.
# The README commands, CI (.ci/run) and the Vagrant VM all use it.
# --for-tests also installs what the test suite needs beyond the main job: Chromium (the report is opened in it),
# the script linter and Ruby (system packages), PyTorch (CPU) and the LPIPS weights.
# Environment: PYTHON (the interpreter that makes the venv, default python3, >= 3.11); TESTBED_VENV (where the
# venv goes, default .venv in the repository; the Vagrant VM keeps it outside the folder it shares with the
# host); TESTBED_SKIP_SYSTEM_PACKAGES=1 skips the system packages (on a machine without apt-get, after
# installing them by hand).
set -euo pipefail
cd "$(dirname "$0")/.."

for_tests=false
system_args=()
if [ "${1:-}" = "--for-tests" ]; then
  for_tests=true
  system_args=(--for-tests)
fi
if [ "${TESTBED_SKIP_SYSTEM_PACKAGES:-}" = 1 ]; then
  echo "install.sh: TESTBED_SKIP_SYSTEM_PACKAGES=1: not installing system packages"
else
  bash scripts/install-system-packages.sh "${system_args[@]}"
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install.sh: $python is $("$python" --version 2>&1); the testbed needs Python >= 3.11" >&2
  exit 1
fi
venv=${TESTBED_VENV:-.venv}
if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
  echo "install.sh: $venv exists but its Python does not run here (made on another machine, e.g. the host" \
    "of a VM sharing this folder, or its interpreter is gone); remove it, or set TESTBED_VENV to another path" >&2
  exit 1
fi
if [ ! -e "$venv" ] && ! "$python" -m venv "$venv"; then
  rm -rf "$venv"  # half made; it did not exist before
  echo "install.sh: $python -m venv failed (Debian and Ubuntu need python3-venv, which" \
    "scripts/install-system-packages.sh installs)" >&2
  exit 1
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if [ "$for_tests" = true ]; then
  "$venv/bin/python" -m pip install -q -e '.[test,lpips]'
  TESTBED_PYTHON="$(cd "$venv" && pwd)/bin/python" bash scripts/fetch_lpips_weights.sh
else
  "$venv/bin/python" -m pip install -q -e .
fi
echo "install.sh: ready ($("$venv/bin/python" --version), venv in $venv)"
