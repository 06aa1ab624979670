"""netem shaper: the `Link` models as Linux qdisc trees on Mininet hosts, read back, verified and re-rated.

One direction of the bottleneck becomes two qdisc trees (the reverse direction mirrors them)::

    entry host egress (sender's interface for forward)      router egress towards the far host
    netem 1: root                                             htb 1: root stab overhead -42 default 1
      loss gemodel p r 1-h 1-k | loss random X%                 class 1:1 rate R ceil R burst 1514 cburst 1514
      delay D [J]  [rate 10gbit]  limit L                         bfifo 10: limit BYTES  (or pfifo limit N)

The sim order is loss -> drop-tail FIFO -> rate -> delay; here it is loss -> delay -> FIFO -> rate. Loss draws
are per packet (netem's Gilbert-Elliott chain advances per packet), so they do not depend on timing, and a
constant delay D only shifts every arrival at the FIFO by D: queue occupancy, drops and departures are the
sim's, shifted by D. Jitter does not commute: it is applied before the FIFO, so the FIFO sees jittered
arrivals (the sim jitters after the serializer); the jitter distribution itself is the sim's (netem draws
uniformly in [D-J, D+J) without a distribution table, and a negative delay sends at once, like the sim's
clamp at the departure).

Reordering: netem keeps its delay line sorted by send time, so jitter reorders packets. With netem's `rate`
option the kernel (netem_enqueue) takes the latest send time of the packets it still holds as reference:
send = max(now + delay, previous send) + len/rate, i.e. FIFO order, exactly the sim's `reorder = false`
rule. So `reorder = false` with jitter adds `rate 10gbit` (1.2 us per 1514-byte frame, negligible).

Where each limit is enforced:
- netem `limit` counts packets held in netem (waiting out their delay), not a bottleneck queue. It is sized
  so it never drops: 10x the highest link rate (1 Gbit/s without a rate) times (delay + jitter), in 60-byte
  frames, at least netem's default 1000. Larger is free: memory is used only by packets actually held.
- The sim's drop-tail FIFO is the htb leaf at the router: `bfifo` admits a packet when backlog + its length
  <= limit, and the backlog excludes the packet htb has already dequeued (the one "in service"), as the sim's
  queue does. `pfifo` admits when fewer than `limit` packets wait. A qdisc holds one leaf, so with both
  limits set the one binding for full-size (1472-byte) datagrams is kept and the plan notes the other. (TBF
  is not used: under netem its internal byte FIFO is replaced and its limit lost.)
- Lengths: a qdisc on a veth sees the Ethernet frame (UDP payload + 8 + 20 + 14 header bytes, no FCS or
  preamble); the sim charges the UDP payload. The router's root qdisc therefore carries a size table
  (`stab overhead -42`): qdisc_pkt_len, which htb charges against the rate and the fifo adds to its backlog,
  is then the UDP payload of an IPv4 datagram without options, and the rate and byte limit mean what they
  mean in the sim. (Other frames are undercounted by 42 bytes; the topology has no others: static
  neighbours, no IPv6.) The read-back (`tc -d`) checks the table too.

htb burst: htb lets a packet leave when its tokens are >= 0, then charges it len/rate of tokens (tokens are time,
capped at burst/rate). Burst 0 would already serialize like the sim, but dequeues run from timers and softirqs that
are late by tens of microseconds, and a bucket capped at 0 loses that lateness for good, so the achieved rate would
fall short. A bucket of 1514 bytes (more than the largest datagram, 1472 payload bytes as the size table counts it)
absorbs a dequeue late by up to one transmission time; the cost is that after idling two packets may leave back to
back (at most 1514 bytes earlier than the sim). htb releases a packet at the start of its transmission time, the
sim delivers it at the end: every packet arrives len/rate earlier than in the sim.

Rate traces become run-time `tc class change ... htb rate` commands from a thread (`NetemShaper.start`).
htb keeps a class's tokens across a change, so the packet being served at a change is charged at the old
rate (the sim integrates the rate over the boundary). Delivery traces (Mahimahi) become a piecewise-constant
rate over DELIVERY_WINDOW_S windows: a window with n opportunities carries n x 1504 bytes. A zero rate
cannot be expressed: a packet htb releases at a tiny rate leaves a debt of len/rate that survives the next
change, so zero-rate steps, empty windows and non-looping traces (rate 0 after the end) are refused.

Read-back: iproute2 prints netem percentages in JSON as fractions and times in seconds with "%g" (6
significant digits), and the kernel stores percentages as u32 fractions, so floats compare with a relative
tolerance of 1e-5. htb classes have no JSON output in iproute2 6.1, so `tc class show` text is parsed; it
prints rates with integer-divided SI units (<= 0.1 % low) and bursts through psched ticks.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testbed.emulator.link import (
    BernoulliParams,
    ConstantRateParams,
    DeliveryTraceParams,
    IntervalTraceParams,
    LinkParams,
    PacketTraceParams,
    RateScheduleParams,
)
from testbed.emulator.loss import GilbertElliottParams
from testbed.emulator.serializer import MAHIMAHI_OPPORTUNITY_BYTES

ROUTER = "router"
ROOT = "root"
NETEM_HANDLE = "1:"
HTB_HANDLE = "1:"
HTB_CLASS = "1:1"
LEAF_HANDLE = "10:"
FIFO_ROOT_HANDLE = "1:"

MTU_FRAME_BYTES = 1514  # 1500-byte IP packet + 14-byte Ethernet header, as qdiscs on a veth count it
# Ethernet (14) + IPv4 (20) + UDP (8) headers: a size table (stab) with this negative overhead makes htb and the
# fifo under it count a datagram's UDP payload, which is what the sim and the userspace shaper charge.
UDP_FRAME_OVERHEAD = 42
STAB_ARGS = ("stab", "overhead", str(-UDP_FRAME_OVERHEAD))
MTU_PAYLOAD_BYTES = MTU_FRAME_BYTES - UDP_FRAME_OVERHEAD
HTB_BURST_BYTES = MTU_FRAME_BYTES  # above the largest datagram: absorbs one late dequeue (see above)
MIN_FRAME_BYTES = 60  # smallest Ethernet frame without FCS: bounds the packets netem may hold
NETEM_DEFAULT_LIMIT = 1000
OVERLOAD_FACTOR = 10  # the entry host may offer this many times the link rate
UNSHAPED_PEAK_BPS = 1e9
NO_REORDER_RATE = "10gbit"
NO_REORDER_RATE_BYTES_PER_S = 1_250_000_000
DELIVERY_WINDOW_S = 0.1
FLOAT_TOLERANCE = 1e-5  # iproute2's "%g" keeps 6 significant digits
RATE_TOLERANCE = 0.002  # text rates are integer-divided SI units (<= 0.1 %) of bytes/s (<= 8 bit/s)
BURST_TOLERANCE_BYTES = 16  # psched-tick rounding, and sprint_size's "Kb" rounding window
NETEM_IMPAIRMENTS = ("delay", "loss-random", "loss-state", "loss-gemodel", "duplicate", "reorder", "corrupt",
                     "rate", "slot", "ecn")
PROBE_TIMEOUT_S = 10.0
TC_TIMEOUT_S = 20.0

Run = Callable[[str, Sequence[str]], subprocess.CompletedProcess]
OptionValue = float | int | str


class NetemUnsupported(ValueError):
    """The link cannot be expressed with netem/htb; the message lists every reason."""


class QdiscMismatch(RuntimeError):
    """A qdisc read back differs from what was installed."""


class TcFailed(RuntimeError):
    """A tc command failed; the message names the host, the command and tc's stderr."""


class ProbeFailed(RuntimeError):
    """The throwaway namespace for a qdisc probe could not be created."""


@dataclass(frozen=True)
class TcCommand:
    """One tc invocation inside a host ("sender" | "router" | "receiver"); argv starts with "tc"."""

    host: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class ExpectedQdisc:
    """One installed qdisc as `tc -j qdisc show` prints it: option paths like "loss-gemodel.p" -> value."""

    host: str
    dev: str
    kind: str
    handle: str
    parent: str  # ROOT or a class id
    options: tuple[tuple[str, OptionValue], ...]
    stab_overhead: int | None = None  # the size table's overhead (root qdiscs at the router), None: no table


@dataclass(frozen=True)
class ExpectedClass:
    """The htb class that carries the link rate (ceil = rate, cburst = burst)."""

    host: str
    dev: str
    classid: str
    rate_bps: int
    burst_bytes: int


@dataclass(frozen=True)
class DirectionPlan:
    """Everything tc does for one direction: install commands, expected read-back and scheduled rate changes."""

    direction: str
    commands: tuple[TcCommand, ...]
    expected: tuple[ExpectedQdisc, ...]
    rate_changes: tuple[tuple[float, float], ...]  # (time_s, kbps) after t0, within the first period
    rate_period_s: float | None = None  # the changes (and the initial rate at 0) repeat with this period
    htb_class: ExpectedClass | None = None
    notes: tuple[str, ...] = field(default=())

    def devices(self) -> list[tuple[str, str]]:
        """(host, dev) pairs this plan installs qdiscs on, in install order."""
        return list(dict.fromkeys((e.host, e.dev) for e in self.expected))


# ----------------------------------------------------------------------------------------- validation


def unsupported_by_netem(params: LinkParams) -> list[str]:
    """Reasons (naming the spec key) why netem/htb cannot reproduce `params`; empty when it can."""
    reasons = []
    loss = params.loss
    if isinstance(loss, GilbertElliottParams) and loss.clock != "packet":
        reasons.append(f'loss.clock = "{loss.clock}": netem\'s Gilbert-Elliott advances per packet; '
                       "use the userspace shaper")
    if isinstance(loss, PacketTraceParams):
        reasons.append('loss.model = "trace" (format "packets"): netem cannot replay recorded per-packet '
                       "outcomes; use the userspace shaper")
    if isinstance(loss, IntervalTraceParams):
        reasons.append('loss.model = "trace" (format "intervals"): netem cannot replay timed loss '
                       "intervals; use the userspace shaper")
    rate = params.rate
    if isinstance(rate, RateScheduleParams):
        zero = [float(t) for t, k in zip(rate.times_s, rate.kbps) if k <= 0]
        if zero:
            reasons.append(f"rate.trace: rate 0 at t = {_seconds_list(zero)}: htb cannot pause a class "
                           "(a packet released at a tiny rate leaves a debt that outlives the next change); "
                           "use the userspace shaper")
    if isinstance(rate, DeliveryTraceParams):
        reasons.extend(_delivery_trace_problems(rate))
    return reasons


def _seconds_list(times: Sequence[float], shown: int = 5) -> str:
    text = ", ".join(f"{t:g} s" for t in times[:shown])
    return text + (f" and {len(times) - shown} more" if len(times) > shown else "")


def _delivery_trace_problems(rate: DeliveryTraceParams) -> list[str]:
    ms = rate.opportunities_ms
    if len(ms) == 0 or int(ms[-1]) <= 0:
        return ["rate.trace: a Mahimahi trace needs a last timestamp > 0 ms (its period)"]
    reasons = []
    if not rate.loop:
        reasons.append("rate.once = true: after the trace ends the link stops (rate 0), which htb cannot "
                       "do; use the userspace shaper")
    empty = [start for start, _end, kbps in delivery_windows(ms) if kbps == 0]
    if empty:
        reasons.append(f"rate.trace: no delivery opportunity in the {DELIVERY_WINDOW_S * 1000:g} ms windows "
                       f"starting at {_seconds_list(empty)}: htb cannot pause a class; use the userspace shaper")
    return reasons


# ----------------------------------------------------------------------------------------- rate traces


def delivery_windows(opportunities_ms: np.ndarray, window_s: float = DELIVERY_WINDOW_S
                     ) -> list[tuple[float, float, float]]:
    """One trace period as (start_s, end_s, kbps) windows: n opportunities in a window carry n x 1504 bytes.

    Mahimahi repeats the trace with period P = last timestamp, so the opportunity at P is the one at 0 of
    the next cycle: times are taken modulo P (the very first cycle lacks that one opportunity at 0). The
    last window is shorter when P is not a multiple of the window; each window's rate is its bytes over its
    own length, so the mean rate is the trace's exactly.
    """
    period_ms = int(opportunities_ms[-1])
    window_ms = window_s * 1000.0
    count = math.ceil(period_ms / window_ms)
    bins = np.bincount((np.asarray(opportunities_ms, dtype=np.int64) % period_ms // window_ms).astype(np.int64),
                       minlength=count)
    windows = []
    for index in range(count):
        start_ms, end_ms = index * window_ms, min((index + 1) * window_ms, period_ms)
        kbps = bins[index] * MAHIMAHI_OPPORTUNITY_BYTES * 8 / (end_ms - start_ms)  # bytes*8/ms = kbit/s
        windows.append((start_ms / 1000.0, end_ms / 1000.0, float(kbps)))
    return windows


def rate_timeline(rate: ConstantRateParams | RateScheduleParams | DeliveryTraceParams
                  ) -> tuple[float, tuple[tuple[float, float], ...], float | None]:
    """(initial kbps, later (time_s, kbps) changes of the first period, repeat period or None)."""
    if isinstance(rate, ConstantRateParams):
        return float(rate.kbps), (), None
    if isinstance(rate, RateScheduleParams):
        steps = [(float(t), float(k)) for t, k in zip(rate.times_s, rate.kbps)]
        period = None
    else:
        steps = [(start, kbps) for start, _end, kbps in delivery_windows(rate.opportunities_ms)]
        period = float(rate.opportunities_ms[-1]) / 1000.0
    initial = steps[0][1]  # RateSchedule holds its first rate before its first time, too
    changes, current = [], initial
    for time_s, kbps in steps[1:]:
        if kbps != current:  # equal consecutive windows need no tc call
            changes.append((time_s, kbps))
            current = kbps
    return initial, tuple(changes), period


# ----------------------------------------------------------------------------------------- planning


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.10g}%"


def _time(seconds: float) -> str:
    us = round(seconds * 1e6)
    return f"{us // 1000}ms" if us % 1000 == 0 else f"{us}us"


def _rate_bps(kbps: float) -> int:
    return round(kbps * 1000)


def _rate_arg(kbps: float) -> str:
    bps = _rate_bps(kbps)
    return f"{bps // 1000}kbit" if bps % 1000 == 0 else f"{bps}bit"


def netem_limit(params: LinkParams) -> int:
    """netem's packet limit: enough for everything the entry host can offer during delay + jitter."""
    hold_s = params.delay_s + params.jitter_s
    peak_bps = OVERLOAD_FACTOR * _max_kbps(params) * 1000 if params.rate is not None else UNSHAPED_PEAK_BPS
    # round first: 1e9 * 0.03 / 480 is 62500.000000000007 in floating point
    return max(NETEM_DEFAULT_LIMIT, math.ceil(round(peak_bps * hold_s / (8 * MIN_FRAME_BYTES), 6)))


def _max_kbps(params: LinkParams) -> float:
    initial, changes, _period = rate_timeline(params.rate)
    return max([initial, *(kbps for _t, kbps in changes)])


def _netem_parts(params: LinkParams) -> tuple[list[str], list[tuple[str, OptionValue]]]:
    """netem arguments after `netem`, and the options `tc -j` prints back for them."""
    args: list[str] = []
    options: list[tuple[str, OptionValue]] = []
    loss = params.loss
    if isinstance(loss, GilbertElliottParams):
        args += ["loss", "gemodel", _percent(loss.p), _percent(loss.r), _percent(loss.loss_bad),
                 _percent(loss.loss_good)]
        options += [("loss-gemodel.p", loss.p), ("loss-gemodel.r", loss.r), ("loss-gemodel.1-h", loss.loss_bad),
                    ("loss-gemodel.1-k", loss.loss_good)]
    elif isinstance(loss, BernoulliParams) and loss.rate > 0:
        args += ["loss", "random", _percent(loss.rate)]
        options.append(("loss-random.loss", loss.rate))
    if params.delay_s > 0 or params.jitter_s > 0:
        args += ["delay", _time(params.delay_s)] + ([_time(params.jitter_s)] if params.jitter_s > 0 else [])
        if params.delay_s > 0:  # iproute2 prints no delay object for a zero delay, whatever the jitter
            options += [("delay.delay", params.delay_s), ("delay.jitter", params.jitter_s)]
    if params.jitter_s > 0 and not params.reorder:
        args += ["rate", NO_REORDER_RATE]
        options.append(("rate.rate", NO_REORDER_RATE_BYTES_PER_S))
    if not args:
        return [], []
    limit = netem_limit(params)
    return [*args, "limit", str(limit)], [("limit", limit), *options]


def _fifo(params: LinkParams) -> tuple[list[str], tuple[tuple[str, OptionValue], ...], str, list[str]]:
    """(fifo argv, read-back options, kind, notes) for the drop-tail queue; kind "" when unlimited."""
    by_bytes, by_packets = params.queue_bytes, params.queue_packets
    notes = []
    if by_bytes is not None and by_packets is not None:
        if by_bytes <= by_packets * MTU_PAYLOAD_BYTES:
            notes.append(f"queue: bytes = {by_bytes} is enforced (bfifo), packets = {by_packets} is not: a qdisc "
                         f"holds one limit and the byte limit binds first for {MTU_PAYLOAD_BYTES}-byte datagrams")
            by_packets = None
        else:
            notes.append(f"queue: packets = {by_packets} is enforced (pfifo), bytes = {by_bytes} is not: a qdisc "
                         f"holds one limit and the packet limit binds first for {MTU_PAYLOAD_BYTES}-byte datagrams")
            by_bytes = None
    if by_bytes is not None:
        return ["bfifo", "limit", str(by_bytes)], (("limit", by_bytes),), "bfifo", notes
    if by_packets is not None:
        return ["pfifo", "limit", str(by_packets)], (("limit", by_packets),), "pfifo", notes
    return [], (), "", notes


def htb_class_argv(verb: str, dev: str, kbps: float) -> tuple[str, ...]:
    """`tc class add|change` for the rate class; rate and burst are restated every time."""
    rate, burst = _rate_arg(kbps), str(HTB_BURST_BYTES)
    return ("tc", "class", verb, "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, "htb", "rate", rate,
            "ceil", rate, "burst", burst, "cburst", burst)


def needs_netem_qdisc(params: LinkParams) -> bool:
    """Whether the direction needs a netem qdisc at all (loss, delay or jitter), not only htb and a fifo."""
    return bool(_netem_parts(params)[0])


def plan_direction(direction: str, params: LinkParams, *, entry_host: str, entry_if: str,
                   bottleneck_if: str) -> DirectionPlan:
    """The qdisc trees for one direction: netem at the entry host's egress, htb + fifo at the router's."""
    problems = unsupported_by_netem(params)
    if problems:
        raise NetemUnsupported(f"{direction}: " + "; ".join(problems))
    commands: list[TcCommand] = []
    expected: list[ExpectedQdisc] = []
    netem_args, netem_options = _netem_parts(params)
    if netem_args:
        commands.append(TcCommand(entry_host, ("tc", "qdisc", "replace", "dev", entry_if, "root", "handle",
                                               NETEM_HANDLE, "netem", *netem_args)))
        expected.append(ExpectedQdisc(entry_host, entry_if, "netem", NETEM_HANDLE, ROOT, tuple(netem_options)))
    fifo_args, fifo_options, fifo_kind, notes = _fifo(params)
    htb_class = None
    changes: tuple[tuple[float, float], ...] = ()
    period = None
    if params.rate is not None:
        initial, changes, period = rate_timeline(params.rate)
        commands += [
            TcCommand(ROUTER, ("tc", "qdisc", "replace", "dev", bottleneck_if, "root", "handle", HTB_HANDLE,
                               *STAB_ARGS, "htb", "default", "1")),
            TcCommand(ROUTER, htb_class_argv("add", bottleneck_if, initial)),
        ]
        expected.append(ExpectedQdisc(ROUTER, bottleneck_if, "htb", HTB_HANDLE, ROOT, (("default", "0x1"),),
                                      -UDP_FRAME_OVERHEAD))
        htb_class = ExpectedClass(ROUTER, bottleneck_if, HTB_CLASS, _rate_bps(initial), HTB_BURST_BYTES)
        if fifo_kind:
            commands.append(TcCommand(ROUTER, ("tc", "qdisc", "add", "dev", bottleneck_if, "parent", HTB_CLASS,
                                               "handle", LEAF_HANDLE, *fifo_args)))
            expected.append(ExpectedQdisc(ROUTER, bottleneck_if, fifo_kind, LEAF_HANDLE, HTB_CLASS, fifo_options))
        else:
            notes.append("queue: unlimited in the spec; htb's default leaf (pfifo, limit = the device's txqueuelen) "
                         "holds the backlog")
    elif fifo_kind:
        commands.append(TcCommand(ROUTER, ("tc", "qdisc", "replace", "dev", bottleneck_if, "root", "handle",
                                           FIFO_ROOT_HANDLE, *STAB_ARGS, *fifo_args)))
        expected.append(ExpectedQdisc(ROUTER, bottleneck_if, fifo_kind, FIFO_ROOT_HANDLE, ROOT, fifo_options,
                                      -UDP_FRAME_OVERHEAD))
        notes.append("queue: without a rate nothing waits, so the fifo never fills (as in the sim)")
    if params.jitter_s > 0:
        notes.append("jitter is applied before the bottleneck FIFO (the sim applies it after the serializer)")
    return DirectionPlan(direction, tuple(commands), tuple(expected), changes, period, htb_class, tuple(notes))


# ----------------------------------------------------------------------------------------- verification


_MISSING = object()


def _lookup(options: Mapping[str, Any], path: str) -> Any:
    value: Any = options
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _same(asked: OptionValue, got: Any) -> bool:
    if isinstance(asked, str) or isinstance(got, str):
        return str(asked) == str(got)
    if isinstance(asked, int) and isinstance(got, int):
        return asked == got
    return math.isclose(float(asked), float(got), rel_tol=FLOAT_TOLERANCE, abs_tol=1e-9)


def _qdisc_problems(exp: ExpectedQdisc, rows: list[dict]) -> list[str]:
    where = f"{exp.host} dev {exp.dev}"
    row = next((r for r in rows if r.get("handle") == exp.handle), None)
    if row is None:
        found = ", ".join(f"{r.get('kind')} {r.get('handle')}" for r in rows) or "nothing"
        return [f"{where}: {exp.kind} {exp.handle} is missing (read back: {found})"]
    name = f"{where}: {exp.kind} {exp.handle}"
    if row.get("kind") != exp.kind:
        return [f"{where}: qdisc {exp.handle} kind: asked {exp.kind}, read back {row.get('kind')}"]
    parent = ROOT if row.get("root") else row.get("parent")
    problems = [] if parent == exp.parent else [f"{name} parent: asked {exp.parent}, read back {parent}"]
    overhead = row.get("stab", {}).get("overhead")
    if overhead != exp.stab_overhead:
        problems.append(f"{name} stab overhead: asked {exp.stab_overhead}, read back {overhead}")
    options = row.get("options", {})
    for path, asked in exp.options:
        got = _lookup(options, path)
        if got is _MISSING:
            problems.append(f"{name} option {path}: asked {asked}, read back nothing")
        elif not _same(asked, got):
            problems.append(f"{name} option {path}: asked {asked}, read back {got}")
    if exp.kind == "netem":
        asked_keys = {path.split(".")[0] for path, _ in exp.options}
        problems += [f"{name} option {key}: asked nothing, read back {options[key]}"
                     for key in NETEM_IMPAIRMENTS if key in options and key not in asked_keys]
    return problems


_CLASS_FIELDS = re.compile(r"\brate (\S+) ceil (\S+) burst (\S+) cburst (\S+)")
_RATE_UNITS = {"bit": 1, "Kbit": 1e3, "Mbit": 1e6, "Gbit": 1e9, "Tbit": 1e12}
_SIZE_UNITS = {"b": 1, "Kb": 1024, "Mb": 1024 * 1024}


def _parse_unit(text: str, units: Mapping[str, float]) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]+)", text)
    if match is None or match.group(2) not in units:
        raise QdiscMismatch(f"cannot parse {text!r} in tc class output")
    return float(match.group(1)) * units[match.group(2)]


def parse_htb_class(text: str, classid: str) -> dict[str, float] | None:
    """rate/ceil (bit/s) and burst/cburst (bytes) of `class htb CLASSID` in `tc class show` text."""
    for line in text.splitlines():
        if line.startswith(f"class htb {classid} "):
            match = _CLASS_FIELDS.search(line)
            if match is None:
                raise QdiscMismatch(f"cannot parse tc class line {line!r}")
            rate, ceil, burst, cburst = match.groups()
            return {"rate": _parse_unit(rate, _RATE_UNITS), "ceil": _parse_unit(ceil, _RATE_UNITS),
                    "burst": _parse_unit(burst, _SIZE_UNITS), "cburst": _parse_unit(cburst, _SIZE_UNITS)}
    return None


def _class_problems(exp: ExpectedClass, text: str, rate_bps: int) -> list[str]:
    name = f"{exp.host} dev {exp.dev}: htb class {exp.classid}"
    got = parse_htb_class(text, exp.classid)
    if got is None:
        return [f"{name} is missing"]
    problems = [f"{name} option {key}: asked {rate_bps}bit, read back {got[key]:.0f}bit"
                for key in ("rate", "ceil") if not math.isclose(got[key], rate_bps, rel_tol=RATE_TOLERANCE)]
    problems += [f"{name} option {key}: asked {exp.burst_bytes}b, read back {got[key]:.0f}b"
                 for key in ("burst", "cburst") if abs(got[key] - exp.burst_bytes) > BURST_TOLERANCE_BYTES]
    return problems


def verify(plan: DirectionPlan, read_back: Callable[[str, str], list[dict]],
           read_classes: Callable[[str, str], str] | None = None, *, rate_kbps: float | None = None) -> None:
    """Compare the parsed `tc -s -d -j qdisc show` of every device (and `tc class show` text) with the plan."""
    problems = []
    for host, dev in plan.devices():
        rows = read_back(host, dev)
        problems += [p for exp in plan.expected if (exp.host, exp.dev) == (host, dev)
                     for p in _qdisc_problems(exp, rows)]
    if plan.htb_class is not None and read_classes is not None:
        exp = plan.htb_class
        rate_bps = exp.rate_bps if rate_kbps is None else _rate_bps(rate_kbps)
        problems += _class_problems(exp, read_classes(exp.host, exp.dev), rate_bps)
    if problems:
        raise QdiscMismatch(f"{plan.direction}: " + "; ".join(problems))


# ----------------------------------------------------------------------------------------- the shaper


def _timeline(plan: DirectionPlan) -> Iterator[tuple[float, str, float]]:
    """(time_s, direction, kbps) of every scheduled change, repeating a periodic plan forever."""
    yield from ((t, plan.direction, kbps) for t, kbps in plan.rate_changes)
    if not plan.rate_changes or plan.rate_period_s is None or plan.htb_class is None:
        return  # a period without changes is a constant rate
    initial = plan.htb_class.rate_bps / 1000.0
    last = plan.rate_changes[-1][1]
    cycle = 1
    while True:
        offset = cycle * plan.rate_period_s
        if last != initial:
            yield offset, plan.direction, initial
        yield from ((offset + t, plan.direction, kbps) for t, kbps in plan.rate_changes)
        cycle += 1


def _percentiles_ms(lags_ms: list[float]) -> dict[str, float | int]:
    if not lags_ms:
        return {"count": 0}
    values = np.asarray(lags_ms)
    return {"count": len(lags_ms), "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max())}


class NetemShaper:
    """Installs both directions' qdiscs, verifies them, applies scheduled rate changes, and reports tc statistics."""

    def __init__(self, forward: DirectionPlan, reverse: DirectionPlan, run: Run):
        self.plans = (forward, reverse)
        self._run = run
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_monotonic = 0.0
        self.rate_changes: list[dict[str, Any]] = []

    def _tc(self, host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
        proc = self._run(host, argv)
        if proc.returncode != 0:
            raise TcFailed(f"{host}: `{' '.join(argv)}` failed (exit {proc.returncode}): {str(proc.stderr).strip()}")
        return proc

    def read_qdiscs(self, host: str, dev: str) -> list[dict]:
        """Parsed `tc -s -d -j qdisc show dev DEV` inside `host` (-d: with the size table)."""
        return json.loads(self._tc(host, ("tc", "-s", "-d", "-j", "qdisc", "show", "dev", dev)).stdout)

    def read_classes(self, host: str, dev: str) -> str:
        """`tc class show dev DEV` text inside `host` (iproute2 6.1 prints no JSON for htb classes)."""
        return str(self._tc(host, ("tc", "class", "show", "dev", dev)).stdout)

    def install(self) -> dict:
        """Run every command, read everything back and verify it; a JSON-able description of the trees."""
        for plan in self.plans:
            for command in plan.commands:
                self._tc(command.host, command.argv)
        for plan in self.plans:
            verify(plan, self.read_qdiscs, self.read_classes)
        return {plan.direction: {
            "commands": [{"host": c.host, "argv": list(c.argv)} for c in plan.commands],
            "read_back": {f"{host}:{dev}": self.read_qdiscs(host, dev) for host, dev in plan.devices()},
            "rate_changes": [list(change) for change in plan.rate_changes],
            "rate_period_s": plan.rate_period_s,
            "notes": list(plan.notes),
            "tree": describe_tree(plan),
        } for plan in self.plans}

    def start(self, start_monotonic: float) -> None:
        """Start the thread applying each plan's rate changes at start_monotonic + time_s."""
        self._start_monotonic = start_monotonic
        timeline = heapq.merge(*(_timeline(plan) for plan in self.plans))
        self._thread = threading.Thread(target=self._apply, args=(timeline,), name="netem-rate-changes", daemon=True)
        self._thread.start()

    def _apply(self, timeline: Iterator[tuple[float, str, float]]) -> None:
        plans = {plan.direction: plan for plan in self.plans}
        for time_s, direction, kbps in timeline:
            if self._stop.wait(max(0.0, self._start_monotonic + time_s - time.monotonic())):
                return
            exp = plans[direction].htb_class
            assert exp is not None  # only plans with a rate have changes
            issued = time.monotonic()
            proc = self._run(exp.host, htb_class_argv("change", exp.dev, kbps))
            returned = time.monotonic()
            self.rate_changes.append({
                "direction": direction, "kbps": kbps, "scheduled_s": time_s,
                "issued_s": issued - self._start_monotonic, "returned_s": returned - self._start_monotonic,
                "lag_ms": (returned - self._start_monotonic - time_s) * 1000.0,
                "error": None if proc.returncode == 0 else str(proc.stderr).strip(),
            })

    def stop(self) -> dict:
        """Stop the thread; tc -s statistics per device/qdisc and the rate-change lag records."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        qdiscs = []
        for plan in self.plans:
            for host, dev in plan.devices():
                qdiscs += [{"direction": plan.direction, "host": host, "dev": dev, "kind": row.get("kind"),
                            "handle": row.get("handle"), "sent_bytes": row.get("bytes"),
                            "sent_packets": row.get("packets"), "dropped": row.get("drops"),
                            "overlimits": row.get("overlimits"), "backlog_bytes": row.get("backlog"),
                            "qlen": row.get("qlen")} for row in self.read_qdiscs(host, dev)]
        records = list(self.rate_changes)
        return {"qdiscs": qdiscs, "rate_changes": records,
                "rate_change_lag_ms": _percentiles_ms([r["lag_ms"] for r in records if r["error"] is None]),
                "failed_rate_changes": sum(r["error"] is not None for r in records)}


def describe_tree(plan: DirectionPlan) -> str:
    """A human-readable tree of one direction's qdiscs, rate schedule and notes."""
    lines = [f"{plan.direction}:"]
    for command in plan.commands:
        argv = command.argv
        dev = argv[argv.index("dev") + 1]
        depth = 2 if "parent" in argv and argv[1] == "qdisc" else 1 if argv[1] == "class" else 0
        shown = [a for i, a in enumerate(argv[3:], start=3) if a != "dev" and argv[i - 1] != "dev"]
        lines.append(f"  {command.host} {dev}: " + "  " * depth + " ".join(shown))
    if plan.rate_changes or plan.rate_period_s:
        repeat = f", repeating every {plan.rate_period_s:g} s" if plan.rate_period_s else ""
        lines.append(f"  rate changes: {len(plan.rate_changes)} in the first period{repeat}")
    lines += [f"  note: {note}" for note in plan.notes]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- probing


def run_quiet(argv: Sequence[str], timeout_s: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """Run argv without a shell; (succeeded, stderr or the reason it could not run)."""
    argv = list(argv)
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s:g}s: {' '.join(argv)}"
    except OSError as exc:
        return False, f"{argv[0]}: {exc.strerror or exc}"
    return proc.returncode == 0, proc.stderr.strip()


def probe_qdiscs_in_namespace(qdiscs: Mapping[str, Sequence[str]], ip: str, tc: str,
                              namespace_prefix: str) -> dict[str, tuple[bool, str]]:
    """Try each qdisc for real on `lo` of a throwaway namespace; name -> (accepted, tc's error)."""
    namespace = f"{namespace_prefix}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        created, error = run_quiet([ip, "netns", "add", namespace])
        if not created:
            raise ProbeFailed(f"ip netns add failed: {error}")
        # `lo` always exists, whereas `type dummy` needs a driver some kernels lack (this dev machine's
        # does); `replace` lets the next kind take over the root slot.
        results = {}
        for name, args in qdiscs.items():
            ok, error = run_quiet([ip, "netns", "exec", namespace, tc, "qdisc", "replace", "dev", "lo", "root",
                                   *args])
            results[name] = (ok, "accepted" if ok else error or "tc failed without a message")
        return results
    finally:
        # Also covers a failed or interrupted `netns add`; deleting a missing namespace is harmless.
        run_quiet([ip, "netns", "delete", namespace])


def netem_available() -> tuple[bool, str]:
    """Whether this kernel takes a netem qdisc (tried in a throwaway namespace); (ok, detail)."""
    ip, tc = shutil.which("ip"), shutil.which("tc")
    if os.geteuid() != 0:
        return False, "cannot probe: not running as root"
    if ip is None or tc is None:
        return False, "cannot probe: ip or tc not on PATH"
    try:
        ok, detail = probe_qdiscs_in_namespace({"netem": ["netem", "delay", "1ms"]}, ip, tc, "tbnetem-")["netem"]
    except ProbeFailed as exc:
        return False, f"cannot probe: {exc}"
    return ok, detail if not ok else "kernel accepts the netem qdisc"
