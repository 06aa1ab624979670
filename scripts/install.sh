#!/usr/bin/env bash
# Installs everything the testbed needs on a Debian/Ubuntu machine: system packages with apt-get, Python
# packages into ./.venv. Idempotent. The README commands, CI (.ci/run) and the Vagrant VM all use it.
# --for-tests also installs what the test suite needs beyond the main job: Debian's Chromium (the report is
# opened in it), PyTorch (CPU) and the LPIPS weights.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  as_root=(sudo)
fi

system_packages=(iproute2 ethtool)
for_tests=false
if [ "${1:-}" = "--for-tests" ]; then
  for_tests=true
  system_packages+=(chromium)
fi
if command -v apt-get >/dev/null 2>&1; then
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${system_packages[@]}" >/dev/null
else
  echo "install.sh: apt-get not found; install these yourself: ${system_packages[*]}" >&2
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "install.sh: $python is $("$python" --version 2>&1); the testbed needs Python >= 3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv 2>/dev/null; then
    # Debian splits venv out of the interpreter package.
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv
    "$python" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "$for_tests" = true ]; then
  .venv/bin/python -m pip install -q -e '.[test,lpips]'
  bash scripts/fetch_lpips_weights.sh
else
  .venv/bin/python -m pip install -q -e .
fi
echo "install.sh: ready ($(.venv/bin/python --version), venv in .venv)"
