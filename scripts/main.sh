#!/usr/bin/env bash
# The main job: installs what is needed, then runs the default experiment on the sim backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/testbed run experiments/thesis-ge.toml --backend sim --out results/thesis-ge --overwrite --jobs 2
