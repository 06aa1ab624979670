"""Topology layer of the `mininet` backend, in plain iproute2 (no Mininet, no pyroute2).

Three network namespaces joined by two veth pairs::

    sender ns                  router ns                    receiver ns
    [<p>-snd] 10.200.1.1/30 -- 10.200.1.2/30 [<p>-rl]
                               [<p>-rr] 10.200.2.1/30 -- 10.200.2.2/30 [<p>-rcv]

``<p>`` is a run-specific prefix (``tb`` + 6 hex digits by default). Every namespace and interface name
starts with it, so two runs never collide and `cleanup_prefix` finds the leftovers of a killed run.
Interface names stay within IFNAMSIZ (15 characters): prefixes are limited to 11 characters.

Forwarding model. The sender's only route to the receiver's /30 goes via the router's left address and
the receiver's only route back goes via the router's right address; every neighbour entry on both links
is static (``nud permanent``, MAC addresses are fixed at creation and derived from the prefix), so no ARP
traffic crosses the links and the MACs are known to whoever forwards. The router namespace has
``net.ipv4.ip_forward = 0``: its kernel drops transit packets, and the userspace shaper (AF_PACKET sockets
bound to `Topology.router_left_if` / `Topology.router_right_if`) is what forwards frames, rewriting the
Ethernet header with the MACs recorded in `Topology` (towards the receiver: src = router_right_mac,
dst = receiver_mac; towards the sender: src = router_left_mac, dst = sender_mac). Without a shaper,
sender <-> receiver traffic does not get through. `enable_kernel_forwarding` turns on kernel IP
forwarding in the router namespace instead, which tests use to check the plain path.

IPv6 is disabled in all three namespaces so router solicitations / DAD / MLD never appear on the links.
Offloads (checksum, TSO, GSO, GRO) are disabled with ``ethtool`` on all four interfaces when ethtool is
present (``Topology.offloads`` records what happened): frames read by AF_PACKET must carry complete
checksums and MTU-sized segments. The sender- and receiver-side ends matter too, since a veth with TX
checksum offload hands the peer packets whose checksum is not yet filled in.

The addresses exist only inside our own namespaces; the root namespace is never touched (the veth pairs
are created directly inside the namespaces).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "CommandError",
    "NeedsRootError",
    "Topology",
    "TopologyError",
    "cleanup_prefix",
    "create_topology",
    "destroy_topology",
    "enable_kernel_forwarding",
    "new_prefix",
    "ns_exec_argv",
    "plan_topology",
    "topology",
]

DEFAULT_PREFIX_START = "tb"
IFNAMSIZ = 15  # usable characters of an interface name (16 bytes with the NUL)
_SUFFIXES = ("-snd", "-rtr", "-rcv", "-rl", "-rr")
MAX_PREFIX_LEN = IFNAMSIZ - max(len(s) for s in _SUFFIXES)  # 11
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]*$")
NEEDS_ROOT_MESSAGE = "needs root: run as root or use the Vagrant VM"
_NETNS_DIR = "/run/netns"
_CMD_TIMEOUT_S = 20.0


class TopologyError(RuntimeError):
    """Any failure of the namespace topology layer."""


class NeedsRootError(TopologyError, PermissionError):
    def __init__(self, what: str = "network namespaces") -> None:
        super().__init__(f"{NEEDS_ROOT_MESSAGE} ({what})")


class CommandError(TopologyError):
    """An external command (ip, ethtool, sysctl) failed; carries the argument list and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {' '.join(self.argv)}\n  stderr: {self.stderr}")


@dataclass(frozen=True)
class Topology:
    """Names, addresses and MACs of one sender -- router -- receiver topology."""

    prefix: str
    sender_ns: str
    router_ns: str
    receiver_ns: str
    # left link: sender <-> router
    sender_if: str
    router_left_if: str
    # right link: router <-> receiver
    router_right_if: str
    receiver_if: str
    sender_ip: str
    router_left_ip: str
    router_right_ip: str
    receiver_ip: str
    sender_mac: str
    router_left_mac: str
    router_right_mac: str
    receiver_mac: str
    prefixlen: int = 30
    left_subnet: str = "10.200.1.0/30"
    right_subnet: str = "10.200.2.0/30"
    # "disabled", "skipped: ethtool not found" or "partial: <error>" (set by create_topology)
    offloads: str = "not attempted"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.sender_ns, self.router_ns, self.receiver_ns)

    @property
    def interfaces(self) -> tuple[str, str, str, str]:
        return (self.sender_if, self.router_left_if, self.router_right_if, self.receiver_if)

    @property
    def shaper_interfaces(self) -> tuple[str, str]:
        """The router-side interfaces a userspace shaper binds to: (towards sender, towards receiver)."""
        return (self.router_left_if, self.router_right_if)


# --------------------------------------------------------------------------------------------- helpers


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = _CMD_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run an argument list (never a shell string); raise CommandError on failure when check."""
    argv = [str(a) for a in argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise CommandError(argv, 127, f"executable not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, -1, f"timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        if _looks_like_permission(proc.stderr):
            raise NeedsRootError(" ".join(argv))
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


def _looks_like_permission(stderr: str) -> bool:
    s = stderr.lower()
    return "operation not permitted" in s or "permission denied" in s


def _require_tools() -> None:
    if shutil.which("ip") is None:
        raise TopologyError("iproute2 `ip` not found on PATH (install iproute2, or use the Vagrant VM)")
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise NeedsRootError()


def ns_exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """Argument list running `argv` inside network namespace `ns`."""
    return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]


def _sysctl(ns: str, key: str, value: str | int) -> None:
    if shutil.which("sysctl") is not None:
        _run(ns_exec_argv(ns, ["sysctl", "-q", "-w", f"{key}={value}"]))
        return
    # No procps: write /proc/sys from a process inside the namespace (argument list, no shell).
    path = "/proc/sys/" + key.replace(".", "/")
    import sys

    code = "import sys; open(sys.argv[1], 'w').write(sys.argv[2])"
    _run(ns_exec_argv(ns, [sys.executable, "-c", code, path, str(value)]))


def new_prefix(prefix_start: str = DEFAULT_PREFIX_START) -> str:
    """A fresh run prefix: `prefix_start` + 6 random hex digits, not used by any existing namespace."""
    existing = set(_list_netns())
    while True:
        prefix = prefix_start + secrets.token_hex(3)
        if not any(name.startswith(prefix) for name in existing):
            return prefix


def _validate_prefix(prefix: str) -> None:
    if not prefix or len(prefix) > MAX_PREFIX_LEN or not _PREFIX_RE.match(prefix):
        raise ValueError(
            f"invalid topology prefix {prefix!r}: 1..{MAX_PREFIX_LEN} characters of [A-Za-z0-9_.], "
            f"so that interface names fit IFNAMSIZ ({IFNAMSIZ})"
        )


def _mac(prefix: str, index: int) -> str:
    """Locally administered unicast MAC derived from the prefix (stable, distinct per prefix)."""
    digest = hashlib.sha256(prefix.encode()).digest()
    octets = [0x02, digest[0], digest[1], digest[2], digest[3], index]
    return ":".join(f"{o:02x}" for o in octets)


def plan_topology(prefix: str) -> Topology:
    """The names/addresses a topology with this prefix gets (pure; creates nothing)."""
    _validate_prefix(prefix)
    return Topology(
        prefix=prefix,
        sender_ns=f"{prefix}-snd",
        router_ns=f"{prefix}-rtr",
        receiver_ns=f"{prefix}-rcv",
        sender_if=f"{prefix}-snd",
        router_left_if=f"{prefix}-rl",
        router_right_if=f"{prefix}-rr",
        receiver_if=f"{prefix}-rcv",
        sender_ip="10.200.1.1",
        router_left_ip="10.200.1.2",
        router_right_ip="10.200.2.1",
        receiver_ip="10.200.2.2",
        sender_mac=_mac(prefix, 1),
        router_left_mac=_mac(prefix, 2),
        router_right_mac=_mac(prefix, 3),
        receiver_mac=_mac(prefix, 4),
    )


def _list_netns() -> list[str]:
    try:
        return sorted(os.listdir(_NETNS_DIR))
    except FileNotFoundError:
        pass
    except PermissionError:
        pass
    if shutil.which("ip") is None:
        return []
    proc = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def _root_links() -> list[str]:
    proc = _run(["ip", "-o", "link", "show"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


# ----------------------------------------------------------------------------------------- public API


def create_topology(prefix: str | None = None) -> Topology:
    """Create sender/router/receiver namespaces, two veth pairs, addresses, static neighbours and routes.

    The router does no kernel forwarding (ip_forward=0): a userspace shaper forwards frames with AF_PACKET.
    On any failure (including KeyboardInterrupt) everything created so far is removed before re-raising.
    """
    _require_tools()
    auto = prefix is None
    for _attempt in range(5):
        p = new_prefix() if auto else prefix
        plan = plan_topology(p)
        try:
            return _build(plan)
        except CommandError as exc:
            # A concurrent run drew the same random prefix (1 in 16M): draw again.
            if auto and "File exists" in exc.stderr and plan.sender_ns in exc.argv:
                continue
            raise
    raise TopologyError("could not allocate a unique topology prefix")


def _build(t: Topology) -> Topology:
    created: list[str] = []
    try:
        for ns in t.namespaces:
            _run(["ip", "netns", "add", ns])
            created.append(ns)
        # veth pairs created directly inside the namespaces: nothing ever appears in the root namespace.
        _run(
            [
                "ip",
                "link",
                "add",
                "name",
                t.sender_if,
                "netns",
                t.sender_ns,
                "address",
                t.sender_mac,
                "type",
                "veth",
                "peer",
                "name",
                t.router_left_if,
                "netns",
                t.router_ns,
                "address",
                t.router_left_mac,
            ]
        )
        _run(
            [
                "ip",
                "link",
                "add",
                "name",
                t.router_right_if,
                "netns",
                t.router_ns,
                "address",
                t.router_right_mac,
                "type",
                "veth",
                "peer",
                "name",
                t.receiver_if,
                "netns",
                t.receiver_ns,
                "address",
                t.receiver_mac,
            ]
        )
        for ns in t.namespaces:
            _sysctl(ns, "net.ipv6.conf.all.disable_ipv6", 1)
            _sysctl(ns, "net.ipv6.conf.default.disable_ipv6", 1)
        _sysctl(t.router_ns, "net.ipv4.ip_forward", 0)
        plen = t.prefixlen
        addrs = [
            (t.sender_ns, t.sender_if, t.sender_ip),
            (t.router_ns, t.router_left_if, t.router_left_ip),
            (t.router_ns, t.router_right_if, t.router_right_ip),
            (t.receiver_ns, t.receiver_if, t.receiver_ip),
        ]
        for ns, dev, ip in addrs:
            _run(["ip", "-n", ns, "addr", "add", f"{ip}/{plen}", "dev", dev])
        for ns in t.namespaces:
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        offloads = _disable_offloads(t)
        for ns, dev, _ip in addrs:
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        # Static neighbours: no ARP on the links; MACs known to the shaper.
        neigh = [
            (t.sender_ns, t.sender_if, t.router_left_ip, t.router_left_mac),
            (t.router_ns, t.router_left_if, t.sender_ip, t.sender_mac),
            (t.router_ns, t.router_right_if, t.receiver_ip, t.receiver_mac),
            (t.receiver_ns, t.receiver_if, t.router_right_ip, t.router_right_mac),
        ]
        for ns, dev, ip, mac in neigh:
            _run(["ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent"])
        # The only way between the end hosts is through the router.
        _run(["ip", "-n", t.sender_ns, "route", "add", t.right_subnet, "via", t.router_left_ip, "dev", t.sender_if])
        _run(["ip", "-n", t.receiver_ns, "route", "add", t.left_subnet, "via", t.router_right_ip, "dev", t.receiver_if])
        _wait_operstate_up(addrs)
        return Topology(**{**t.__dict__, "offloads": offloads})
    except BaseException:
        for ns in reversed(created):
            _delete_netns(ns)
        raise


def _wait_operstate_up(devs: Sequence[tuple[str, str, str]], timeout_s: float = 5.0) -> None:
    """Wait until the kernel's linkwatch reports every veth end as UP (qdiscs are attached then)."""
    deadline = time.monotonic() + timeout_s
    pending = [(ns, dev) for ns, dev, _ in devs]
    while True:
        pending = [
            (ns, dev)
            for ns, dev in pending
            if _run(["ip", "-n", ns, "-br", "link", "show", "dev", dev], check=False).stdout.split()[1:2] != ["UP"]
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopologyError(f"interfaces not UP after {timeout_s} s: {pending}")
        time.sleep(0.02)


def _disable_offloads(t: Topology) -> str:
    ethtool = shutil.which("ethtool")
    if ethtool is None:
        return "skipped: ethtool not found"
    errors = []
    for ns, dev in [
        (t.sender_ns, t.sender_if),
        (t.router_ns, t.router_left_if),
        (t.router_ns, t.router_right_if),
        (t.receiver_ns, t.receiver_if),
    ]:
        proc = _run(
            ns_exec_argv(
                ns,
                [ethtool, "-K", dev, "rx", "off", "tx", "off", "sg", "off", "tso", "off", "gso", "off", "gro", "off"],
            ),
            check=False,
        )
        if proc.returncode != 0:
            errors.append(f"{dev}: {proc.stderr.strip()}")
    return "disabled" if not errors else "partial: " + "; ".join(errors)


def enable_kernel_forwarding(t: Topology) -> None:
    """Test helper: let the router's kernel forward IPv4 (replaces the userspace shaper)."""
    _sysctl(t.router_ns, "net.ipv4.ip_forward", 1)


def _kill_ns_processes(ns: str, grace_s: float = 1.0) -> None:
    proc = _run(["ip", "netns", "pids", ns], check=False)
    pids = [int(x) for x in proc.stdout.split() if x.isdigit() and int(x) != os.getpid()]
    if not pids:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # reap if it is our own child (zombie otherwise counts as alive)
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    return True


def _delete_netns(ns: str, kill_processes: bool = True) -> bool:
    """Delete a namespace if present; returns True when something was removed."""
    if ns not in _list_netns():
        return False
    if kill_processes:
        _kill_ns_processes(ns)
    proc = _run(["ip", "netns", "del", ns], check=False)
    if proc.returncode != 0 and ns in _list_netns():
        raise CommandError(["ip", "netns", "del", ns], proc.returncode, proc.stderr)
    return True


def destroy_topology(t: Topology, *, kill_processes: bool = True) -> list[str]:
    """Remove the topology's namespaces (their veths go with them) and any stray root-ns veth.

    Processes still inside the namespaces get SIGTERM, then SIGKILL after 1 s (kill_processes=True), so
    that the namespaces (and their veths) really disappear. Idempotent; returns what was removed.
    """
    removed = []
    errors: list[BaseException] = []
    for ns in t.namespaces:
        try:
            if _delete_netns(ns, kill_processes):
                removed.append(ns)
        except TopologyError as exc:
            errors.append(exc)
    present = set(_root_links()) if shutil.which("ip") else set()
    for dev in t.interfaces:
        if dev in present:
            _run(["ip", "link", "del", dev], check=False)
            removed.append(dev)
    if errors:
        raise errors[0]
    return removed


def cleanup_prefix(prefix_start: str = DEFAULT_PREFIX_START) -> list[str]:
    """Remove every namespace and root-namespace veth whose name starts with `prefix_start`.

    Backs ``testbed net cleanup``. Note: with the default ``"tb"`` this also removes the topologies of
    runs still in progress on this machine; pass a full run prefix to target one run.
    """
    if not prefix_start:
        raise ValueError("prefix_start must not be empty")
    _require_tools()
    removed = []
    for ns in _list_netns():
        if ns.startswith(prefix_start) and _delete_netns(ns):
            removed.append(ns)
    proc = _run(["ip", "-o", "link", "show", "type", "veth"], check=False)
    for line in proc.stdout.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 2:
            continue
        dev = parts[1].strip().split("@", 1)[0]
        if dev.startswith(prefix_start):
            r = _run(["ip", "link", "del", dev], check=False)
            if r.returncode == 0:
                removed.append(dev)
    return removed


# ---------------------------------------------------------------------------------- context manager


@contextmanager
def topology(prefix: str | None = None) -> Iterator[Topology]:
    """Create a topology and always destroy it: normal exit, exception, SIGINT or SIGTERM.

    In the main thread, SIGINT raises KeyboardInterrupt and SIGTERM raises SystemExit(143) inside the
    with-block; a signal arriving while the topology is being created or destroyed is deferred until
    cleanup is done, then raised. Previous handlers are restored on exit. In other threads no handlers
    are installed (Python only allows that in the main thread); cleanup still runs on exceptions.
    """
    in_main = threading.current_thread() is threading.main_thread()
    state = {"armed": False, "pending": None}

    def _handler(signum: int, _frame: object) -> None:
        if state["armed"]:
            state["armed"] = False
            _raise_for(signum)
        if state["pending"] is None:
            state["pending"] = signum

    previous: dict[int, object] = {}
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
