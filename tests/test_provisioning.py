"""Provisioning: scripts/*.sh lint clean, one script installs system packages (CI, README and the Vagrant VM all
go through it), it behaves (idempotent, offline when nothing is missing, only what is missing, no snaps), and the
Vagrantfile is valid Ruby that provisions with the same scripts.

install-system-packages.sh is run for real against fake apt-get / apt-cache / dpkg-query / sudo / uname placed
first on PATH: nothing is installed, and no root or network is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))
SYSTEM_SCRIPT = REPO / "scripts" / "install-system-packages.sh"
VAGRANTFILE = REPO / "Vagrantfile"
SHELLCHECK = shutil.which("shellcheck")
RUBY = shutil.which("ruby")
BASH = shutil.which("bash")

BASE_PACKAGES = ["iproute2", "ethtool", "mininet", "bridge-utils", "python3-venv"]
TEST_PACKAGES = ["chromium", "shellcheck", "ruby"]

needs_shellcheck = pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed "
                                      "(bash scripts/install-system-packages.sh --for-tests installs it)")
needs_ruby = pytest.mark.skipif(RUBY is None, reason="ruby is not installed "
                                "(bash scripts/install-system-packages.sh --for-tests installs it)")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def code_lines(path: Path) -> list[str]:
    """The file's lines without comments (shell and Ruby: '#' at the start or after whitespace, but not Ruby's
    '#{' interpolation; these files put no such '#' inside quotes), blank lines dropped."""
    lines = []
    for line in path.read_text().splitlines():
        code = re.sub(r"(^|\s)#(?!\{).*$", "", line).rstrip()
        if code.strip():
            lines.append(code)
    return lines


# ---------------------------------------------------------------------------------------------------- lint


def test_there_are_scripts_to_check() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"install.sh", "install-system-packages.sh", "test.sh", "main.sh"} <= names


@needs_shellcheck
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_shellcheck_clean(script: Path) -> None:
    assert SHELLCHECK is not None
    result = subprocess.run([SHELLCHECK, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


@needs_shellcheck
def test_shellcheck_does_flag_a_bad_script(tmp_path: Path) -> None:
    """The lint above could fail: shellcheck reports an unquoted expansion."""
    assert SHELLCHECK is not None
    bad = tmp_path / "bad.sh"
    bad.write_text('#!/usr/bin/env bash\nrm -rf $1/build\n')
    result = subprocess.run([SHELLCHECK, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SC2086" in result.stdout


def test_test_command_runs_shellcheck_before_pytest() -> None:
    lines = code_lines(REPO / "scripts" / "test.sh")
    lint = [i for i, line in enumerate(lines) if re.match(r"\s*shellcheck scripts/\*\.sh\s*$", line)]
    pytest_run = [i for i, line in enumerate(lines) if "-m pytest" in line]
    install = [i for i, line in enumerate(lines) if re.match(r"\s*bash scripts/install\.sh --for-tests\b", line)]
    assert lint and pytest_run and install
    assert install[0] < lint[0] < pytest_run[0]


# ------------------------------------------------------------------------------- one script runs apt-get


def test_only_install_system_packages_runs_apt_get() -> None:
    others = [p for p in SCRIPTS if p != SYSTEM_SCRIPT] + [REPO / ".ci" / "run", VAGRANTFILE]
    for path in others:
        for line in code_lines(path):
            assert not re.search(r"\b(apt-get|apt|dpkg)\s+(install|update|-)", line), f"{path.name}: {line}"
            assert "apt-get" not in line, f"{path.name} calls apt-get: {line}"
    assert any("apt-get" in line for line in code_lines(SYSTEM_SCRIPT))


def test_install_sh_calls_the_system_script_before_making_the_venv() -> None:
    lines = code_lines(REPO / "scripts" / "install.sh")
    calls = [i for i, line in enumerate(lines)
             if re.match(r"\s*bash scripts/install-system-packages\.sh\b", line)]
    venv = [i for i, line in enumerate(lines) if "-m venv" in line]
    assert calls and venv and calls[0] < venv[0]


def test_vagrantfile_provisions_with_the_system_script_then_install_sh() -> None:
    text = "\n".join(code_lines(VAGRANTFILE))
    system = text.find('path: "scripts/install-system-packages.sh"')
    install = text.find("/scripts/install.sh")
    assert system != -1, "the Vagrantfile does not run scripts/install-system-packages.sh"
    assert install != -1, "the Vagrantfile does not run scripts/install.sh"
    assert system < install


# ---------------------------------------------------------------------------------------------- Vagrantfile


@needs_ruby
def test_vagrantfile_is_valid_ruby() -> None:
    assert RUBY is not None
    result = subprocess.run([RUBY, "-c", str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


# A stand-in for Vagrant's configuration object: every call is recorded with its arguments, blocks are run with
# a recorder for the named sub-configuration, and the calls are printed as JSON.
RUBY_STUB = r"""
require "json"
CALLS = []
class Recorder
  def initialize(prefix) = @prefix = prefix
  def [](key) = Recorder.new("#{@prefix}[#{key}]")
  def []=(key, value)
    CALLS << ["#{@prefix}[#{key}]=", [value]]
  end
  def respond_to_missing?(*) = true
  def method_missing(name, *args, **kwargs, &block)
    full = "#{@prefix}.#{name}"
    CALLS << [full, args + (kwargs.empty? ? [] : [kwargs])]
    block&.call(Recorder.new("#{full}(#{args.first})"))
    Recorder.new(full)
  end
end
module Vagrant
  def self.configure(version)
    CALLS << ["configure", [version]]
    yield Recorder.new("config")
  end
end
load ARGV[0]
puts JSON.generate(CALLS)
"""


@needs_ruby
def test_vagrantfile_configures_box_resources_share_and_provisioning(tmp_path: Path) -> None:
    assert RUBY is not None
    stub = tmp_path / "stub.rb"
    stub.write_text(RUBY_STUB)
    result = subprocess.run([RUBY, str(stub), str(VAGRANTFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = [(name, args) for name, args in json.loads(result.stdout)]
    by_name: dict[str, list[list]] = {}
    for name, args in calls:
        by_name.setdefault(name, []).append(args)

    assert by_name["config.vm.box="] == [["bento/ubuntu-24.04"]]
    assert [".", "/home/vagrant/vc-testbed"] in by_name["config.vm.synced_folder"]
    for provider in ("virtualbox", "libvirt", "parallels"):
        assert by_name[f"config.vm.provider({provider}).cpus="] == [[2]]
        assert by_name[f"config.vm.provider({provider}).memory="] == [[4096]]
    assert by_name["config.vm.provider(vmware_desktop).vmx[numvcpus]="] == [["2"]]
    assert by_name["config.vm.provider(vmware_desktop).vmx[memsize]="] == [["4096"]]

    provisions = by_name["config.vm.provision"]
    assert len(provisions) == 2
    (system_name, system), (python_name, python) = provisions
    assert system_name == "system-packages" and system["path"] == "scripts/install-system-packages.sh"
    assert system["privileged"] is True
    assert python_name == "python-packages" and python["privileged"] is False
    assert python["inline"] == "bash /home/vagrant/vc-testbed/scripts/install.sh"
    # The VM's venv stays out of the folder shared with the host.
    assert not python["env"]["TESTBED_VENV"].startswith("/home/vagrant/vc-testbed")


# ------------------------------------------------------------------------ install-system-packages.sh runs

FAKE_TOOLS = {
    # Records each call, with the DEBIAN_FRONTEND it saw.
    "apt-get": 'echo "DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-} $*" >> "$FAKE_LOG"\n',
    # Installed = listed in FAKE_INSTALLED.
    "dpkg-query": 'for p in $FAKE_INSTALLED; do [ "$p" = "${!#}" ] && { printf installed; exit 0; }; done\n'
                  'printf not-installed\n',
    # FAKE_CANDIDATES: "name=version ..."; a package without one is unknown to apt.
    "apt-cache": 'for kv in $FAKE_CANDIDATES; do\n'
                 '  if [ "${kv%%=*}" = "$2" ]; then printf "%s:\\n  Installed: (none)\\n  Candidate: %s\\n" "$2" '
                 '"${kv#*=}"; fi\n'
                 'done\n',
    "sudo": 'exec "$@"\n',
    # A kernel release without /lib/modules/<release>: the sch_netem branch stays off.
    "uname": 'echo 0.0.0-testbed-fake\n',
}


def run_system_script(tmp_path: Path, *args: str, installed: list[str], candidates: dict[str, str],
                      path: str | None = None) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    assert BASH is not None
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    for name, body in FAKE_TOOLS.items():
        tool = fake / name
        tool.write_text(f"#!{BASH}\n{body}")
        tool.chmod(0o755)
    log = tmp_path / "apt-get.log"
    log.write_text("")
    env = {
        "PATH": path if path is not None else f"{fake}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_LOG": str(log),
        "FAKE_INSTALLED": " ".join(installed),
        "FAKE_CANDIDATES": " ".join(f"{k}={v}" for k, v in candidates.items()),
    }
    result = subprocess.run([BASH, str(SYSTEM_SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)
    return result, log.read_text().splitlines()


EVERYTHING = BASE_PACKAGES + TEST_PACKAGES
DEBIAN_CANDIDATES = {name: "1.0-1" for name in EVERYTHING} | {"chromium": "156.0.8078.79-1~deb12u1"}


@needs_bash
def test_nothing_missing_means_no_apt_get_at_all(tmp_path: Path) -> None:
    result, calls = run_system_script(tmp_path, "--for-tests", installed=EVERYTHING, candidates=DEBIAN_CANDIDATES)
    assert result.returncode == 0, result.stderr
    assert calls == []  # not even apt-get update: re-runs are fast and offline
    assert "already installed" in result.stdout


@needs_bash
def test_installs_only_what_is_missing_after_an_update(tmp_path: Path) -> None:
    installed = [p for p in EVERYTHING if p not in ("mininet", "ruby")]
    result, calls = run_system_script(tmp_path, "--for-tests", installed=installed, candidates=DEBIAN_CANDIDATES)
    assert result.returncode == 0, result.stderr
    assert len(calls) == 2
    assert re.fullmatch(r"DEBIAN_FRONTEND=noninteractive -qq .*update", calls[0])
    install = calls[1].split()
    assert install[0] == "DEBIAN_FRONTEND=noninteractive"
    assert "install" in install and "-y" in install and "--no-install-recommends" in install
    assert install[install.index("--no-install-recommends") + 1:] == ["mininet", "ruby"]
    assert "installed mininet ruby" in result.stdout


@needs_bash
def test_test_packages_only_with_for_tests(tmp_path: Path) -> None:
    result, calls = run_system_script(tmp_path, installed=[], candidates=DEBIAN_CANDIDATES)
    assert result.returncode == 0, result.stderr
    assert calls[-1].split()[-len(BASE_PACKAGES):] == BASE_PACKAGES
    assert not set(TEST_PACKAGES) & set(calls[-1].split())


@needs_bash
@pytest.mark.parametrize("candidates", [
    {k: v for k, v in DEBIAN_CANDIDATES.items() if k != "chromium"},      # Ubuntu: no deb named chromium
    DEBIAN_CANDIDATES | {"chromium": "2:1snap1-0ubuntu2"},                  # a wrapper that installs the snap
], ids=["no-chromium-deb", "snap-wrapper"])
def test_chromium_snap_is_not_installed(tmp_path: Path, candidates: dict[str, str]) -> None:
    installed = [p for p in EVERYTHING if p not in ("chromium", "shellcheck")]
    result, calls = run_system_script(tmp_path, "--for-tests", installed=installed, candidates=candidates)
    assert result.returncode == 0, result.stderr
    assert calls[-1].split()[-1:] == ["shellcheck"]
    assert "chromium" not in calls[-1]
    assert "snap" in result.stdout and "browser test skips" in result.stdout


@needs_bash
def test_only_chromium_missing_and_unavailable_installs_nothing(tmp_path: Path) -> None:
    installed = [p for p in EVERYTHING if p != "chromium"]
    candidates = {k: v for k, v in DEBIAN_CANDIDATES.items() if k != "chromium"}
    result, calls = run_system_script(tmp_path, "--for-tests", installed=installed, candidates=candidates)
    assert result.returncode == 0, result.stderr
    assert [c for c in calls if " install " in f" {c} "] == []


@needs_bash
@pytest.mark.parametrize("for_tests", [False, True])
def test_without_apt_get_fails_listing_the_packages(tmp_path: Path, for_tests: bool) -> None:
    empty = tmp_path / "empty-path"
    empty.mkdir()
    args = ["--for-tests"] if for_tests else []
    result, calls = run_system_script(tmp_path, *args, installed=[], candidates={}, path=str(empty))
    assert result.returncode == 1
    assert "apt-get not found" in result.stderr
    listed = result.stderr.split("\n")[2].split()
    assert listed == BASE_PACKAGES + (TEST_PACKAGES if for_tests else [])
    assert "TESTBED_SKIP_SYSTEM_PACKAGES=1" in result.stderr
    assert calls == []


@needs_bash
def test_unknown_argument_is_rejected(tmp_path: Path) -> None:
    result, calls = run_system_script(tmp_path, "--for-test", installed=[], candidates=DEBIAN_CANDIDATES)
    assert result.returncode == 2 and "unknown argument '--for-test'" in result.stderr
    assert calls == []
