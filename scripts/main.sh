#!/usr/bin/env bash
# The main job: installs what is needed, runs the default comparison experiment (VP9 with streaming FEC, block
# FEC and no FEC under the thesis Gilbert-Elliott channel) on the sim backend, and writes its report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/testbed run experiments/thesis-ge.toml --backend sim --out results/thesis-ge --overwrite --jobs 2
.venv/bin/testbed report results/thesis-ge
