"""The run topology on real Mininet hosts (root + Mininet); see testbed.emulator.mininet_topology."""

from __future__ import annotations

import os
import pickle
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from testbed.emulator import mininet_topology as topomod
from testbed.emulator.mininet_topology import (
    IFNAMSIZ,
    MAX_CROSS_FLOWS,
    MAX_PREFIX_LEN,
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
# A child that builds a topology (cross pairs: argv[1]), starts a process in its router host, announces itself
# and waits.
HOLDER = """
import os, subprocess, sys, time
from testbed.emulator.mininet_topology import topology
with topology(cross_pairs=int(sys.argv[1])) as t:
    sleeper = subprocess.Popen(t.exec_argv("router", ["sleep", "60"]))
    while os.stat(f"/proc/{sleeper.pid}/ns/net").st_ino != os.stat(f"/proc/{t.pids['router']}/ns/net").st_ino:
        time.sleep(0.01)  # mnexec joins the host asynchronously
    print(t.prefix, "READY", flush=True)
    time.sleep(60)
"""


def address(t: Topology, role: str) -> HostAddress:
    """The interface of the host of `role` (the router excluded)."""
    ends = {"sender": t.sender, "receiver": t.receiver}
    ends.update({f"cross-sender-{i}": end for i, end in enumerate(t.cross_senders, 1)})
    ends.update({f"cross-receiver-{i}": end for i, end in enumerate(t.cross_receivers, 1)})
    return ends[role]


def udp_roundtrip(t: Topology, payload: str = "hello", port: int = 5000, timeout: float = 3.0,
                  src: str = "sender", dst: str = "receiver") -> str:
    """Send one datagram from the host of `src` to the host of `dst`; return the receiver's report line."""
    dst_ip = address(t, dst).ip
    rx = subprocess.Popen(t.exec_argv(dst, [sys.executable, "-c", RECEIVER, dst_ip, port, timeout]),
                          stdout=subprocess.PIPE, text=True)
    try:
        assert rx.stdout.readline().strip() == "READY"
        subprocess.run(t.exec_argv(src, [sys.executable, "-c", SENDER, dst_ip, payload, port]),
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


def spawn(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], stdin=subprocess.PIPE,
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


LONGEST_PREFIX = "tb" + "a" * (MAX_PREFIX_LEN - 2)


def _fake_topology(prefix: str = LONGEST_PREFIX, cross_pairs: int = 0) -> Topology:
    t = topomod._plan(prefix, cross_pairs)
    roles = [*ROLES, *(f"cross-{side}-{i}" for side in ("sender", "receiver") for i in range(1, cross_pairs + 1))]
    return replace(t, pids={role: 11 + k for k, role in enumerate(roles)}, offloads="disabled")


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
    assert (t.cross_senders, t.cross_receivers, topomod._switch_plans(t)) == ((), (), ())
    with pytest.raises(ValueError, match="IFNAMSIZ"):
        topomod._plan("tb" + "a" * 11)
    with pytest.raises(ValueError):
        topomod._plan("tb;rm")
    assert topomod._plan("tb000001").sender.mac != topomod._plan("tb000002").sender.mac  # per-run MACs


def test_dumbbell_plan_names_addresses_and_macs():
    t = _fake_topology(cross_pairs=MAX_CROSS_FLOWS)
    p = t.prefix
    assert [(e.name, e.interface, e.ip) for e in t.cross_senders] == [
        (f"{p}x{i}", f"{p}x-{i}", f"10.200.1.{10 + i}") for i in range(1, 5)]
    assert [(e.name, e.interface, e.ip) for e in t.cross_receivers] == [
        (f"{p}y{i}", f"{p}y-{i}", f"10.200.2.{10 + i}") for i in range(1, 5)]
    left, right = topomod._switch_plans(t)
    assert (left.name, right.name) == (f"{p}bl", f"{p}br")
    assert [(role, end, port) for role, end, port, _ in left.ports] == [
        ("router", t.router_left, f"{p}blr"), ("sender", t.sender, f"{p}bls"),
        *((f"cross-sender-{i}", t.cross_senders[i - 1], f"{p}bl{i}") for i in range(1, 5))]
    assert [(role, end, port) for role, end, port, _ in right.ports] == [
        ("router", t.router_right, f"{p}brr"), ("receiver", t.receiver, f"{p}brd"),
        *((f"cross-receiver-{i}", t.cross_receivers[i - 1], f"{p}br{i}") for i in range(1, 5))]
    hosts = [end for _, end in topomod._ends(t)]
    names = [e.name for e in hosts] + [e.interface for e in hosts] + topomod._root_interfaces(t)
    assert all(name.startswith(p) and len(name) <= IFNAMSIZ for name in names), names
    assert len(set(topomod._root_interfaces(t))) == 2 + 2 * (2 + MAX_CROSS_FLOWS)
    macs = [e.mac for e in hosts] + [side.mac for side in (left, right)] + [
        mac for side in (left, right) for *_, mac in side.ports]
    assert len(set(macs)) == len(macs) == len(hosts) + 2 + 2 * (2 + MAX_CROSS_FLOWS)
    assert set(t.pids) == {*ROLES, *(f"cross-{s}-{i}" for s in ("sender", "receiver") for i in range(1, 5))}
    assert t.exec_argv("cross-receiver-4", ["true"])[:3] == ["mnexec", "-a", str(t.pids["cross-receiver-4"])]


def test_cross_pairs_out_of_range_raise_value_error():
    for bad in (MAX_CROSS_FLOWS + 1, -1):
        with pytest.raises(ValueError, match="cross_pairs"):
            create_topology(cross_pairs=bad)
        with pytest.raises(ValueError, match="cross_pairs"):
            with topology(cross_pairs=bad):
                pass
        with pytest.raises(ValueError, match="cross_pairs"):
            topomod._plan("tb000001", bad)


def test_exec_argv_shaper_macs_and_pickling():
    t = _fake_topology()
    assert t.exec_argv("router", ["ip", "link", 3]) == ["mnexec", "-a", "12", "ip", "link", "3"]
    with pytest.raises(ValueError, match="unknown role 'switch'; expected one of sender, router, receiver"):
        t.exec_argv("switch", ["true"])
    assert t.shaper_macs() == {"forward": (t.router_right.mac, {"10.200.2.2": t.receiver.mac}),
                               "reverse": (t.router_left.mac, {"10.200.1.1": t.sender.mac})}
    assert pickle.loads(pickle.dumps(t)) == t
    assert set(t.pids) == set(ROLES)
    assert isinstance(t.sender, HostAddress)
    assert t.switch == "none"


def test_shaper_macs_of_a_one_pair_dumbbell():
    t = _fake_topology("tb000001", cross_pairs=1)
    mac = {i: topomod._mac("tb000001", i) for i in (1, 2, 3, 4, 0x11, 0x21)}
    assert t.shaper_macs() == {
        "forward": (mac[3], {"10.200.2.2": mac[4], "10.200.2.11": mac[0x21]}),
        "reverse": (mac[2], {"10.200.1.1": mac[1], "10.200.1.11": mac[0x11]}),
    }
    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(ValueError, match="cross-receiver-1"):
        t.exec_argv("cross-receiver-2", ["true"])


def test_switch_is_ovs_only_where_usable(monkeypatch):
    from mininet.node import OVSBridge
    from mininet.nodelib import LinuxBridge

    monkeypatch.setattr(topomod.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(topomod, "_failure", lambda argv: None)
    assert topomod._choose_switch() == ("ovs", OVSBridge, {"failMode": "standalone"})
    monkeypatch.setattr(topomod, "_failure", lambda argv: "db.sock: connection refused" if "show" in argv else None)
    kind, cls, params = topomod._choose_switch()
    assert kind == "linux-bridge (Open vSwitch unusable: `ovs-vsctl show` failed: db.sock: connection refused)"
    assert issubclass(cls, LinuxBridge) and params == {"stp": False}
    monkeypatch.setattr(topomod.shutil, "which", lambda name: None)
    monkeypatch.setattr(topomod.os.path, "isdir", lambda path: False)
    monkeypatch.setattr(topomod, "_failure", lambda argv: "modprobe: FATAL")
    assert topomod._choose_switch()[0] == ("linux-bridge (Open vSwitch unusable: ovs-vsctl not found; "
                                           "kernel module openvswitch neither loaded nor loadable)")


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


def start_stray(t: Topology, role: str) -> subprocess.Popen:
    """A long sleep started in a host, once it has joined the host's namespace."""
    stray = subprocess.Popen(t.exec_argv(role, ["sleep", "60"]))
    wait_joined(stray.pid, netns_of(t.pids[role]))
    return stray


def assert_destroyed(t: Topology, namespaces: set, stray: subprocess.Popen) -> None:
    """After destroy_topology: the stray got SIGTERM, nothing of the topology is left, destroy is idempotent."""
    assert stray.wait(timeout=5) == -signal.SIGTERM
    assert_gone(t.prefix, namespaces)
    assert destroy_topology(t) == []


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
        stray = start_stray(t, "receiver")
    finally:
        assert destroy_topology(t) == []
    assert_destroyed(t, namespaces, stray)


@needs_root
def test_dumbbell_forwards_every_pair_only_through_the_router():
    t = create_topology(cross_pairs=2)
    namespaces = {netns_of(pid) for pid in t.pids.values()}
    pairs = [("sender", "receiver", t.sender.ip), ("cross-sender-1", "cross-receiver-1", "10.200.1.11"),
             ("cross-sender-2", "cross-receiver-2", "10.200.1.12")]
    try:
        assert len(namespaces) == 7 and netns_of(os.getpid()) not in namespaces
        # The router's kernel does not forward: the switches alone join no sender to any receiver.
        for src, dst, _ in pairs:
            assert udp_roundtrip(t, "blocked", timeout=0.5, src=src, dst=dst) == "TIMEOUT"
        assert udp_roundtrip(t, "blocked", timeout=0.5, src="cross-sender-1", dst="receiver") == "TIMEOUT"
        enable_kernel_forwarding(t)
        for src, dst, src_ip in pairs:
            assert udp_roundtrip(t, f"from-{src}", src=src, dst=dst) == f"GOT from-{src} {src_ip}"
        assert udp_roundtrip(t, "cross", src="cross-sender-2", dst="receiver") == "GOT cross 10.200.1.12"
        stray = start_stray(t, "cross-receiver-2")
    finally:
        assert destroy_topology(t) == []
    assert_destroyed(t, namespaces, stray)


@needs_root
def test_dumbbell_names_switches_ipv6_offloads_and_neighbours():
    if topomod.switch_choice() == "ovs":
        pytest.skip("checks Linux bridge and port names; Open vSwitch is usable here, so the dumbbell uses it")
    prefix = "tb" + secrets.token_hex(5)  # the longest allowed prefix
    assert len(prefix) == MAX_PREFIX_LEN
    t = create_topology(prefix, cross_pairs=MAX_CROSS_FLOWS)
    try:
        def host(role: str, *argv: str) -> str:
            return subprocess.run(t.exec_argv(role, argv), capture_output=True, text=True, check=True).stdout

        cross = [f"cross-{side}-{i}" for side in ("sender", "receiver") for i in range(1, MAX_CROSS_FLOWS + 1)]
        assert list(t.pids) == [*ROLES, *cross]
        if not os.path.exists("/sys/module/openvswitch"):
            assert t.switch.startswith("linux-bridge (Open vSwitch unusable: ") and "openvswitch" in t.switch
        assert t.switch.startswith("linux-bridge")
        assert t.offloads == "disabled"
        # Names: hosts (shells), switch shells, root-namespace links and every host's interfaces.
        shells = {item.split("mininet:")[1].rstrip(")") for item in list_leftovers(prefix) if "mininet:" in item}
        host_names = {f"{prefix}{n}" for n in ("s", "r", "d", "x1", "x2", "x3", "x4", "y1", "y2", "y3", "y4")}
        assert shells == host_names | {f"{prefix}bl", f"{prefix}br"}
        left_ports = {f"{prefix}bl{c}" for c in "sr1234"}
        right_ports = {f"{prefix}br{c}" for c in "rd1234"}
        assert {n for n in topomod._root_links() if n.startswith(prefix)} == left_ports | right_ports | {
            f"{prefix}bl", f"{prefix}br"}
        assert set(os.listdir(f"/sys/class/net/{prefix}bl/brif")) == left_ports
        assert set(os.listdir(f"/sys/class/net/{prefix}br/brif")) == right_ports
        in_hosts = {line.split(":")[1].strip().split("@")[0] for role in t.pids
                    for line in host(role, "ip", "-o", "link").splitlines()} - {"lo"}
        assert in_hosts == {f"{prefix}{n}" for n in ("s-0", "r-l", "r-r", "d-0", "x-1", "x-2", "x-3", "x-4", "y-1",
                                                     "y-2", "y-3", "y-4")}
        for name in in_hosts | left_ports | right_ports | host_names:
            assert name.startswith(prefix) and len(name) <= IFNAMSIZ, name
        # IPv6 and offloads off on the switches and their ports too.
        for name in left_ports | right_ports | {f"{prefix}bl", f"{prefix}br"}:
            assert open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").read().strip() == "1", name
            features = subprocess.run(["ethtool", "-k", name], capture_output=True, text=True, check=True).stdout
            assert "tx-checksumming: off" in features and "generic-receive-offload: off" in features, name
        assert prefix not in subprocess.run(["ip", "-6", "-o", "addr"], capture_output=True, text=True).stdout
        for role in cross:
            assert host(role, "sysctl", "-n", "net.ipv6.conf.all.disable_ipv6").strip() == "1"
        assert host("router", "sysctl", "-n", "net.ipv4.ip_forward").strip() == "0"
        # Static neighbours both ways and one route to the other side, via the router.
        for role, end in topomod._left_hosts(t) + topomod._right_hosts(t):
            router_end = t.router_left if end.ip.startswith("10.200.1.") else t.router_right
            far = "10.200.2.0/24" if router_end is t.router_left else "10.200.1.0/24"
            assert f"{router_end.ip} dev {end.interface} lladdr {router_end.mac} PERMANENT" in host(role, "ip", "neigh")
            assert f"{end.ip} dev {router_end.interface} lladdr {end.mac} PERMANENT" in host("router", "ip", "neigh")
            assert f"{far} via {router_end.ip} dev {end.interface}" in host(role, "ip", "route")
    finally:
        assert destroy_topology(t) == []
    assert_gone(prefix)


@needs_root
@pytest.mark.parametrize(("fail_at_link", "error"), [(2, KeyboardInterrupt), (7, RuntimeError)])
def test_a_dumbbell_failing_mid_build_leaves_nothing(monkeypatch, fail_at_link, error):
    from mininet.net import Mininet

    real_add_link, created, prefix = Mininet.addLink, [], topomod.new_prefix()

    def failing_add_link(net, *args, **kwargs):
        if len(created) + 1 == fail_at_link:
            assert list_leftovers(prefix)  # hosts (and after the left side, a started bridge) exist
            raise error("injected")
        created.append(real_add_link(net, *args, **kwargs))
        return created[-1]

    monkeypatch.setattr(Mininet, "addLink", failing_add_link)
    with pytest.raises(KeyboardInterrupt if error is KeyboardInterrupt else TopologyError, match="injected"):
        create_topology(prefix, cross_pairs=2)
    assert len(created) == fail_at_link - 1
    assert_gone(prefix)


@needs_root
@pytest.mark.parametrize("cross_pairs", [0, 2])
def test_exception_inside_the_with_block_cleans_up_and_restores_handlers(cross_pairs):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="boom"):
        with topology(cross_pairs=cross_pairs) as t:
            namespaces = {netns_of(pid) for pid in t.pids.values()}
            assert list_leftovers(t.prefix)
            raise RuntimeError("boom")
    assert_gone(t.prefix, namespaces)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("cross_pairs", [0, 2])
def test_signal_to_a_process_inside_the_with_block_cleans_up(sig, cross_pairs):
    proc = spawn(HOLDER, cross_pairs)
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
@pytest.mark.parametrize("cross_pairs", [0, 2])
def test_two_runs_at_once_in_two_processes_do_not_interfere(cross_pairs):
    code = f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_mininet_topology import udp_roundtrip
        from testbed.emulator.mininet_topology import enable_kernel_forwarding, topology
        with topology(cross_pairs={cross_pairs}) as t:
            print(t.prefix, "READY", flush=True)
            sys.stdin.readline()  # both topologies exist now
            enable_kernel_forwarding(t)
            print(udp_roundtrip(t, "hi-" + t.prefix), flush=True)
            for i in range(1, {cross_pairs} + 1):
                print(udp_roundtrip(t, f"x{{i}}-" + t.prefix, src=f"cross-sender-{{i}}", dst=f"cross-receiver-{{i}}"),
                      flush=True)
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
        assert out.split("\n")[:-1] == [f"GOT hi-{prefix} 10.200.1.1",
                                        *(f"GOT x{i}-{prefix} 10.200.1.{10 + i}" for i in range(1, cross_pairs + 1))]
        assert_gone(prefix)


@needs_root
@pytest.mark.parametrize(("via", "cross_pairs"), [("function", 0), ("cli", 0), ("function", 2)])
def test_cleanup_prefix_removes_the_leftovers_of_a_sigkilled_run(via, cross_pairs, capsys):
    proc = spawn(HOLDER, cross_pairs)
    try:
        prefix = read_ready(proc)
        proc.kill()  # no chance to clean up (Mininet's shells exit with their pty; the hosts' anchors live on)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = list_leftovers(prefix)
    assert sum(f"{topomod.ANCHOR_MARK}{prefix}" in item for item in left) == 3 + 2 * cross_pairs
    bridges = {f"bridge {prefix}bl", f"bridge {prefix}br"}
    assert bridges <= set(left) if cross_pairs else not any(item.startswith("bridge") for item in left)
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
