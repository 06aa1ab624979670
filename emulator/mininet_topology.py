"""Run topology of the `mininet` backend: three real Mininet hosts joined by two direct links (no switch).

::

    <p>s (sender)                 <p>r (router)                      <p>d (receiver)
    [<p>s-0] 10.200.1.1/30 -- 10.200.1.2/30 [<p>r-l]
                                   [<p>r-r] 10.200.2.1/30 -- 10.200.2.2/30 [<p>d-0]

``<p>`` is a run-specific prefix (``tb`` + 6 hex digits by default). Every host and interface name starts
with it, so two runs never collide and `cleanup_prefix` finds the leftovers of a killed run. Interface
names stay within IFNAMSIZ (15 characters): prefixes are limited to 12 characters.

Each host is a `mininet.node.Host`: a ``bash ... mininet:<name>`` shell started by ``mnexec`` in its own
network (and mount) namespace. Mininet creates the hosts and the veth pairs (directly inside the hosts'
namespaces, nothing appears in the root namespace); everything else is configured here with argument lists
run through ``mnexec -a <shell pid>``. `Mininet.init` is skipped: it raises machine-wide sysctls and rlimits,
and two runs must not change anything outside their own hosts.

Forwarding model. The sender's only route to the receiver's /30 goes via the router's left address and
the receiver's only route back via the router's right address; every neighbour entry is static (``nud
permanent``, MACs derived from the prefix), so no ARP crosses the links and the MACs are known to whoever
forwards. The router has ``net.ipv4.ip_forward = 0``: its kernel drops transit packets and the userspace
shaper (AF_PACKET on ``router_left`` / ``router_right``) forwards, rewriting the Ethernet header with
`Topology.shaper_macs`. `enable_kernel_forwarding` lets the router's kernel forward instead (tests).

IPv6 is off in all hosts (no router solicitations, DAD or MLD on the links). Offloads (checksum incl.
``tx``, SG, TSO, GSO, GRO) are off on all four interfaces when ethtool is present: frames read by
AF_PACKET must carry complete checksums and MTU-sized segments.
"""

from __future__ import annotations

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
from dataclasses import dataclass, field
from typing import Any

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
    "topology",
]

ROLES = ("sender", "router", "receiver")
DEFAULT_PREFIX_START = "tb"
IFNAMSIZ = 15  # usable characters of an interface name (16 bytes with the NUL)
_HOST_SUFFIX = {"sender": "s", "router": "r", "receiver": "d"}
_IF_SUFFIXES = ("s-0", "r-l", "r-r", "d-0")
MAX_PREFIX_LEN = IFNAMSIZ - max(len(s) for s in _IF_SUFFIXES)  # 12
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
SHELL_MARK = "mininet:"  # Mininet starts each host shell as `bash ... -is mininet:<host name>`
ANCHOR_MARK = "testbed-host:"  # argument of the anchor process kept in each host (see _start_anchor)
_ANCHOR_CODE = "import signal; signal.pause()"
NEEDS_ROOT_MESSAGE = "needs root: run as root or use the Vagrant VM (see README)"
_CMD_TIMEOUT_S = 20.0
_KILL_GRACE_S = 1.0
_LEFT_SUBNET, _RIGHT_SUBNET, _PREFIXLEN = "10.200.1.0/30", "10.200.2.0/30", 30



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
    """Names, addresses and host shell pids of one sender -- router -- receiver topology (plain, picklable)."""

    prefix: str
    sender: HostAddress
    receiver: HostAddress
    router_left: HostAddress  # router's interface towards the sender
    router_right: HostAddress  # router's interface towards the receiver
    pids: dict[str, int]  # role -> pid of the Mininet host's shell (holds its network namespace)
    offloads: str  # "disabled", "skipped: ethtool not found" or "partial: <errors>"

    def exec_argv(self, role: str, argv: Sequence[str]) -> list[str]:
        """Argument list running `argv` inside the host of `role` (its network and mount namespace)."""
        if role not in self.pids:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        return ["mnexec", "-a", str(self.pids[role]), *[str(a) for a in argv]]

    def shaper_macs(self) -> dict[str, tuple[str, str]]:
        """(destination, source) MACs of shaped frames per direction, for the shaper's ``rewrite_macs``."""
        return {"forward": (self.receiver.mac, self.router_right.mac),
                "reverse": (self.sender.mac, self.router_left.mac)}


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


def _in_host(pid: int, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    """Run `argv` inside the namespaces of host shell `pid` and wait for it."""
    return _run(["mnexec", "-a", str(pid), *argv], check=check)


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


def _mac(prefix: str, index: int) -> str:
    """Locally administered unicast MAC derived from the prefix (stable, distinct per prefix)."""
    digest = hashlib.sha256(prefix.encode()).digest()
    return ":".join(f"{o:02x}" for o in (0x02, digest[0], digest[1], digest[2], digest[3], index))


def _plan(prefix: str) -> tuple[HostAddress, HostAddress, HostAddress, HostAddress]:
    """(sender, router_left, router_right, receiver) addresses of a topology with this prefix."""
    _validate_prefix(prefix)
    s, r, d = (prefix + _HOST_SUFFIX[role] for role in ROLES)
    return (HostAddress(s, f"{s}-0", "10.200.1.1", _mac(prefix, 1)),
            HostAddress(r, f"{r}-l", "10.200.1.2", _mac(prefix, 2)),
            HostAddress(r, f"{r}-r", "10.200.2.1", _mac(prefix, 3)),
            HostAddress(d, f"{d}-0", "10.200.2.2", _mac(prefix, 4)))


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
    for name in _root_links():
        if name.startswith(prefix):
            found.append(f"{'bridge' if name in bridges else 'interface'} {name}")
    found += [f"netns {name}" for name in _named_netns() if name.startswith(prefix)]
    return found


def create_topology(prefix: str | None = None) -> Topology:
    """Build sender, router and receiver Mininet hosts, both links, addresses, static neighbours and routes.

    The router does no kernel forwarding (ip_forward=0): a userspace shaper forwards frames with AF_PACKET.
    On any failure (KeyboardInterrupt included) everything created so far is removed before re-raising.
    """
    _require_root_and_mininet()
    if prefix is None:
        prefix = new_prefix()
    elif prefix in _NETS or list_leftovers(prefix):
        raise TopologyError(f"prefix {prefix!r} is in use (see `testbed net cleanup --prefix {prefix}`)")
    sender, router_left, router_right, receiver = _plan(prefix)
    from mininet.net import Mininet
    from mininet.node import Host

    class _RunNet(Mininet):
        inited = True  # skip Mininet.init(): it changes machine-wide sysctls and rlimits

    pids: dict[str, int] = {}
    try:
        with _quiet_mininet():
            net = _RunNet(topo=None, controller=None, build=False, autoSetMacs=False, autoStaticArp=False,
                          waitConnected=False)
            live = _NETS[prefix] = _Live(net)
            hosts = {}
            for role, name in zip(ROLES, (sender.name, router_left.name, receiver.name)):
                hosts[role] = net.addHost(name, cls=Host, ip=None)
                pids[role] = hosts[role].pid
                live.anchors.append(_start_anchor(pids[role], name))
            for a, b, ra, rb in ((sender, router_left, "sender", "router"),
                                 (router_right, receiver, "router", "receiver")):
                net.addLink(hosts[ra], hosts[rb], intfName1=a.interface, intfName2=b.interface,
                            addr1=a.mac, addr2=b.mac)
        offloads = _configure(pids, sender, router_left, router_right, receiver)
        for anchor, pid in zip(live.anchors, pids.values()):
            _wait_joined(anchor, pid)
    except BaseException as exc:
        destroy_topology(Topology(prefix, sender, receiver, router_left, router_right, pids, "not attempted"))
        if isinstance(exc, Exception) and not isinstance(exc, TopologyError):
            raise TopologyError(f"building Mininet hosts for {prefix!r} failed: {exc}") from exc
        raise
    return Topology(prefix, sender, receiver, router_left, router_right, pids, offloads)


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


def _configure(pids: dict[str, int], sender: HostAddress, router_left: HostAddress, router_right: HostAddress,
               receiver: HostAddress) -> str:
    """Addresses, sysctls, offloads, links up, static neighbours and routes; returns the offload outcome."""
    for role in ROLES:
        _in_host(pids[role], ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                              "net.ipv6.conf.default.disable_ipv6=1"])
    _in_host(pids["router"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
    ends = [("sender", sender), ("router", router_left), ("router", router_right), ("receiver", receiver)]
    for role, end in ends:
        _in_host(pids[role], ["ip", "addr", "add", f"{end.ip}/{_PREFIXLEN}", "dev", end.interface])
    for role in ROLES:
        _in_host(pids[role], ["ip", "link", "set", "lo", "up"])
    offloads = _disable_offloads(pids, ends)
    for role, end in ends:
        _in_host(pids[role], ["ip", "link", "set", end.interface, "up"])
    # Static neighbours: no ARP on the links; the shaper knows the MACs.
    for role, end, peer in (("sender", sender, router_left), ("router", router_left, sender),
                            ("router", router_right, receiver), ("receiver", receiver, router_right)):
        _in_host(pids[role], ["ip", "neigh", "replace", peer.ip, "lladdr", peer.mac, "dev", end.interface,
                              "nud", "permanent"])
    # The only way between the end hosts is through the router.
    _in_host(pids["sender"], ["ip", "route", "add", _RIGHT_SUBNET, "via", router_left.ip, "dev", sender.interface])
    _in_host(pids["receiver"], ["ip", "route", "add", _LEFT_SUBNET, "via", router_right.ip,
                                "dev", receiver.interface])
    _wait_up(pids, ends)
    return offloads


def _disable_offloads(pids: dict[str, int], ends: list[tuple[str, HostAddress]]) -> str:
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return "skipped: ethtool not found"
    errors = []
    for role, end in ends:
        proc = _in_host(pids[role], [ethtool, "-K", end.interface, "rx", "off", "tx", "off", "sg", "off",
                                     "tso", "off", "gso", "off", "gro", "off"], check=False)
        if proc.returncode != 0:
            errors.append(f"{end.interface}: {proc.stderr.strip()}")
    return "disabled" if not errors else "partial: " + "; ".join(errors)


def _wait_up(pids: dict[str, int], ends: list[tuple[str, HostAddress]], timeout_s: float = 5.0) -> None:
    """Wait until the kernel's linkwatch reports every veth end UP (qdiscs are attached then)."""
    deadline = time.monotonic() + timeout_s
    pending = list(ends)
    while pending:
        pending = [(role, end) for role, end in pending
                   if "state UP" not in _in_host(pids[role], ["ip", "-o", "link", "show", "dev", end.interface],
                                                 check=False).stdout]
        if pending and time.monotonic() > deadline:
            raise TopologyError(f"interfaces not UP after {timeout_s} s: {[end.interface for _, end in pending]}")
        if pending:
            time.sleep(0.02)


def enable_kernel_forwarding(t: Topology) -> None:
    """Test helper: let the router's kernel forward IPv4 (instead of the userspace shaper)."""
    _in_host(t.pids["router"], ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])


def destroy_topology(t: Topology) -> list[str]:
    """Kill every process in the hosts, stop Mininet, remove what is left; returns what could not be removed.

    Processes started with `Topology.exec_argv` are not children of the host shells: they are found by
    their network namespace and get SIGTERM, then SIGKILL after 1 s. Idempotent.
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
            for host in live.net.hosts:
                if host.shell is not None and host.shell.poll() is None:
                    host.shell.kill()
                    host.shell.wait()
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

    Kills the processes in their hosts and the host shells, deletes root-namespace veths/bridges and named
    namespaces carrying the prefix. Backs ``testbed net cleanup``; with the default ``"tb"`` this also
    removes the topologies of runs still in progress on this machine: pass one run's prefix to target it.
    """
    if not prefix_start:
        raise ValueError("prefix_start must not be empty")
    if os.geteuid() != 0:
        raise NeedsRootError("cleaning up Mininet hosts")
    removed = []
    processes = _prefix_processes(prefix_start)
    _kill(sorted(processes))
    removed += [f"process {pid} ({cmd})" for pid, cmd in sorted(processes.items())]
    for name in _root_links():
        if name.startswith(prefix_start) and _run(["ip", "link", "del", name], check=False).returncode == 0:
            removed.append(f"interface {name}")
    for name in _named_netns():
        if name.startswith(prefix_start) and _run(["ip", "netns", "del", name], check=False).returncode == 0:
            removed.append(f"netns {name}")
    return removed


# ---------------------------------------------------------------------------------- context manager


@contextmanager
def topology(prefix: str | None = None) -> Iterator[Topology]:
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
        topo = create_topology(prefix)
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
