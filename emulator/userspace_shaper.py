"""Userspace shaper: bridges two interfaces of a router namespace with AF_PACKET sockets and applies one
`Link` per direction in wall-clock time.

Runs *inside* the router host, e.g. ``topology.exec_argv("router", [python, "-m",
"testbed.emulator.userspace_shaper", CONFIG.json])`` (`testbed.emulator.mininet_topology`).

Semantics are exactly those of `testbed.emulator.link.Link` (loss on arrival -> drop-tail FIFO -> serializer
-> propagation delay), evaluated with ``now = time.monotonic() - start``, where ``start`` is the config's
``start_monotonic`` when given (a run-wide time origin shared with the agents: CLOCK_MONOTONIC is
system-wide, the same in every network namespace) and the shaper's own start otherwise. The link of each
direction is ``Link(params, seed, *stream_key, direction)``: with ``stream_key = [network name]`` its loss
draws are exactly those of the `sim` backend's ``Link(network.forward, run.seed, network.name, "forward")``.

Every IPv4/UDP frame received on the left interface is shaped by the ``forward`` link and sent out of the
right interface at its computed arrival time (and vice versa with the ``reverse`` link). ARP frames are
forwarded immediately and unshaped so neighbour discovery works (static neighbour entries work too: then no
ARP is seen at all). Every other frame (IPv6, TCP, ...) is discarded and only counted (``ignored``), as are
UDP frames shorter than their UDP length field and IP fragments (``truncated``): the shaper only forwards
whole datagrams.

By default frames are forwarded unchanged at layer 2 (a bump in the wire, like a bridge): the two end hosts
share one IP subnet and address each other's MAC directly. With ``rewrite_macs`` the shaper acts as the
router of a routed topology (`testbed.emulator.mininet_topology`: two subnets, the router's kernel does
not forward): each shaped frame gets its direction's source MAC and the MAC of its IPv4 destination (the IP
header, TTL included, is left alone), and ARP stays local to each link (the router's kernel answers it).
In a dumbbell, several hosts share each side; every one of them is listed.

Offloads MUST be off on every veth of the path, in every namespace::

    ethtool -K IF tx off gro off tso off gso off

- ``gro/tso/gso off``: otherwise the kernel hands AF_PACKET merged super-frames larger than the MTU, which
  the shaper would charge as one packet and which ``send`` then refuses (EMSGSIZE).
- ``tx off`` (TX checksum offload): otherwise the sender's UDP checksum is left unfinished (CHECKSUM_PARTIAL)
  in the captured frame; re-sent raw, the receiver's stack sees a bad checksum and silently drops every
  datagram (measured here: 0 of 20 arrived with ``tx`` on, all with it off). The shaper does not repair
  checksums.

Sizes charged to the link: ``size_basis = "frame"`` (default) charges ``len(frame)`` including the
14-byte Ethernet header; ``"udp_payload"`` charges the UDP payload bytes, which is what the `sim` backend
charges (``len(datagram.payload)``).

Per-packet log (one row per shaped frame, in arrival order), written on stop as Parquet (``.parquet``) or
CSV (anything else): ``direction`` ("forward"/"reverse"), ``arrival_s`` (wall arrival at the shaper, seconds
since ``start``), ``size`` (charged bytes), ``frame_bytes``, ``drop`` ("loss"/"queue"/None), ``scheduled_s``
(departure computed by the link, None if dropped or never delivered), ``departed_s`` (actual send time, None
if not sent before stop), ``ge_state``, ``ip_id`` (IPv4 identification), ``digest``
(`testbed.emulator.payload_digest.payload_digest` of the UDP payload, a signed int64) for matching rows with
the agents' logs. The monotonic time of ``start`` and the counters (``arp``, ``ignored``, ``truncated``, ``unroutable``,
``send_errors``) are stored in the file metadata / a ``.meta.json`` sidecar for CSV.

JSON config for the entry point::

    {"left_if": "r-s", "right_if": "r-d", "seed": 1, "log_path": "/run/x/shaper.parquet",
     "size_basis": "frame",
     "forward": {"delay_s": 0.025, "loss": {"kind": "bernoulli", "rate": 0.1},
                 "rate": {"kind": "constant", "kbps": 320}, "queue_bytes": 6000},
     "reverse": {"delay_s": 0.025}}

Optional keys: ``rewrite_macs`` ({"forward": [source MAC, {IPv4: MAC, ...}], "reverse": [...]}, MACs as
"aa:bb:..."; see `MacRewrite`),
``size_basis`` ("frame" | "udp_payload"), ``stream_key`` (list of strings, default []), ``start_monotonic``
(float, CLOCK_MONOTONIC seconds of the run's time origin), ``ready_file`` (written with the shaper's pid once
both sockets are bound, so a launcher knows when traffic may start). SIGTERM/SIGINT stop the loop, frames
still pending are not sent (their ``departed_s`` stays empty) and the log is written; exit status 0.

Loss kinds: ``bernoulli`` (rate), ``gilbert_elliott`` (p, r, loss_bad, loss_good, clock, slot_s),
``packet_trace`` (outcomes, loop), ``interval_trace`` (intervals). Rate kinds: ``constant`` (kbps),
``schedule`` (times_s, kbps), ``delivery_trace`` (opportunities_ms, loop).
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed.emulator.link import (
    Link,
    LinkParams,
)
from testbed.emulator.link_config import link_params_from_dict
from testbed.emulator.payload_digest import payload_digest

log = logging.getLogger(__name__)

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
IPPROTO_UDP = 17

SPIN_S = 200e-6  # busy-wait this long before a departure for precision
MAX_BATCH = 16  # frames drained per readable socket per loop turn
SOCKET_BUFFER = 8 * 1024 * 1024

DIRECTIONS = ("forward", "reverse")
LOG_COLUMNS = ("direction", "arrival_s", "size", "frame_bytes", "drop", "scheduled_s", "departed_s",
               "ge_state", "ip_id", "digest")


# ---------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class MacRewrite:
    """How a routed topology's shaped frames leave one direction: source MAC, destination MAC per IPv4 address."""

    source: str
    destinations: dict[str, str]

    @classmethod
    def from_json(cls, data: list) -> MacRewrite:
        """Parse ``[source MAC, {IPv4: MAC}]`` (the JSON form of `Topology.shaper_macs` values)."""
        source, destinations = data
        return cls(source, dict(destinations))

    def headers(self) -> dict[bytes, bytes]:
        """Packed IPv4 destination -> the 12 bytes (destination MAC, source MAC) that start its frames."""
        source = bytes.fromhex(self.source.replace(":", ""))
        return {socket.inet_aton(ip): bytes.fromhex(mac.replace(":", "")) + source
                for ip, mac in self.destinations.items()}


# ---------------------------------------------------------------------------------------------- log

@dataclass
class ShaperLog:
    """Per-packet rows collected in memory, column-wise."""

    columns: dict[str, list] = field(default_factory=lambda: {c: [] for c in LOG_COLUMNS})
    start_monotonic: float = 0.0
    counters: dict[str, int] = field(default_factory=lambda: {"arp": 0, "ignored": 0, "truncated": 0,
                                                              "unroutable": 0, "send_errors": 0})

    def add(self, direction, arrival, size, frame_bytes, drop, scheduled, ge_state, ip_id, digest) -> int:
        c = self.columns
        c["direction"].append(direction)
        c["arrival_s"].append(arrival)
        c["size"].append(size)
        c["frame_bytes"].append(frame_bytes)
        c["drop"].append(drop)
        c["scheduled_s"].append(scheduled)
        c["departed_s"].append(None)
        c["ge_state"].append(ge_state)
        c["ip_id"].append(ip_id)
        c["digest"].append(digest)
        return len(c["direction"]) - 1

    def __len__(self) -> int:
        return len(self.columns["direction"])

    def write(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        meta = {"start_monotonic": repr(self.start_monotonic), **{k: str(v) for k, v in self.counters.items()}}
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            types = {"direction": pa.string(), "arrival_s": pa.float64(), "size": pa.int64(),
                     "frame_bytes": pa.int64(), "drop": pa.string(), "scheduled_s": pa.float64(),
                     "departed_s": pa.float64(), "ge_state": pa.string(), "ip_id": pa.int64(),
                     "digest": pa.int64()}
            schema = pa.schema([pa.field(c, types[c]) for c in LOG_COLUMNS], metadata=meta)
            table = pa.Table.from_arrays([pa.array(self.columns[c], types[c]) for c in LOG_COLUMNS],
                                         schema=schema)
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(LOG_COLUMNS)
                for row in zip(*(self.columns[c] for c in LOG_COLUMNS)):
                    w.writerow(["" if v is None else v for v in row])
            path.with_name(path.name + ".meta.json").write_text(json.dumps(meta))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- sockets

def _open(ifname: str) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # SO_RCVBUFFORCE / SO_SNDBUFFORCE
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    s.bind((ifname, ETH_P_ALL))
    ifindex = socket.if_nametoindex(ifname)
    mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")  # packet_mreq
    try:
        s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
    except OSError as exc:  # not fatal on veth, which hands every frame up anyway
        log.warning("promiscuous mode on %s failed: %s", ifname, exc)
    return s


def _drain(s: socket.socket) -> None:
    """Discard what was captured before the shaper started."""
    while True:
        try:
            s.recv(65535, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return


def _classify(frame: bytes) -> tuple[str, int, int, int, bytes]:
    """('udp'|'truncated'|'arp'|'other', udp_payload_bytes, ip_id, payload digest, IPv4 destination);
    0/-1/0/b"" where n/a."""
    if len(frame) < 14:
        return "other", 0, -1, 0, b""
    ethertype = (frame[12] << 8) | frame[13]
    off = 14
    if ethertype == 0x8100 and len(frame) >= 18:  # one VLAN tag
        ethertype = (frame[16] << 8) | frame[17]
        off = 18
    if ethertype == ETH_P_ARP:
        return "arp", 0, -1, 0, b""
    if ethertype != ETH_P_IP or len(frame) < off + 20:
        return "other", 0, -1, 0, b""
    if frame[off + 9] != IPPROTO_UDP:
        return "other", 0, -1, 0, b""
    destination = frame[off + 16:off + 20]
    ihl = (frame[off] & 0x0F) * 4
    ip_id = (frame[off + 4] << 8) | frame[off + 5]
    u = off + ihl
    fragment = ((frame[off + 6] << 8) | frame[off + 7]) & 0x3FFF  # MF flag or a fragment offset
    if fragment or len(frame) < u + 8:
        return "truncated", 0, ip_id, 0, destination
    udp_len = (frame[u + 4] << 8) | frame[u + 5]
    end = u + udp_len  # not len(frame): short frames carry Ethernet padding after the datagram
    if udp_len < 8 or len(frame) < end:
        return "truncated", 0, ip_id, 0, destination
    return "udp", udp_len - 8, ip_id, payload_digest(frame[u + 8:end]), destination


# ---------------------------------------------------------------------------------------------- shaper

def run_shaper(left_if: str, right_if: str, forward: LinkParams, reverse: LinkParams, seed: int,
               log_path: str | os.PathLike | None, stop_event: threading.Event,
               size_basis: str = "frame", ready_event: threading.Event | None = None,
               rewrite_macs: dict[str, MacRewrite] | None = None, stream_key: Sequence[str] = (),
               start_monotonic: float | None = None) -> ShaperLog:
    """Bridge `left_if` <-> `right_if` until `stop_event` is set; write the log to `log_path` and return it.

    Frames from `left_if` go through the `forward` link, frames from `right_if` through `reverse`.
    `rewrite_macs` maps a direction to the source MAC its shaped frames leave with and the destination MAC
    of each IPv4 destination; a frame to any other address is not shaped (counter ``unroutable``).
    Each direction's link is ``Link(params, seed, *stream_key, direction)``; times are seconds since
    `start_monotonic` (CLOCK_MONOTONIC), or since the shaper's own start when it is None.
    Must run in the namespace that owns both interfaces, as root (CAP_NET_RAW).
    """
    if size_basis not in ("frame", "udp_payload"):
        raise ValueError("size_basis must be 'frame' or 'udp_payload'")
    links = {"forward": Link(forward, seed, *stream_key, "forward"),
             "reverse": Link(reverse, seed, *stream_key, "reverse")}
    headers = {direction: rewrite.headers() for direction, rewrite in (rewrite_macs or {}).items()}
    left, right = _open(left_if), _open(right_if)
    _drain(left)
    _drain(right)
    # fd -> (direction, receiving socket, sending socket)
    routes = {left.fileno(): ("forward", left, right), right.fileno(): ("reverse", right, left)}
    fds = list(routes)
    shaper_log = ShaperLog()
    cols = shaper_log.columns
    departed = cols["departed_s"]
    counters = shaper_log.counters
    pending: list[tuple[float, int, socket.socket, bytes, int]] = []
    counter = 0
    start = time.monotonic() if start_monotonic is None else start_monotonic
    shaper_log.start_monotonic = start
    mono = time.monotonic
    use_frame = size_basis == "frame"
    if ready_event is not None:
        ready_event.set()
    try:
        while not stop_event.is_set():
            # 1. send everything that is due; never spin here, so arriving frames are read promptly
            now = mono() - start
            while pending and pending[0][0] <= now:
                _, _, out, frame, row = heapq.heappop(pending)
                try:
                    out.send(frame)
                    departed[row] = mono() - start
                except OSError as exc:
                    counters["send_errors"] += 1
                    log.warning("send of %d bytes failed: %s", len(frame), exc)
                now = mono() - start
            # 2. wait for input or the next departure; within SPIN_S of it poll the sockets once and, if
            #    nothing is readable, busy-wait for the departure (input waits at most SPIN_S)
            if pending:
                wait = pending[0][0] - now
                if wait > SPIN_S:
                    readable, _, _ = select.select(fds, [], [], min(wait - SPIN_S, 0.1))
                else:
                    readable, _, _ = select.select(fds, [], [], 0)
                    if not readable:
                        due = pending[0][0]
                        while mono() - start < due:
                            pass
                        continue
            else:
                readable, _, _ = select.select(fds, [], [], 0.1)
            # 3. take in every arrived frame and decide its fate right away
            for fd in readable:
                direction, sock, out = routes[fd]
                link = links[direction]
                for _ in range(MAX_BATCH):
                    try:
                        frame, addr = sock.recvfrom(65535, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    kind, payload, ip_id, digest, destination = _classify(frame)
                    if kind == "arp":
                        counters["arp"] += 1
                        if headers:
                            continue  # routed topology: each link's ARP is answered by the router's kernel
                        try:
                            out.send(frame)
                        except OSError:
                            counters["send_errors"] += 1
                        continue
                    if kind != "udp":
                        counters["ignored" if kind == "other" else "truncated"] += 1
                        continue
                    header = None
                    if direction in headers:
                        header = headers[direction].get(destination)
                        if header is None:
                            counters["unroutable"] += 1
                            continue
                    now = mono() - start
                    size = len(frame) if use_frame else payload
                    arrival, drop, ge_state = link.transmit(size, now)
                    row = shaper_log.add(direction, now, size, len(frame), drop, arrival, ge_state, ip_id, digest)
                    if arrival is not None:
                        counter += 1
                        if header is not None:
                            frame = header + frame[12:]
                        heapq.heappush(pending, (arrival, counter, out, frame, row))
    finally:
        left.close()
        right.close()
        if log_path is not None:
            shaper_log.write(log_path)
    return shaper_log


# ---------------------------------------------------------------------------------------------- entry point

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m testbed.emulator.userspace_shaper CONFIG.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="userspace_shaper: %(message)s")
    config = json.loads(Path(argv[0]).read_text())
    stream_key = config.get("stream_key", [])
    if not isinstance(stream_key, list) or not all(isinstance(k, str) for k in stream_key):
        print(f"userspace_shaper: {argv[0]}: stream_key must be a list of strings, got {stream_key!r}",
              file=sys.stderr)
        return 2
    start_monotonic = config.get("start_monotonic")
    if start_monotonic is not None and (isinstance(start_monotonic, bool)
                                        or not isinstance(start_monotonic, (int, float))):
        print(f"userspace_shaper: {argv[0]}: start_monotonic must be a number of seconds, got {start_monotonic!r}",
              file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ready = threading.Event()
    ready_file = config.get("ready_file")
    try:
        # the ready file is written once the sockets are bound (see run_shaper's ready_event)
        if ready_file:
            threading.Thread(target=lambda: (ready.wait(), Path(ready_file).write_text(str(os.getpid()))),
                             daemon=True).start()
        result = run_shaper(config["left_if"], config["right_if"], link_params_from_dict(config.get("forward")),
                            link_params_from_dict(config.get("reverse")), int(config.get("seed", 0)),
                            config.get("log_path"), stop, size_basis=config.get("size_basis", "frame"),
                            ready_event=ready,
                            rewrite_macs={k: MacRewrite.from_json(v)
                                          for k, v in config.get("rewrite_macs", {}).items()},
                            stream_key=stream_key,
                            start_monotonic=None if start_monotonic is None else float(start_monotonic))
    except PermissionError as exc:
        print(f"userspace_shaper: needs root / CAP_NET_RAW in the router namespace: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"userspace_shaper: {exc}", file=sys.stderr)
        return 1
    log.info("stopped: %d shaped packets, counters %s", len(result), result.counters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
