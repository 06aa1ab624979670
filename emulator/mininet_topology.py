"""Run topology of the `mininet` backend: sender -- router -- receiver Mininet hosts, optionally with cross traffic.

Without cross traffic (``cross_pairs=0``) two direct links join the three hosts (no switch)::

    <p>s (sender)                 <p>r (router)                      <p>d (receiver)
    [<p>s-0] 10.200.1.1/24 -- 10.200.1.2/24 [<p>r-l]
                                   [<p>r-r] 10.200.2.1/24 -- 10.200.2.2/24 [<p>d-0]

With ``cross_pairs=N`` (1..4) it is a dumbbell: one switch (bridge) per side in the root namespace, every
host of a side attached to it, the router the only path between the sides; cross sender i is ``<p>x<i>`` at
10.200.1.(10+i), cross receiver i ``<p>y<i>`` at 10.200.2.(10+i)::

    <p>s  [<p>s-0] 10.200.1.1  --[<p>bls]--+                 +--[<p>brd]-- 10.200.2.2  [<p>d-0] <p>d
    <p>x1 [<p>x-1] 10.200.1.11 --[<p>bl1]--+                 +--[<p>br1]-- 10.200.2.11 [<p>y-1] <p>y1
     ...                                   | <p>bl     <p>br |                  ...
    <p>xN [<p>x-N] 10.200.1.1N --[<p>blN]--+                 +--[<p>brN]-- 10.200.2.1N [<p>y-N] <p>yN
                                           |                 |
                                       [<p>blr]          [<p>brr]
                                           |                 |
                                       [<p>r-l]   <p>r   [<p>r-r]
                                      10.200.1.2        10.200.2.1

``<p>`` is a run-specific prefix (``tb`` + 6 hex digits by default). Every host, interface and switch name
starts with it, so two runs never collide and `cleanup_prefix` finds the leftovers of a killed run. Names stay
within IFNAMSIZ (15 characters): prefixes are limited to 12 characters, suffixes to 3.

Each host is a `mininet.node.Host`: a ``bash ... mininet:<name>`` shell started by ``mnexec`` in its own
network (and mount) namespace. Mininet creates the hosts and the veth pairs (directly inside the hosts'
namespaces; only switch ports appear in the root namespace); everything else is configured here with
argument lists run through ``mnexec -a <shell pid>``. `Mininet.init` is skipped: it raises machine-wide
sysctls and rlimits, and two runs must not change anything outside their own hosts and switches.

Switches are Mininet `LinuxBridge` bridges (STP off, no controller) unless Open vSwitch is usable (``ovs-vsctl
show`` answers and the openvswitch kernel module is loaded or loadable): then `OVSBridge` in standalone
mode. `Topology.switch` says which, and why. Each Linux bridge has a static forwarding entry per host MAC,
so a one-way flow is never flooded to the other hosts on its side. (Open vSwitch learns MACs instead: frames
to a host that never sends, such as a cross receiver, are flooded to its side's hosts, whose kernels drop
them; extra copies, not extra deliveries.)

Bridge netfilter. With ``net.bridge.bridge-nf-call-iptables = 1`` (br_netfilter; the root namespace's
value applies, as the bridges live there) bridged IPv4 frames traverse the root namespace's IPv4 netfilter
hooks. br_netfilter then drops frames with a malformed IPv4 header, and any iptables/nftables rule of the
root namespace (a FORWARD policy of DROP, NAT, conntrack with defragmentation) would apply to the cross
and shaped traffic. With no rules and no conntrack user in the root namespace (as on the development
machine: no iptables binary, no table loaded, an empty conntrack table) frames pass unchanged. This module
does not change that machine-wide sysctl; set it to 0 by hand on a machine with such rules.

Forwarding model. The hosts on the left have one route to the right /24, via the router's left address, and
the hosts on the right one back, via the router's right address; every neighbour entry is static (``nud
permanent``, MACs derived from the prefix), so no ARP crosses the links and the MACs are known to whoever
forwards. The router has ``net.ipv4.ip_forward = 0``: its kernel drops transit packets and the userspace
shaper (AF_PACKET on ``router_left`` / ``router_right``) forwards, rewriting the Ethernet header with
`Topology.shaper_macs`. `enable_kernel_forwarding` lets the router's kernel forward instead (tests).

IPv6 is off in all hosts, on the switch ports and on the bridges, before any of them goes up (no router
solicitations, DAD or MLD on the links). Offloads (checksum incl. ``tx``, SG, TSO, GSO, GRO) are off on all
host interfaces, switch ports and bridges when ethtool is present: frames read by AF_PACKET must carry
complete checksums and MTU-sized segments.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from testbed.emulator.cross_traffic import CROSS_ROLE_PREFIX, MAX_CROSS_FLOWS, cross_roles

__all__ = [
    "ROLES",
    "CommandError",
    "HostAddress",
    "NeedsRootError",
    "Topology",
    "TopologyError",
    "cleanup_prefix",
    "create_topology",
    "destroy_topology",
    "enable_kernel_forwarding",
    "list_leftovers",
    "new_prefix",
    "switch_choice",
    "topology",
]

ROLES = ("sender", "router", "receiver")  # cross_pairs adds "cross-sender-<i>" and "cross-receiver-<i>"
DEFAULT_PREFIX_START = "tb"
IFNAMSIZ = 15  # usable characters of an interface name (16 bytes with the NUL)
_HOST_SUFFIX = {"sender": "s", "router": "r", "receiver": "d"}
# Every name suffix (host interfaces, bridges, bridge ports); "1" stands for a cross pair's one-digit index.
_NAME_SUFFIXES = ("s-0", "r-l", "r-r", "d-0", "x-1", "y-1", "bl", "bls", "blr", "bl1", "br", "brr", "brd", "br1")
MAX_PREFIX_LEN = IFNAMSIZ - max(len(s) for s in _NAME_SUFFIXES)  # 12
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
SHELL_MARK = "mininet:"  # Mininet starts each host and switch shell as `bash ... -is mininet:<name>`
ANCHOR_MARK = "testbed-host:"  # argument of the anchor process kept in each host (see _start_anchor)
_ANCHOR_CODE = "import signal; signal.pause()"
NEEDS_ROOT_MESSAGE = "needs root: run as root or use the Vagrant VM (see README)"
_CMD_TIMEOUT_S = 20.0
_KILL_GRACE_S = 1.0
_LEFT_SUBNET, _RIGHT_SUBNET, _PREFIXLEN = "10.200.1.0/24", "10.200.2.0/24", 24
_OFFLOADS = ("rx", "off", "tx", "off", "sg", "off", "tso", "off", "gso", "off", "gro", "off")
_OVS_VSCTL = ("ovs-vsctl", "--timeout=2")


@dataclass
class _Live:
    """What this process holds of one topology (kept out of the picklable Topology)."""

    net: Any  # mininet.net.Mininet
    anchors: list[subprocess.Popen] = field(default_factory=list)


_NETS: dict[str, _Live] = {}  # prefix -> live objects of the topologies built by this process


class TopologyError(RuntimeError):
    """Any failure of the topology layer."""


class NeedsRootError(TopologyError, PermissionError):
    """Creating hosts needs root."""

    def __init__(self, what: str = "Mininet hosts") -> None:
        super().__init__(f"{NEEDS_ROOT_MESSAGE} ({what})")


class CommandError(TopologyError):
    """An external command (ip, ethtool, sysctl) failed; carries the argument list and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {' '.join(self.argv)}\n  stderr: {self.stderr}")


@dataclass(frozen=True)
class HostAddress:
    """One interface of one host: host name, interface name, IPv4 address, MAC."""

    name: str
    interface: str
    ip: str
    mac: str


@dataclass(frozen=True)
class Topology:
    """Names, addresses and host shell pids of one run topology (plain, picklable)."""

    prefix: str
    sender: HostAddress
    receiver: HostAddress
    router_left: HostAddress  # router's interface towards the sender
    router_right: HostAddress  # router's interface towards the receiver
    pids: dict[str, int]  # role -> pid of the Mininet host's shell (holds its network namespace)
    offloads: str  # "disabled", "skipped: ethtool not found" or "partial: <errors>"
    cross_senders: tuple[HostAddress, ...] = ()  # role "cross-sender-<i>" is cross_senders[i - 1]
    cross_receivers: tuple[HostAddress, ...] = ()  # role "cross-receiver-<i>" is cross_receivers[i - 1]
    switch: str = "none"  # "none" (direct links), "ovs" or "linux-bridge (Open vSwitch unusable: <why>)"

    def exec_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        """Argument list running `argv` inside the host of `role` (its network and mount namespace)."""
        if role not in self.pids:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(self.pids)}")
        return ["mnexec", "-a", str(self.pids[role]), *[str(a) for a in argv]]

    def shaper_macs(self) -> dict[str, tuple[str, dict[str, str]]]:
        """Per direction, the source MAC shaped frames leave the router with and {destination IPv4: MAC}.

        "forward" (left to right) leaves by ``router_right`` towards the receiver and the cross receivers,
        "reverse" by ``router_left`` towards the sender and the cross senders. For the shaper's
        ``rewrite_macs``: it looks the destination MAC up by the frame's destination address.
        """
        return {"forward": (self.router_right.mac, {e.ip: e.mac for e in (self.receiver, *self.cross_receivers)}),
                "reverse": (self.router_left.mac, {e.ip: e.mac for e in (self.sender, *self.cross_senders)})}


@dataclass(frozen=True)
class _SwitchPlan:
    """One side of the dumbbell: the switch, and per attached host interface its port in the root namespace."""

    name: str
    mac: str
    ports: tuple[tuple[str, HostAddress, str, str], ...]  # (role, host interface, port name, port MAC)


# --------------------------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run an argument list (never a shell string); raise CommandError on failure when check."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_CMD_TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"executable not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {_CMD_TIMEOUT_S} s") from exc
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def _in_host(pid: int | None, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run `argv` inside the namespaces of host shell `pid` (None: the root namespace) and wait for it."""
    return _run(argv if pid is None else ["mnexec", "-a", str(pid), *argv], check=check)


def _failure(argv: Sequence[str]) -> str | None:
    """None when `argv` succeeds, else the first line of why not."""
    try:
        _run(argv)
    except CommandError as exc:
        return (exc.stderr.splitlines() or [f"exit status {exc.returncode}"])[0]
    return None


def _require_root_and_mininet() -> None:
    if os.geteuid() != 0:
        raise NeedsRootError()
    if shutil.which("mnexec") is None:
        raise TopologyError("Mininet's `mnexec` helper is not on PATH: install the distribution's `mininet` "
                            "package (apt install mininet), or use the Vagrant VM")
    try:
        import mininet.net  # noqa: F401
    except ImportError as exc:
        raise TopologyError(f"the Python package `mininet` cannot be imported ({exc}): "
                            "install it into the venv (pip install mininet)") from exc


def _validate_prefix(prefix: str) -> None:
    if not prefix or len(prefix) > MAX_PREFIX_LEN or not _PREFIX_RE.match(prefix):
        raise ValueError(f"invalid topology prefix {prefix!r}: 1..{MAX_PREFIX_LEN} characters of [A-Za-z0-9_.], "
                         f"so that interface names fit IFNAMSIZ ({IFNAMSIZ})")


def _validate_cross_pairs(cross_pairs: int) -> None:
    if not isinstance(cross_pairs, int) or not 0 <= cross_pairs <= MAX_CROSS_FLOWS:
        raise ValueError(f"cross_pairs must be an integer in 0..{MAX_CROSS_FLOWS}, got {cross_pairs!r}")


def _mac(prefix: str, index: int) -> str:
    """Locally administered unicast MAC derived from the prefix (stable, distinct per prefix)."""
    digest = hashlib.sha256(prefix.encode()).digest()
    return ":".join(f"{o:02x}" for o in (0x02, digest[0], digest[1], digest[2], digest[3], index))


def _plan(prefix: str, cross_pairs: int = 0) -> Topology:
    """Names and addresses of a topology with this prefix (no pids yet)."""
    _validate_prefix(prefix)
    _validate_cross_pairs(cross_pairs)
    s, r, d = (prefix + _HOST_SUFFIX[role] for role in ROLES)
    pairs = range(1, cross_pairs + 1)
    return Topology(
        prefix,
        sender=HostAddress(s, f"{s}-0", "10.200.1.1", _mac(prefix, 1)),
        receiver=HostAddress(d, f"{d}-0", "10.200.2.2", _mac(prefix, 4)),
        router_left=HostAddress(r, f"{r}-l", "10.200.1.2", _mac(prefix, 2)),
        router_right=HostAddress(r, f"{r}-r", "10.200.2.1", _mac(prefix, 3)),
        pids={}, offloads="not attempted",
        cross_senders=tuple(HostAddress(f"{prefix}x{i}", f"{prefix}x-{i}", f"10.200.1.{10 + i}",
                                        _mac(prefix, 0x10 + i)) for i in pairs),
        cross_receivers=tuple(HostAddress(f"{prefix}y{i}", f"{prefix}y-{i}", f"10.200.2.{10 + i}",
                                          _mac(prefix, 0x20 + i)) for i in pairs))


def _left_hosts(t: Topology) -> list[tuple[str, HostAddress]]:
    """(role, interface) of every host on the sender's side except the router."""
    return [("sender", t.sender), *((cross_roles(i)[0], e) for i, e in enumerate(t.cross_senders, 1))]


def _right_hosts(t: Topology) -> list[tuple[str, HostAddress]]:
    """(role, interface) of every host on the receiver's side except the router."""
    return [("receiver", t.receiver), *((cross_roles(i)[1], e) for i, e in enumerate(t.cross_receivers, 1))]


def _ends(t: Topology) -> list[tuple[str, HostAddress]]:
    """(role, interface) of every host interface; roles in the order the hosts are created."""
    left, right = _left_hosts(t), _right_hosts(t)
    return [left[0], ("router", t.router_left), ("router", t.router_right), right[0], *left[1:], *right[1:]]


def _switch_plans(t: Topology) -> tuple[_SwitchPlan, ...]:
    """The two switches of a dumbbell (none without cross pairs); port i+1 of a side is its i-th host."""
    if not t.cross_senders:
        return ()
    sides = []
    for name, base, attached in ((f"{t.prefix}bl", 0x30, [("router", t.router_left), *_left_hosts(t)]),
                                 (f"{t.prefix}br", 0x40, [("router", t.router_right), *_right_hosts(t)])):
        ports = tuple((role, end, name + _port_suffix(role), _mac(t.prefix, base + k))
                      for k, (role, end) in enumerate(attached, 1))
        sides.append(_SwitchPlan(name, _mac(t.prefix, base), ports))
    return tuple(sides)


def _port_suffix(role: str) -> str:
    """Last character of a switch port's name: the attached host's letter, or the cross pair's index."""
    return role.rsplit("-", 1)[1] if role.startswith(CROSS_ROLE_PREFIX) else _HOST_SUFFIX[role]


def _root_interfaces(t: Topology) -> list[str]:
    """Names of the bridges and bridge ports this topology has in the root namespace."""
    return [name for side in _switch_plans(t) for name in (side.name, *(port for _, _, port, _ in side.ports))]


def _ipv6_off_in_root(ifname: str) -> None:
    """IPv6 off on one of our root-namespace interfaces (its own sysctl; nothing machine-wide)."""
    with open(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6", "w") as f:
        f.write("1")


@contextmanager
def _quiet_mininet() -> Iterator[None]:
    """Mininet's own logger at 'error' for the duration; its previous levels are restored afterwards."""
    from mininet.log import lg

    saved = [(lg, lg.level), *((h, h.level) for h in lg.handlers)]
    lg.setLogLevel("error")
    try:
        yield
    finally:
        for obj, level in saved:
            obj.setLevel(level)


@functools.cache
def _mininet_classes() -> tuple[type, type, type]:
    """(network, Linux bridge, switch port) classes; defined on first use, as Mininet is imported lazily."""
    from mininet.link import Intf
    from mininet.net import Mininet
    from mininet.nodelib import LinuxBridge

    class RunNet(Mininet):
        inited = True  # skip Mininet.init(): it changes machine-wide sysctls and rlimits

    class QuietLinuxBridge(LinuxBridge):
        """A LinuxBridge (STP off) with IPv6 off before it goes up and a static FDB entry per host MAC.

        LinuxBridge.start would bring the bridge up straight after creating it: too early to turn IPv6 off.
        """

        @classmethod
        def setup(cls) -> None:
            # Replaces LinuxBridge.setup: that one exits the process without brctl, and warns about
            # bridge-nf-call-*tables = 1 (see the module docstring).
            if shutil.which("brctl") is None:  # LinuxBridge.stop deletes the bridge with it
                raise TopologyError("brctl not found: install bridge-utils (apt install bridge-utils)")

        def start(self, _controllers: list) -> None:
            _run(["ip", "link", "add", "name", self.name, "address", self.params["mac"], "type", "bridge",
                  "stp_state", "0"])
            _ipv6_off_in_root(self.name)
            for intf in self.intfList():
                if intf.link is None:  # "lo", Mininet's control interface of a root-namespace switch
                    continue
                host_end = intf.link.intf1 if intf.link.intf2 is intf else intf.link.intf2
                _run(["ip", "link", "set", "dev", intf.name, "master", self.name])
                _run(["bridge", "fdb", "replace", host_end.mac, "dev", intf.name, "master", "static"])
            _run(["ip", "link", "set", "dev", self.name, "up"])

    class RootPort(Intf):
        """A switch port in the root namespace: IPv6 off before Mininet brings it up."""

        def config(self, **params: Any) -> dict:
            _ipv6_off_in_root(self.name)
            return super().config(**params)

    return RunNet, QuietLinuxBridge, RootPort


def switch_choice() -> str:
    """What a dumbbell's switches would be here, and why: "ovs" or "linux-bridge (Open vSwitch unusable: ...)"."""
    return _choose_switch()[0]


def _choose_switch() -> tuple[str, type, dict[str, Any]]:
    """(Topology.switch, class, parameters) of the dumbbell's switches: OVS where usable, else LinuxBridge."""
    problems = []
    if shutil.which(_OVS_VSCTL[0]) is None:
        problems.append("ovs-vsctl not found")
    elif (why := _failure([*_OVS_VSCTL, "show"])) is not None:
        problems.append(f"`ovs-vsctl show` failed: {why}")
    if not os.path.isdir("/sys/module/openvswitch") and _failure(["modprobe", "-n", "-q", "openvswitch"]) is not None:
        problems.append("kernel module openvswitch neither loaded nor loadable")
    if problems:
        return f"linux-bridge (Open vSwitch unusable: {'; '.join(problems)})", _mininet_classes()[1], {"stp": False}
    from mininet.node import OVSBridge

    return "ovs", OVSBridge, {"failMode": "standalone"}


# ------------------------------------------------------------------------------- processes and netns


def _netns_id(pid: int | str) -> tuple[int, int] | None:
    """(device, inode) of the network namespace of `pid`; None once it has exited (zombies included)."""
    try:
        st = os.stat(f"/proc/{pid}/ns/net")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _cmdline(pid: int | str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _netns_interfaces(pid: int) -> list[str]:
    """Interface names of the network namespace `pid` lives in (its /proc/<pid>/net/dev)."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return []
    return [line.split(":", 1)[0].strip() for line in lines if ":" in line]


def _prefix_processes(prefix: str) -> dict[int, str]:
    """pid -> command line of every process in a non-root namespace with a `prefix` interface, and of
    every host shell and anchor named with `prefix` (even if its namespace has lost its interfaces)."""
    own = os.getpid()
    root_ns = {_netns_id(1), _netns_id(own)}
    by_ns: dict[tuple[int, int], list[int]] = {}
    found: dict[int, str] = {}
    for pid in _all_pids():
        if pid == own:
            continue
        ns = _netns_id(pid)
        if ns is None:
            continue
        cmdline = _cmdline(pid)
        if any(arg.startswith((SHELL_MARK + prefix, ANCHOR_MARK + prefix)) for arg in cmdline):
            found[pid] = " ".join(cmdline)
        if ns not in root_ns:
            by_ns.setdefault(ns, []).append(pid)
    for pids in by_ns.values():
        if any(name.startswith(prefix) for name in _netns_interfaces(pids[0])):
            found.update({pid: " ".join(_cmdline(pid)) for pid in pids})
    return found


def _kill(pids: Sequence[int], grace_s: float = _KILL_GRACE_S) -> None:
    """SIGTERM, wait up to `grace_s` for them to exit, then SIGKILL whatever is left."""
    alive = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _netns_id(pid) is not None]
            if alive:
                time.sleep(0.02)


def _root_links(kind: str | None = None) -> list[str]:
    argv = ["ip", "-o", "link", "show"] + (["type", kind] if kind else [])
    names = []
    for line in _run(argv, check=False).stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _named_netns() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _ovs_bridges() -> list[str]:
    """Open vSwitch bridges (none when ovs-vsctl is missing or its database does not answer)."""
    if shutil.which(_OVS_VSCTL[0]) is None:
        return []
    proc = _run([*_OVS_VSCTL, "list-br"], check=False)
    return proc.stdout.split() if proc.returncode == 0 else []


# ----------------------------------------------------------------------------------------- public API


def new_prefix(prefix_start: str = DEFAULT_PREFIX_START) -> str:
    """A fresh run prefix: `prefix_start` + 6 random hex digits that nothing on this machine carries yet."""
    while True:
        prefix = prefix_start + secrets.token_hex(3)
        _validate_prefix(prefix)
        if not list_leftovers(prefix):
            return prefix


def list_leftovers(prefix: str) -> list[str]:
    """Every process, root-namespace interface, bridge and named netns still carrying `prefix`."""
    if not prefix:
        raise ValueError("prefix must not be empty")
    found = [f"process {pid} ({cmd})" for pid, cmd in sorted(_prefix_processes(prefix).items())]
    bridges = set(_root_links("bridge"))
    found += [_link_label(name, bridges) for name in _root_links() if name.startswith(prefix)]
    found += [f"netns {name}" for name in _named_netns() if name.startswith(prefix)]
    return found


def _link_label(name: str, bridges: set[str]) -> str:
    """"bridge <name>" or "interface <name>" for a root-namespace link."""
    return f"{'bridge' if name in bridges else 'interface'} {name}"


def create_topology(prefix: str | None = None, cross_pairs: int = 0) -> Topology:
    """Build the hosts (and, with cross pairs, the switches), links, addresses, static neighbours and routes.

    The router does no kernel forwarding (ip_forward=0): a userspace shaper forwards frames with AF_PACKET.
    On any failure (KeyboardInterrupt included) everything created so far is removed before re-raising.
    """
    _validate_cross_pairs(cross_pairs)
    _require_root_and_mininet()
    if prefix is None:
        prefix = new_prefix()
    elif prefix in _NETS or list_leftovers(prefix):
        raise TopologyError(f"prefix {prefix!r} is in use (see `testbed net cleanup --prefix {prefix}`)")
    switch, switch_cls, switch_params = _choose_switch() if cross_pairs else ("none", None, {})
    t = replace(_plan(prefix, cross_pairs), switch=switch)  # t.pids fills in as the hosts come up
    from mininet.node import Host

    run_net, _, root_port = _mininet_classes()
    try:
        with _quiet_mininet():
            net = run_net(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False,
                          waitConnected=False)
            live = _NETS[prefix] = _Live(net)
            hosts = {}
            for role, name in {role: end.name for role, end in _ends(t)}.items():
                hosts[role] = net.addHost(name, cls=Host, ip=None)
                t.pids[role] = hosts[role].pid
                # Before any interface exists in the host: none of them ever sends IPv6.
                _in_host(t.pids[role], ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                                        "net.ipv6.conf.default.disable_ipv6=1"])
                live.anchors.append(_start_anchor(t.pids[role], name))
            if not cross_pairs:
                for a, b, ra, rb in ((t.sender, t.router_left, "sender", "router"),
                                     (t.router_right, t.receiver, "router", "receiver")):
                    net.addLink(hosts[ra], hosts[rb], intfName1=a.interface, intfName2=b.interface,
                                addr1=a.mac, addr2=b.mac)
            for side in _switch_plans(t):  # none without cross pairs
                sw = net.addSwitch(side.name, cls=switch_cls, dpid=side.mac.replace(":", ""), mac=side.mac,
                                   **switch_params)
                for role, end, port, port_mac in side.ports:
                    net.addLink(hosts[role], sw, intfName1=end.interface, intfName2=port, addr1=end.mac,
                                addr2=port_mac, cls2=root_port)
                sw.start([])
                if switch == "ovs":  # ovs-vswitchd creates the bridge device: IPv6 off once it exists
                    _ipv6_off_in_root(side.name)
        offloads = _configure(t)
        for anchor, pid in zip(live.anchors, t.pids.values()):
            _wait_joined(anchor, pid)
    except BaseException as exc:
        destroy_topology(t)
        if isinstance(exc, Exception) and not isinstance(exc, TopologyError):
            raise TopologyError(f"building Mininet hosts for {prefix!r} failed: {exc}") from exc
        raise
    return replace(t, pids=dict(t.pids), offloads=offloads)


def _start_anchor(shell_pid: int, name: str) -> subprocess.Popen:
    """A do-nothing process in the host whose command line names it.

    Mininet's shells exit when the process holding their pty dies (SIGKILL of a run): without an anchor
    a host namespace could then live on through some process started in it, with nothing left that
    carries the prefix, out of `cleanup_prefix`'s reach.
    """
    return subprocess.Popen(["mnexec", "-da", str(shell_pid), sys.executable, "-S", "-c", _ANCHOR_CODE,
                             ANCHOR_MARK + name], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_joined(anchor: subprocess.Popen, shell_pid: int, timeout_s: float = 10.0) -> None:
    """Wait until the anchor has entered the host (mnexec joins the namespace asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while _netns_id(anchor.pid) != _netns_id(shell_pid):
        if anchor.poll() is not None or time.monotonic() > deadline:
            raise TopologyError(f"the anchor process of host shell {shell_pid} did not start "
                                f"(exit status {anchor.poll()})")
        time.sleep(0.005)


def _configure(t: Topology) -> str:
    """Addresses, sysctls, offloads, links up, static neighbours and routes; returns the offload outcome."""
    pids, ends = t.pids, _ends(t)
    _in_host(pids["router"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    for role, end in ends:
        _in_host(pids[role], ["ip", "addr", "add", f"{end.ip}/{_PREFIXLEN}", "dev", end.interface])
    for pid in pids.values():
        _in_host(pid, ["ip", "link", "set", "lo", "up"])
    host_interfaces = [(pids[role], end.interface) for role, end in ends]
    offloads = _disable_offloads(host_interfaces + [(None, name) for name in _root_interfaces(t)])
    for role, end in ends:
        _in_host(pids[role], ["ip", "link", "set", end.interface, "up"])
    for router_end, side, far_subnet in ((t.router_left, _left_hosts(t), _RIGHT_SUBNET),
                                         (t.router_right, _right_hosts(t), _LEFT_SUBNET)):
        for role, end in side:
            # Static neighbours: no ARP on the links; the shaper knows the MACs.
            _in_host(pids[role], ["ip", "neigh", "replace", router_end.ip, "lladdr", router_end.mac,
                                  "dev", end.interface, "nud", "permanent"])
            _in_host(pids["router"], ["ip", "neigh", "replace", end.ip, "lladdr", end.mac,
                                      "dev", router_end.interface, "nud", "permanent"])
            # The only way to the other side is through the router.
            _in_host(pids[role], ["ip", "route", "add", far_subnet, "via", router_end.ip, "dev", end.interface])
    # The switch ports too (they carry the traffic), not the bridges: nothing is sent through their own
    # devices, whose carrier linkwatch reports up to a second later.
    _wait_up(host_interfaces + [(None, port) for side in _switch_plans(t) for _, _, port, _ in side.ports])
    return offloads


def _disable_offloads(interfaces: list[tuple[int | None, str]]) -> str:
    """Offloads off on (host shell pid, or None for the root namespace, interface name) pairs."""
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return "skipped: ethtool not found"
    errors = []
    for pid, ifname in interfaces:
        argv = [ethtool, "-K", ifname, *_OFFLOADS]
        proc = _in_host(pid, argv, check=False)
        if proc.returncode != 0:
            errors.append(f"{ifname}: {proc.stderr.strip()}")
    return "disabled" if not errors else "partial: " + "; ".join(errors)


def _wait_up(interfaces: list[tuple[int | None, str]], timeout_s: float = 5.0) -> None:
    """Wait until the kernel's linkwatch reports every veth end UP (qdiscs are attached then).

    Takes (host shell pid, or None for the root namespace, interface name) pairs.
    """
    deadline = time.monotonic() + timeout_s
    pending = list(interfaces)
    while pending:
        pending = [(pid, ifname) for pid, ifname in pending if "state UP" not in _link_show(pid, ifname)]
        if pending and time.monotonic() > deadline:
            raise TopologyError(f"interfaces not UP after {timeout_s} s: {[ifname for _, ifname in pending]}")
        if pending:
            time.sleep(0.02)


def _link_show(pid: int | None, ifname: str) -> str:
    argv = ["ip", "-o", "link", "show", "dev", ifname]
    return _in_host(pid, argv, check=False).stdout


def enable_kernel_forwarding(t: Topology) -> None:
    """Test helper: let the router's kernel forward IPv4 (instead of the userspace shaper)."""
    _in_host(t.pids["router"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def destroy_topology(t: Topology) -> list[str]:
    """Kill every process in the hosts, stop Mininet, remove what is left; returns what could not be removed.

    Processes started with `Topology.exec_argv` are not children of the host shells: they are found by
    their network namespace and get SIGTERM, then SIGKILL after 1 s. Idempotent; also removes the switches
    and the rest of a partially built topology.
    """
    shells = set(t.pids.values())
    namespaces = {ns for ns in (_netns_id(pid) for pid in shells) if ns is not None}
    _kill(_processes_in(namespaces, exclude=shells))
    live = _NETS.pop(t.prefix, None)
    if live is not None:
        for anchor in live.anchors:  # killed above with everything else in the hosts, unless it never got in
            if anchor.poll() is None:
                anchor.kill()
            anchor.wait()
        try:
            with _quiet_mininet():
                live.net.stop()
        except Exception:  # noqa: BLE001 -- a dead shell breaks Mininet's stop; the sweeps below still clean
            for node in (*live.net.hosts, *live.net.switches):
                if node.shell is not None and node.shell.poll() is None:
                    node.shell.kill()
                    node.shell.wait()
    # Whatever joined a host while it was being stopped (or a shell Mininet could not stop) keeps its
    # namespace alive without any prefixed interface left in it: sweep the namespaces once more.
    _kill(_processes_in(namespaces))
    cleanup_prefix(t.prefix)
    stuck = [f"process {pid} ({' '.join(_cmdline(pid))})" for pid in _processes_in(namespaces)]
    return stuck + list_leftovers(t.prefix)


def _processes_in(namespaces: set[tuple[int, int]], exclude: set[int] = frozenset()) -> list[int]:
    """Pids (other than ours and `exclude`) living in one of these network namespaces."""
    if not namespaces:
        return []
    skip = {os.getpid(), *exclude}
    return [pid for pid in _all_pids() if pid not in skip and _netns_id(pid) in namespaces]


def cleanup_prefix(prefix_start: str = DEFAULT_PREFIX_START) -> list[str]:
    """Remove the leftovers of killed runs whose prefix starts with `prefix_start`; returns what was removed.

    Kills the processes in their hosts and the host and switch shells, deletes root-namespace veths, bridges
    (Open vSwitch ones too) and named namespaces carrying the prefix. Backs ``testbed net cleanup``; with the
    default ``"tb"`` this also removes the topologies of runs still in progress on this machine: pass one
    run's prefix to target it.
    """
    if not prefix_start:
        raise ValueError("prefix_start must not be empty")
    if os.geteuid() != 0:
        raise NeedsRootError("cleaning up Mininet hosts")
    processes = _prefix_processes(prefix_start)
    # Listed before the kill: a switch port vanishes by itself once its host's namespace is gone.
    bridges = set(_root_links("bridge"))
    links = [name for name in _root_links() if name.startswith(prefix_start)]
    _kill(sorted(processes))
    removed = [f"process {pid} ({cmd})" for pid, cmd in sorted(processes.items())]
    for name in _ovs_bridges():
        if name.startswith(prefix_start):
            _run([*_OVS_VSCTL, "--if-exists", "del-br", name], check=False)
    for name in links:
        _run(["ip", "link", "del", name], check=False)
    remaining = set(_root_links())
    removed += [_link_label(name, bridges) for name in links if name not in remaining]
    for name in _named_netns():
        if name.startswith(prefix_start) and _run(["ip", "netns", "del", name], check=False).returncode == 0:
            removed.append(f"netns {name}")
    return removed


# ---------------------------------------------------------------------------------- context manager


@contextmanager
def topology(prefix: str | None = None, cross_pairs: int = 0) -> Iterator[Topology]:
    """Create a topology and always destroy it: normal exit, exception, SIGINT or SIGTERM.

    In the main thread, SIGINT raises KeyboardInterrupt and SIGTERM raises SystemExit(143) inside the
    with-block; a signal arriving while the topology is being created or destroyed is deferred until
    that is done, then raised. Previous handlers are restored on exit. In other threads no handlers are
    installed (Python only allows that in the main thread); cleanup still runs on exceptions.
    """
    in_main = threading.current_thread() is threading.main_thread()
    state: dict[str, Any] = {"armed": False, "pending": None}

    def _handler(signum: int, _frame: object) -> None:
        if state["armed"]:
            state["armed"] = False
            _raise_for(signum)
        if state["pending"] is None:
            state["pending"] = signum

    previous: dict[int, Any] = {}
    if in_main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _handler)
    try:
        topo = create_topology(prefix, cross_pairs)
        try:
            if state["pending"] is not None:
                _raise_for(state["pending"])
            state["armed"] = True
            yield topo
        finally:
            state["armed"] = False
            destroy_topology(topo)
    finally:
        if in_main:
            for sig, old in previous.items():
                signal.signal(sig, old)
    if state["pending"] is not None:
        _raise_for(state["pending"])


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)
