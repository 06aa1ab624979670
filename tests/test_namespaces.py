"""Real network-namespace topology tests (root + iproute2); see testbed.emulator.namespaces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from testbed.emulator import namespaces as nsmod
from testbed.emulator.namespaces import (
    IFNAMSIZ,
    CommandError,
    NeedsRootError,
    cleanup_prefix,
    create_topology,
    destroy_topology,
    enable_kernel_forwarding,
    ns_exec_argv,
    plan_topology,
    topology,
)

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_IP = shutil.which("ip") is not None
needs_root = pytest.mark.skipif(
    not (IS_ROOT and HAS_IP),
    reason="needs root and iproute2 `ip` to create network namespaces (run as root or use the Vagrant VM)",
)

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


def udp_roundtrip(t, payload: str = "hello", port: int = 5000, timeout: float = 3.0) -> str:
    """Send one datagram sender-ns -> receiver-ns; return the receiver's report line."""
    rx = subprocess.Popen(
        ns_exec_argv(t.receiver_ns, [sys.executable, "-c", RECEIVER, t.receiver_ip, port, timeout]),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert rx.stdout.readline().strip() == "READY"
        subprocess.run(
            ns_exec_argv(t.sender_ns, [sys.executable, "-c", SENDER, t.receiver_ip, payload, port]),
            check=True,
            timeout=10,
        )
        out, _ = rx.communicate(timeout=timeout + 5)
        return out.strip()
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()


def leftovers(prefix: str) -> tuple[list[str], list[str]]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return (
        [line for line in netns.splitlines() if line.startswith(prefix)],
        [line for line in links.splitlines() if prefix in line],
    )


def assert_gone(prefix: str) -> None:
    ns, links = leftovers(prefix)
    assert ns == [] and links == [], (ns, links)


def spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_ready(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline().split()
    assert len(line) == 2 and line[1] == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")
    return line[0]


# ------------------------------------------------------------------------------------- no root needed


def test_names_fit_ifnamsiz_and_are_prefixed():
    t = plan_topology("tb" + "a" * 9)  # longest allowed prefix
    for name in (*t.namespaces, *t.interfaces):
        assert name.startswith(t.prefix)
        assert len(name) <= IFNAMSIZ
    assert len(set(t.interfaces)) == 4 and len(set(t.namespaces)) == 3
    assert t.shaper_interfaces == (t.router_left_if, t.router_right_if)
    with pytest.raises(ValueError, match="IFNAMSIZ"):
        plan_topology("tb" + "a" * 10)
    with pytest.raises(ValueError):
        plan_topology("tb;rm")
    # per-prefix MACs: two runs never share one
    assert plan_topology("tb000001").sender_mac != plan_topology("tb000002").sender_mac


def test_not_root_gives_clear_message(monkeypatch):
    monkeypatch.setattr(nsmod.os, "geteuid", lambda: 1000)
    with pytest.raises(NeedsRootError, match="needs root: run as root or use the Vagrant VM"):
        create_topology()


def test_command_error_carries_command_and_stderr():
    with pytest.raises(CommandError) as info:
        nsmod._run(["ip", "link", "show", "dev", "tb-no-such-dev0"])
    assert info.value.argv[:3] == ["ip", "link", "show"]
    assert "tb-no-such-dev0" in str(info.value)
    assert info.value.stderr  # iproute2's complaint is kept


# ----------------------------------------------------------------------------------------- real, root


@needs_root
def test_udp_reaches_receiver_through_router_and_destroy_leaves_nothing():
    t = create_topology()
    try:
        assert t.prefix.startswith("tb") and len(t.prefix) == 8
        assert os.path.exists(f"/run/netns/{t.router_ns}")
        fwd = subprocess.run(
            ns_exec_argv(t.router_ns, ["sysctl", "-n", "net.ipv4.ip_forward"]),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert fwd == "0"  # the userspace shaper forwards, not the kernel
        # Without forwarding nothing gets through: the path really goes via the router namespace.
        assert udp_roundtrip(t, "blocked", timeout=0.5) == "TIMEOUT"
        enable_kernel_forwarding(t)
        assert udp_roundtrip(t, "hello") == f"GOT hello {t.sender_ip}"
        # static neighbours on the router: no ARP needed
        neigh = subprocess.run(["ip", "-n", t.router_ns, "neigh", "show"], capture_output=True, text=True).stdout
        assert t.sender_mac in neigh and t.receiver_mac in neigh and "PERMANENT" in neigh
        assert t.offloads in ("disabled", "skipped: ethtool not found") or t.offloads.startswith("partial")
    finally:
        removed = destroy_topology(t)
    assert set(t.namespaces) <= set(removed)
    assert_gone(t.prefix)
    assert destroy_topology(t) == []  # idempotent


@needs_root
def test_context_manager_cleans_up_after_exception_and_restores_handlers():
    before_int = signal.getsignal(signal.SIGINT)
    before_term = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        with topology() as t:
            assert leftovers(t.prefix)[0]
            raise RuntimeError("boom")
    assert_gone(t.prefix)
    assert signal.getsignal(signal.SIGINT) is before_int
    assert signal.getsignal(signal.SIGTERM) is before_term


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_context_manager_cleans_up_on_signal_in_child(sig):
    proc = spawn(
        """
        import time
        from testbed.emulator.namespaces import topology
        with topology() as t:
            print(t.prefix, "READY", flush=True)
            time.sleep(30)
        """
    )
    try:
        prefix = read_ready(proc)
        assert leftovers(prefix)[0]
        proc.send_signal(sig)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    if sig == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr or proc.returncode == -signal.SIGINT
    else:
        assert proc.returncode == 128 + signal.SIGTERM
    assert_gone(prefix)


@needs_root
def test_two_concurrent_runs_get_distinct_prefixes_and_both_work():
    code = f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_namespaces import udp_roundtrip
        from testbed.emulator.namespaces import enable_kernel_forwarding, topology
        with topology() as t:
            enable_kernel_forwarding(t)
            print(t.prefix, udp_roundtrip(t, "hi-" + t.prefix), flush=True)
        """
    procs = [spawn(code), spawn(code)]
    outs = [p.communicate(timeout=20) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [out.split(None, 1) for out, _ in outs]
    prefixes = [r[0] for r in results]
    assert prefixes[0] != prefixes[1]
    for prefix, line in results:
        assert line.strip() == f"GOT hi-{prefix} 10.200.1.1"
        assert_gone(prefix)


@needs_root
def test_cleanup_prefix_removes_leftovers_of_killed_run():
    proc = spawn(
        """
        import time
        from testbed.emulator.namespaces import topology
        with topology() as t:
            print(t.prefix, "READY", flush=True)
            time.sleep(30)
        """
    )
    try:
        prefix = read_ready(proc)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # a veth stranded in the root namespace (as if killed between creating and moving it)
    subprocess.run(["ip", "link", "add", f"{prefix}-x", "type", "veth", "peer", "name", f"{prefix}-y"], check=True)
    # a process left running inside the router namespace keeps it alive unless cleanup ends it
    stray = subprocess.Popen(ns_exec_argv(f"{prefix}-rtr", ["sleep", "30"]))
    try:
        ns, links = leftovers(prefix)
        assert len(ns) == 3 and len(links) == 2
        removed = cleanup_prefix(prefix)
        assert {f"{prefix}-snd", f"{prefix}-rtr", f"{prefix}-rcv"} <= set(removed)
        assert f"{prefix}-x" in removed or f"{prefix}-y" in removed
        stray.wait(timeout=5)
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()
    assert_gone(prefix)
    assert cleanup_prefix(prefix) == []


@needs_root
def test_explicit_prefix_collision_is_a_command_error():
    t = create_topology()
    try:
        with pytest.raises(CommandError, match="File exists") as info:
            create_topology(t.prefix)
        assert info.value.argv[:3] == ["ip", "netns", "add"]
        # the failed attempt did not destroy the existing topology
        assert len(leftovers(t.prefix)[0]) == 3
    finally:
        destroy_topology(t)
    assert_gone(t.prefix)


@needs_root
def test_net_cleanup_command_removes_a_killed_runs_namespaces(capsys):
    from testbed.cli import main

    prefix = nsmod.new_prefix()
    subprocess.run(["ip", "netns", "add", f"{prefix}-rtr"], check=True)
    assert main(["net", "cleanup", "--prefix", prefix]) == 0
    assert f"{prefix}-rtr" in capsys.readouterr().err
    assert f"{prefix}-rtr" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert main(["net", "cleanup", "--prefix", prefix]) == 0
    assert "nothing to remove" in capsys.readouterr().err
