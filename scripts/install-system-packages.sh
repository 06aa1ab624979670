#!/usr/bin/env bash
# The one script that installs the testbed's system packages, with apt-get, on Debian 12 or Ubuntu 24.04.
# scripts/install.sh (and so the README commands and CI) and the Vagrant VM's provisioning all call it.
#
#   bash scripts/install-system-packages.sh [--for-tests]
#
# Packages: iproute2 (ip, tc), ethtool, mininet (Debian's package: the mnexec helper that the Python mininet
# package runs), bridge-utils (Mininet's LinuxBridge), python3-venv (Debian and Ubuntu split the venv module out
# of python3). --for-tests adds chromium (the HTML report is opened in it), shellcheck (lints scripts/*.sh) and
# ruby (`ruby -c` checks the Vagrantfile's syntax).
#
# Idempotent and quiet: when every package is already installed it changes nothing and needs no network;
# otherwise it runs apt-get update, then installs only what is missing (--no-install-recommends, no prompts,
# with sudo when not root). Ubuntu ships Chromium only as a snap (its deb is a wrapper that installs the snap);
# the snap is not installed, and the browser test skips there. When the running kernel has a module tree but
# no sch_netem (some Ubuntu kernel flavours keep it in linux-modules-extra-<kernel release>), that package is
# installed too; on a kernel without /lib/modules/<release> (containers, CI here) nothing is done about it,
# and the mininet backend falls back to its userspace shaper.
set -euo pipefail

me=install-system-packages.sh
for_tests=false
for arg in "$@"; do
  case "$arg" in
    --for-tests) for_tests=true ;;
    -h | --help)
      echo "usage: bash scripts/$me [--for-tests]"
      exit 0
      ;;
    *)
      echo "$me: unknown argument '$arg' (usage: bash scripts/$me [--for-tests])" >&2
      exit 2
      ;;
  esac
done

packages=(iproute2 ethtool mininet bridge-utils python3-venv)
test_packages=(chromium shellcheck ruby)
wanted=("${packages[@]}")
if [ "$for_tests" = true ]; then
  wanted+=("${test_packages[@]}")
fi

if ! command -v apt-get >/dev/null 2>&1; then
  {
    echo "$me: apt-get not found: this script knows Debian and Ubuntu only."
    echo "Install these packages (Debian's names) with your system's package manager:"
    echo "  ${wanted[*]}"
    echo "(ip and tc, ethtool, Mininet's mnexec helper, brctl, Python's venv module"
    if [ "$for_tests" = true ]; then
      echo " and, for the tests, a Chromium binary named chromium, shellcheck and ruby"
    fi
    echo "), then run scripts/install.sh with TESTBED_SKIP_SYSTEM_PACKAGES=1."
  } >&2
  exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$me: not root and sudo not found; run it as root: ${wanted[*]}" >&2
    exit 1
  fi
  as_root=(sudo)
fi

apt_get() {
  # A fresh VM's unattended upgrades may hold the dpkg lock for a while: wait for it instead of failing.
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=600 "$@"
}

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

# The version apt would install, empty when the package lists do not know the package.
candidate() {
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '^(none)$' || true
}

missing=()
for package in "${wanted[@]}"; do
  if ! installed "$package"; then
    missing+=("$package")
  fi
done

# sch_netem: only where the kernel has a module tree to add to and modprobe cannot find the module.
netem_package=""
modules_dir=/lib/modules/$(uname -r)
if [ -d "$modules_dir" ] && command -v modprobe >/dev/null 2>&1 && ! modprobe -n -q sch_netem 2>/dev/null; then
  netem_package=linux-modules-extra-$(uname -r)
  if ! installed "$netem_package"; then
    missing+=("$netem_package")
  fi
fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "$me: system packages already installed (${wanted[*]})"
  exit 0
fi

apt_get update

to_install=()
notes=()
for package in "${missing[@]}"; do
  version=$(candidate "$package")
  case "$package" in
    chromium)
      if [ -z "$version" ] || [[ "$version" == *snap* ]]; then
        notes+=("no deb package of Chromium here (Ubuntu ships it as a snap); not installed, so the browser test skips")
        continue
      fi
      ;;
    "$netem_package")
      if [ -z "$version" ]; then
        notes+=("the kernel has no sch_netem and $package is not available; the mininet backend will use its userspace shaper")
        continue
      fi
      ;;
  esac
  to_install+=("$package")
done

if [ "${#to_install[@]}" -gt 0 ]; then
  apt_get install -y --no-install-recommends "${to_install[@]}" >/dev/null
fi
if [ -n "$netem_package" ] && [[ " ${to_install[*]} " == *" $netem_package "* ]] && ! modprobe -n -q sch_netem; then
  notes+=("installed $netem_package but modprobe still finds no sch_netem; the mininet backend will use its userspace shaper")
fi

for note in "${notes[@]}"; do
  echo "$me: $note"
done
if [ "${#to_install[@]}" -gt 0 ]; then
  echo "$me: installed ${to_install[*]}"
fi
