"""The run topology on real Mininet hosts (root + Mininet); see testbed.emulator.mininet_topology."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from testbed.emulator import mininet_topology as topomod
from testbed.emulator.mininet_topology import (
    IFNAMSIZ,
    ROLES,
    CommandError,
    HostAddress,
    NeedsRootError,
    Topology,
    TopologyError,
    cleanup_prefix,
    create_topology,
    destroy_topology,
    enable_kernel_forwarding,
    list_leftovers,
    topology,
)

_why_not = None
if not sys.platform.startswith("linux"):
    _why_not = "Mininet hosts need Linux network namespaces"
elif os.geteuid() != 0:
    _why_not = "needs root to create Mininet hosts (run as root or use the Vagrant VM)"
elif shutil.which("mnexec") is None:
    _why_not = "Mininet's mnexec is not installed (apt install mininet)"
needs_root = pytest.mark.skipif(_why_not is not None, reason=_why_not or "")

RECEIVER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], int(sys.argv[2])))
    s.settimeout(float(sys.argv[3]))
    print("READY", flush=True)
    try:
        data, addr = s.recvfrom(2048)
        print("GOT", data.decode(), addr[0], flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    """
)
SENDER = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(sys.argv[2].encode(), (sys.argv[1], int(sys.argv[3])))
    """
)
# A child that builds a topology, starts a process in its router host, announces itself and waits.
HOLDER = """
import os, subprocess, sys, time
from testbed.emulator.mininet_topology import topology
with topology() as t:
    sleeper = subprocess.Popen(t.exec_argv("router", ["sleep", "60"]))
    while os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != os.stat(f"/proc/{t.pids['router']}/ns/net").st_ino:
        time.sleep(0.01)  # mnexec joins the host asynchronously
    print(t.prefix, "READY", flush=True)
    time.sleep(60)
"""


def udp_roundtrip(t: Topology, payload: str = "hello", port: int = 5000, timeout: float = 3.0) -> str:
    """Send one datagram from the sender host to the receiver host; return the receiver's report line."""
    rx = subprocess.Popen(t.exec_argv("receiver", [sys.executable, "-c", RECEIVER, t.receiver.ip, port, timeout]),
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "READY"
        subprocess.run(t.exec_argv("sender", [sys.executable, "-c", SENDER, t.receiver.ip, payload, port]),
                       check=True, timeout=10)
        out, _ = rx.communicate(timeout=timeout + 5)
        return out.strip()
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()


def root_links() -> str:
    return subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout


def all_processes() -> str:
    return subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout


def pids_in_netns(namespaces: set[tuple[int, int]]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if entry.isdigit() and (st.st_dev, st.st_ino) in namespaces:
            found.append(int(entry))
    return found


def host_interfaces(leftovers: list[str]) -> list[str]:
    """`ip -o link` inside the namespace of every leftover process."""
    pids = [item.split()[1] for item in leftovers if item.startswith("process")]
    return [subprocess.run(["mnexec", "-a", pid, "ip", "-o", "link"], capture_output=True, text=True).stdout
            for pid in pids]


def netns_of(pid: int) -> tuple[int, int]:
    st = os.stat(f"/proc/{pid}/ns/net")
    return (st.st_dev, st.st_ino)


def assert_gone(prefix: str, namespaces: set[tuple[int, int]] = frozenset()) -> None:
    """Nothing left: not by list_leftovers, not in `ip link`, not in `ps`, no process in the hosts' netns."""
    assert list_leftovers(prefix) == []
    assert prefix not in root_links()
    assert prefix not in all_processes()
    assert pids_in_netns(set(namespaces)) == []


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().split()
    assert len(line) == 2 and line[1] == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")
    return line[0]


def wait_joined(pid: int, namespace: tuple[int, int]) -> None:
    """Wait until a process started with exec_argv has entered its host (mnexec's setns is asynchronous)."""
    while True:
        try:
            if netns_of(pid) == namespace:
                return
        except FileNotFoundError:
            pytest.fail(f"process {pid} exited before joining its host")
        time.sleep(0.01)


# ------------------------------------------------------------------------------------- no root needed


def _fake_topology(prefix: str = "tb" + "a" * 10) -> Topology:
    sender, left, right, receiver = topomod._plan(prefix)
    return Topology(prefix, sender, receiver, left, right, {"sender": 11, "router": 12, "receiver": 13}, "disabled")


def test_names_carry_the_prefix_and_fit_ifnamsiz():
    t = _fake_topology()  # the longest allowed prefix
    ends = (t.sender, t.router_left, t.router_right, t.receiver)
    for end in ends:
        assert end.name.startswith(t.prefix) and end.interface.startswith(t.prefix)
        assert len(end.interface) <= IFNAMSIZ
    assert [e.interface for e in ends] == [f"{t.prefix}s-0", f"{t.prefix}r-l", f"{t.prefix}r-r", f"{t.prefix}d-0"]
    assert [e.ip for e in ends] == ["10.200.1.1", "10.200.1.2", "10.200.2.1", "10.200.2.2"]
    assert t.router_left.name == t.router_right.name == f"{t.prefix}r"
    assert len({e.mac for e in ends}) == 4
    with pytest.raises(ValueError, match="IFNAMSIZ"):
        topomod._plan("tb" + "a" * 11)
    with pytest.raises(ValueError):
        topomod._plan("tb;rm")
    assert topomod._plan("tb000001")[0].mac != topomod._plan("tb000002")[0].mac  # per-run MACs


def test_exec_argv_shaper_macs_and_pickling():
    t = _fake_topology()
    assert t.exec_argv("router", ["ip", "link", 3]) == ["mnexec", "-a", "12", "ip", "link", "3"]
    with pytest.raises(ValueError, match="unknown role 'switch'"):
        t.exec_argv("switch", ["true"])
    assert t.shaper_macs() == {"forward": (t.receiver.mac, t.router_right.mac),
                               "reverse": (t.sender.mac, t.router_left.mac)}
    assert pickle.loads(pickle.dumps(t)) == t
    assert set(t.pids) == set(ROLES)
    assert isinstance(t.sender, HostAddress)


def test_not_root_gives_clear_message(monkeypatch):
    monkeypatch.setattr(topomod.os, "geteuid", lambda: 1000)
    with pytest.raises(NeedsRootError, match=r"needs root: run as root or use the Vagrant VM \(see README\)"):
        create_topology()
    with pytest.raises(NeedsRootError, match="needs root"):
        with topology():
            pass
    with pytest.raises(NeedsRootError, match="needs root"):
        cleanup_prefix("tbzz")


def test_missing_mininet_names_the_package(monkeypatch):
    monkeypatch.setattr(topomod.os, "geteuid", lambda: 0)
    monkeypatch.setattr(topomod.shutil, "which", lambda name: None)
    with pytest.raises(TopologyError, match=r"mnexec.*apt install mininet"):
        create_topology()
    monkeypatch.setattr(topomod.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setitem(sys.modules, "mininet.net", None)  # makes `import mininet.net` fail
    with pytest.raises(TopologyError, match=r"`mininet` cannot be imported.*pip install mininet"):
        create_topology()


def test_command_error_carries_command_and_stderr():
    with pytest.raises(CommandError) as info:
        topomod._run(["ip", "link", "show", "dev", "tb-no-such-dev0"])
    assert info.value.argv[:3] == ["ip", "link", "show"]
    assert "tb-no-such-dev0" in str(info.value) and info.value.stderr


# ----------------------------------------------------------------------------------------- real, root


@needs_root
def test_hosts_route_only_through_the_router_and_destroy_leaves_nothing():
    t = create_topology()
    namespaces = {netns_of(pid) for pid in t.pids.values()}
    try:
        assert t.prefix.startswith("tb") and len(t.prefix) == 8
        assert len(namespaces) == 3 and netns_of(os.getpid()) not in namespaces
        for role, name in zip(ROLES, (t.sender.name, t.router_left.name, t.receiver.name)):
            assert f"mininet:{name}" in open(f"/proc/{t.pids[role]}/cmdline").read()
        assert t.prefix not in root_links()  # the veths live only inside the hosts

        def host(role: str, *argv: str) -> str:
            return subprocess.run(t.exec_argv(role, argv), capture_output=True, text=True, check=True).stdout

        assert host("router", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
        for role in ROLES:
            assert host(role, "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6").strip() == "1"
        assert t.offloads == "disabled"
        assert "tx-checksumming: off" in host("sender", "ethtool", "-k", t.sender.interface)
        neigh = host("router", "ip", "neigh", "show")
        assert t.sender.mac in neigh and t.receiver.mac in neigh and "PERMANENT" in neigh
        # The router's kernel does not forward: nothing gets through without a shaper.
        assert udp_roundtrip(t, "blocked", timeout=0.5) == "TIMEOUT"
        enable_kernel_forwarding(t)
        assert udp_roundtrip(t, "hello") == f"GOT hello {t.sender.ip}"
        # A process started in a host is not a child of its shell: destroy must find it by namespace.
        stray = subprocess.Popen(t.exec_argv("receiver", ["sleep", "60"]))
        wait_joined(stray.pid, netns_of(t.pids["receiver"]))
    finally:
        assert destroy_topology(t) == []
    assert stray.wait(timeout=5) == -signal.SIGTERM
    assert_gone(t.prefix, namespaces)
    assert destroy_topology(t) == []  # idempotent


@needs_root
def test_exception_inside_the_with_block_cleans_up_and_restores_handlers():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        with topology() as t:
            namespaces = {netns_of(pid) for pid in t.pids.values()}
            assert list_leftovers(t.prefix)
            raise RuntimeError("boom")
    assert_gone(t.prefix, namespaces)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_to_a_process_inside_the_with_block_cleans_up(sig):
    proc = spawn(HOLDER)
    try:
        prefix = read_ready(proc)
        assert any(item.startswith("process") and "sleep 60" in item for item in list_leftovers(prefix))
        proc.send_signal(sig)
        proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
    else:
        assert proc.returncode == 128 + signal.SIGTERM
    assert_gone(prefix)


@needs_root
def test_two_runs_at_once_in_two_processes_do_not_interfere():
    code = f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_mininet_topology import udp_roundtrip
        from testbed.emulator.mininet_topology import enable_kernel_forwarding, topology
        with topology() as t:
            print(t.prefix, "READY", flush=True)
            sys.stdin.readline()  # both topologies exist now
            enable_kernel_forwarding(t)
            print(udp_roundtrip(t, "hi-" + t.prefix), flush=True)
        """
    procs = [spawn(code), spawn(code)]
    try:
        prefixes = [read_ready(p) for p in procs]
        assert prefixes[0] != prefixes[1]
        assert all(list_leftovers(prefix) for prefix in prefixes)
        outs = [p.communicate("go\n", timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], outs
    for prefix, (out, _) in zip(prefixes, outs):
        assert out.strip() == f"GOT hi-{prefix} 10.200.1.1"
        assert_gone(prefix)


@needs_root
@pytest.mark.parametrize("via", ["function", "cli"])
def test_cleanup_prefix_removes_the_leftovers_of_a_sigkilled_run(via, capsys):
    proc = spawn(HOLDER)
    try:
        prefix = read_ready(proc)
        proc.kill()  # no chance to clean up (Mininet's shells exit with their pty; the hosts' anchors live on)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = list_leftovers(prefix)
    assert sum(f"{topomod.ANCHOR_MARK}{prefix}" in item for item in left) == 3
    assert any("sleep 60" in item for item in left)
    assert any(f"{prefix}r-l" in line for line in host_interfaces(left))
    if via == "function":
        removed = cleanup_prefix(prefix)
        assert sorted(removed) == sorted(left)
    else:
        from testbed.cli import main

        assert main(["net", "cleanup", "--prefix", prefix]) == 0
        assert f"{topomod.ANCHOR_MARK}{prefix}r" in capsys.readouterr().err
    assert_gone(prefix)
    assert cleanup_prefix(prefix) == []
    if via == "cli":
        from testbed.cli import main

        assert main(["net", "cleanup", "--prefix", prefix]) == 0
        assert "nothing to remove" in capsys.readouterr().err


@needs_root
def test_cleanup_prefix_removes_prefixed_root_veths_and_named_namespaces():
    prefix = topomod.new_prefix()
    subprocess.run(["ip", "link", "add", f"{prefix}-x", "type", "veth", "peer", "name", f"{prefix}-y"], check=True)
    subprocess.run(["ip", "netns", "add", f"{prefix}-ns"], check=True)
    try:
        assert sorted(list_leftovers(prefix)) == sorted([f"interface {prefix}-x", f"interface {prefix}-y",
                                                         f"netns {prefix}-ns"])
        removed = cleanup_prefix(prefix)
        assert f"netns {prefix}-ns" in removed and len(removed) in (2, 3)  # one veth end takes its peer along
    finally:
        subprocess.run(["ip", "link", "del", f"{prefix}-x"], capture_output=True)
        subprocess.run(["ip", "netns", "del", f"{prefix}-ns"], capture_output=True)
    assert_gone(prefix)


@needs_root
def test_explicit_prefix_in_use_is_refused_without_touching_the_existing_run():
    t = create_topology()
    try:
        with pytest.raises(TopologyError, match="in use"):
            create_topology(t.prefix)
        assert udp_roundtrip(t, "blocked", timeout=0.3) == "TIMEOUT"  # hosts still answer commands
        assert len([item for item in list_leftovers(t.prefix) if "mininet:" in item]) == 3
    finally:
        destroy_topology(t)
    assert_gone(t.prefix)
