"""Tests for the netem shaper: exact tc argument lists, rate traces, read-back verification, and real qdiscs.

Fixtures: `netem_router_htb_bfifo.json`, `netem_router_pfifo.json` and `netem_router_htb_class.txt` were
recorded on this machine (iproute2 6.1, `tc -s -d -j qdisc show`, `tc class show`) from the plans built in the
tests below; `netem_entry_ge_delay.json` was built from iproute2 v6.1.0's netem print function (its "source"
key says how), since this kernel has no sch_netem.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from testbed.emulator import netem
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
from testbed.emulator.netem import (
    DirectionPlan,
    NetemShaper,
    NetemUnsupported,
    QdiscMismatch,
    TcFailed,
    delivery_windows,
    describe_tree,
    htb_class_argv,
    netem_available,
    netem_limit,
    plan_direction,
    rate_timeline,
    unsupported_by_netem,
    verify,
)

FIXTURES = Path(__file__).parent / "fixtures"
GE = GilbertElliottParams(p=0.068, r=0.5, loss_bad=1.0, loss_good=0.0)
EMPTY_REVERSE = DirectionPlan("reverse", (), (), ())


def _plan(params: LinkParams) -> DirectionPlan:
    return plan_direction("forward", params, entry_host="sender", entry_if="s-0", bottleneck_if="r-r")


def _argvs(plan: DirectionPlan) -> list[tuple[str, list[str]]]:
    return [(c.host, list(c.argv)) for c in plan.commands]


# --- exact argument lists ----------------------------------------------------------------------------


@pytest.mark.parametrize(("fraction", "text"), [(0.068, "6.8%"), (0.5, "50%"), (1.0, "100%"), (0.0, "0%"),
                                                (0.0012345, "0.12345%"), (1 / 3, "33.33333333%")])
def test_percent_formatting(fraction: float, text: str) -> None:
    plan = _plan(LinkParams(loss=BernoulliParams(fraction))) if fraction else None
    if plan is not None:
        assert plan.commands[0].argv[-3] == text
    assert netem._percent(fraction) == text


def test_gilbert_elliott_with_delay() -> None:
    plan = _plan(LinkParams(delay_s=0.025, loss=GE))
    assert _argvs(plan) == [("sender", ["tc", "qdisc", "replace", "dev", "s-0", "root", "handle", "1:", "netem",
                                        "loss", "gemodel", "6.8%", "50%", "100%", "0%", "delay", "25ms",
                                        "limit", "52084"])]
    assert plan.expected[0].options == (("limit", 52084), ("loss-gemodel.p", 0.068), ("loss-gemodel.r", 0.5),
                                        ("loss-gemodel.1-h", 1.0), ("loss-gemodel.1-k", 0.0),
                                        ("delay.delay", 0.025), ("delay.jitter", 0.0))
    assert plan.rate_changes == () and plan.htb_class is None


def test_gilbert_elliott_maps_loss_bad_to_1_minus_h_and_loss_good_to_1_minus_k() -> None:
    plan = _plan(LinkParams(loss=GilbertElliottParams(p=0.01, r=0.25, loss_bad=0.75, loss_good=0.002)))
    assert plan.commands[0].argv[9:15] == ("loss", "gemodel", "1%", "25%", "75%", "0.2%")


def test_bernoulli_loss() -> None:
    plan = _plan(LinkParams(loss=BernoulliParams(0.025)))
    assert plan.commands[0].argv[8:] == ("netem", "loss", "random", "2.5%", "limit", "1000")
    assert plan.expected[0].options == (("limit", 1000), ("loss-random.loss", 0.025))


def test_delay_with_jitter_that_may_reorder() -> None:
    plan = _plan(LinkParams(delay_s=0.0405, jitter_s=0.0025, reorder=True))
    assert plan.commands[0].argv[8:] == ("netem", "delay", "40500us", "2500us", "limit", "89584")
    assert any("jitter is applied before the bottleneck FIFO" in note for note in plan.notes)


def test_jitter_without_reordering_adds_a_netem_rate() -> None:
    plan = _plan(LinkParams(delay_s=0.02, jitter_s=0.01, reorder=False))
    assert plan.commands[0].argv[8:] == ("netem", "delay", "20ms", "10ms", "rate", "10gbit", "limit", "62500")
    assert ("rate.rate", 1_250_000_000) in plan.expected[0].options


def test_netem_limit_covers_ten_times_the_rate_in_minimum_frames() -> None:
    # 10 x 2 Mbit/s x 0.25 s / (8 x 60 bytes) = 10416.7 packets
    assert netem_limit(LinkParams(delay_s=0.2, jitter_s=0.05, rate=ConstantRateParams(2000))) == 10417
    # a short delay stays at netem's default
    assert netem_limit(LinkParams(delay_s=0.01, rate=ConstantRateParams(2000))) == 1000
    # no rate: 1 Gbit/s x 0.1 s / 480 bytes
    assert netem_limit(LinkParams(delay_s=0.1)) == 208334
    # a schedule is sized by its highest step
    schedule = RateScheduleParams(np.array([0.0, 1.0]), np.array([1000.0, 4000.0]))
    assert netem_limit(LinkParams(delay_s=0.2, rate=schedule)) == 16667


def test_htb_with_bfifo() -> None:
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    assert _argvs(plan) == [
        ("router", ["tc", "qdisc", "replace", "dev", "r-r", "root", "handle", "1:", "stab", "overhead", "-42", "htb",
                    "default", "1"]),
        ("router", ["tc", "class", "add", "dev", "r-r", "parent", "1:", "classid", "1:1", "htb", "rate", "2000kbit",
                    "ceil", "2000kbit", "burst", "1514", "cburst", "1514"]),
        ("router", ["tc", "qdisc", "add", "dev", "r-r", "parent", "1:1", "handle", "10:", "bfifo", "limit", "10000"]),
    ]
    assert plan.htb_class == netem.ExpectedClass("router", "r-r", "1:1", 2_000_000, 1514)


def test_fractional_rate_is_given_in_bits() -> None:
    plan = _plan(LinkParams(rate=ConstantRateParams(120.32), queue_packets=5))
    assert plan.commands[1].argv[10:14] == ("rate", "120320bit", "ceil", "120320bit")
    assert plan.commands[2].argv[-3:] == ("pfifo", "limit", "5")


def test_fifo_root_without_rate() -> None:
    plan = _plan(LinkParams(queue_packets=25))
    assert _argvs(plan) == [("router", ["tc", "qdisc", "replace", "dev", "r-r", "root", "handle", "1:", "stab",
                                        "overhead", "-42", "pfifo", "limit", "25"])]


def test_no_shaping_at_all_installs_nothing() -> None:
    plan = _plan(LinkParams())
    assert plan.commands == () and plan.expected == ()


@pytest.mark.parametrize(("queue_bytes", "queue_packets", "kind", "limit", "dropped"), [
    (6000, 10, "bfifo", "6000", "packets = 10 is not"),      # 6000 <= 10 x 1514
    (60000, 10, "pfifo", "10", "bytes = 60000 is not"),      # 60000 > 10 x 1514
])
def test_both_limits_keep_the_stricter_for_full_frames(queue_bytes: int, queue_packets: int, kind: str,
                                                      limit: str, dropped: str) -> None:
    plan = _plan(LinkParams(rate=ConstantRateParams(1000), queue_bytes=queue_bytes, queue_packets=queue_packets))
    assert plan.commands[-1].argv[-3:] == (kind, "limit", limit)
    assert any(dropped in note for note in plan.notes)


# --- what netem cannot do ------------------------------------------------------------------------------


def test_unsupported_lists_every_reason_with_its_key() -> None:
    frame_clock = GilbertElliottParams(p=0.1, r=0.5, clock="frame")
    reasons = unsupported_by_netem(LinkParams(loss=frame_clock, rate=DeliveryTraceParams(np.array([5, 350]),
                                                                                         loop=False)))
    assert reasons == [
        'loss.clock = "frame": netem\'s Gilbert-Elliott advances per packet; use the userspace shaper',
        "rate.once = true: after the trace ends the link stops (rate 0), which htb cannot do; "
        "use the userspace shaper",
        "rate.trace: no delivery opportunity in the 100 ms windows starting at 0.1 s, 0.2 s, 0.3 s: htb cannot "
        "pause a class; use the userspace shaper",
    ]
    with pytest.raises(NetemUnsupported, match='forward: loss.clock = "frame"'):
        _plan(LinkParams(loss=frame_clock))


def test_loss_traces_and_zero_rates_are_unsupported() -> None:
    packets = unsupported_by_netem(LinkParams(loss=PacketTraceParams(np.array([0, 1]))))
    intervals = unsupported_by_netem(LinkParams(loss=IntervalTraceParams(np.array([[0.0, 1.0]]))))
    zero = unsupported_by_netem(LinkParams(rate=RateScheduleParams(np.array([0.0, 2.5]), np.array([800.0, 0.0]))))
    assert packets == ['loss.model = "trace" (format "packets"): netem cannot replay recorded per-packet outcomes; '
                       "use the userspace shaper"]
    assert intervals == ['loss.model = "trace" (format "intervals"): netem cannot replay timed loss intervals; '
                         "use the userspace shaper"]
    assert len(zero) == 1 and zero[0].startswith("rate.trace: rate 0 at t = 2.5 s: htb cannot pause a class")


def test_supported_links_have_no_reasons() -> None:
    assert unsupported_by_netem(LinkParams(delay_s=0.05, jitter_s=0.01, loss=GE, rate=ConstantRateParams(500),
                                           queue_bytes=3000)) == []


# --- rate traces -------------------------------------------------------------------------------------


def test_delivery_trace_windows_by_hand() -> None:
    # period 250 ms; 250 wraps to 0 (first opportunity of the next cycle).
    # window [0, 100): 0, 10, 20, 30 -> 4 x 1504 B x 8 / 100 ms = 481.28 kbit/s
    # window [100, 200): 150, 160 -> 240.64; window [200, 250): 210 -> 1504 x 8 / 50 ms = 240.64
    ms = np.array([10, 20, 30, 150, 160, 210, 250])
    windows = delivery_windows(ms)
    assert windows == [(0.0, 0.1, pytest.approx(481.28)), (0.1, 0.2, pytest.approx(240.64)),
                       (0.2, 0.25, pytest.approx(240.64))]
    mean_kbps = len(ms) * 1504 * 8 / 250
    assert sum((end - start) * kbps for start, end, kbps in windows) / 0.25 == pytest.approx(mean_kbps)
    initial, changes, period = rate_timeline(DeliveryTraceParams(ms))
    assert (initial, period) == (pytest.approx(481.28), 0.25)
    assert changes == ((0.1, pytest.approx(240.64)),)  # the equal last window needs no change


def test_rate_schedule_timeline_skips_repeated_rates() -> None:
    schedule = RateScheduleParams(np.array([0.0, 1.0, 2.0, 3.5]), np.array([800.0, 800.0, 400.0, 1200.0]))
    assert rate_timeline(schedule) == (800.0, ((2.0, 400.0), (3.5, 1200.0)), None)


# --- verification against fixtures ---------------------------------------------------------------------


def _fixture(name: str) -> list[dict]:
    data = json.loads((FIXTURES / name).read_text())
    return data["qdiscs"] if isinstance(data, dict) else data


def _netem_fixture_plan() -> DirectionPlan:
    return plan_direction("forward", LinkParams(delay_s=0.025, jitter_s=0.005, loss=GE), entry_host="sender",
                          entry_if="s-0", bottleneck_if="r-r")


def test_netem_fixture_matches_the_command_it_was_built_for() -> None:
    source = json.loads((FIXTURES / "netem_entry_ge_delay.json").read_text())["source"]
    assert "dev X " + " ".join(_netem_fixture_plan().commands[0].argv[5:]) in source


def test_verify_accepts_read_back_equal_to_plan() -> None:
    router = _fixture("netem_router_htb_bfifo.json")
    classes = (FIXTURES / "netem_router_htb_class.txt").read_text()
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    verify(plan, lambda host, dev: router, lambda host, dev: classes)
    verify(_plan(LinkParams(queue_packets=25)), lambda host, dev: _fixture("netem_router_pfifo.json"))


def test_verify_netem_fixture() -> None:
    entry = _fixture("netem_entry_ge_delay.json")
    verify(_netem_fixture_plan(), lambda host, dev: entry)


def _tampered(rows: list[dict], handle: str, **options: object) -> list[dict]:
    copy = json.loads(json.dumps(rows))
    for row in copy:
        if row["handle"] == handle:
            row["options"].update(options)
            for key, value in options.items():
                if value is None:
                    del row["options"][key]
    return copy


def test_verify_names_a_changed_bfifo_limit() -> None:
    router = _tampered(_fixture("netem_router_htb_bfifo.json"), "10:", limit=5000)
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    with pytest.raises(QdiscMismatch) as error:
        verify(plan, lambda host, dev: router)
    assert str(error.value) == "forward: router dev r-r: bfifo 10: option limit: asked 10000, read back 5000"


def test_verify_names_a_missing_size_table() -> None:
    router = _fixture("netem_router_htb_bfifo.json")
    del router[0]["stab"]
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    with pytest.raises(QdiscMismatch, match="router dev r-r: htb 1: stab overhead: asked -42, read back None"):
        verify(plan, lambda host, dev: router)


def test_verify_names_a_missing_gemodel_and_an_unexpected_loss() -> None:
    plan = _netem_fixture_plan()
    rows = _tampered(_fixture("netem_entry_ge_delay.json"), "1:",
                     **{"loss-gemodel": None, "loss-random": {"loss": 0.068}})
    with pytest.raises(QdiscMismatch) as error:
        verify(plan, lambda host, dev: rows)
    message = str(error.value)
    assert "sender dev s-0: netem 1: option loss-gemodel.p: asked 0.068, read back nothing" in message
    assert "option loss-gemodel.1-k: asked 0.0, read back nothing" in message
    assert "netem 1: option loss-random: asked nothing, read back {'loss': 0.068}" in message


def test_verify_names_a_wrong_kind_a_missing_qdisc_and_a_changed_class_rate() -> None:
    router = _fixture("netem_router_htb_bfifo.json")
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    as_pfifo = [router[0], {**router[1], "kind": "pfifo"}]
    with pytest.raises(QdiscMismatch, match="qdisc 10: kind: asked bfifo, read back pfifo"):
        verify(plan, lambda host, dev: as_pfifo)
    with pytest.raises(QdiscMismatch, match=r"bfifo 10: is missing \(read back: htb 1:\)"):
        verify(plan, lambda host, dev: router[:1])
    classes = (FIXTURES / "netem_router_htb_class.txt").read_text().replace("rate 2Mbit", "rate 1Mbit")
    with pytest.raises(QdiscMismatch, match="htb class 1:1 option rate: asked 2000000bit, read back 1000000bit"):
        verify(plan, lambda host, dev: router, lambda host, dev: classes)


def test_parse_htb_class_units() -> None:
    line = "class htb 1:1 root leaf 10: prio 0 rate 120320bit ceil 1203Kbit burst 1513b cburst 2Kb \n"
    assert netem.parse_htb_class(line, "1:1") == {"rate": 120320, "ceil": 1_203_000, "burst": 1513,
                                                  "cburst": 2048}
    assert netem.parse_htb_class(line, "1:2") is None


def test_describe_tree() -> None:
    plan = _plan(LinkParams(delay_s=0.025, loss=GE, rate=ConstantRateParams(2000), queue_bytes=10000))
    assert describe_tree(plan) == "\n".join([
        "forward:",
        "  sender s-0: root handle 1: netem loss gemodel 6.8% 50% 100% 0% delay 25ms limit 1042",
        "  router r-r: root handle 1: stab overhead -42 htb default 1",
        "  router r-r:   parent 1: classid 1:1 htb rate 2000kbit ceil 2000kbit burst 1514 cburst 1514",
        "  router r-r:     parent 1:1 handle 10: bfifo limit 10000",
    ])


# --- the shaper object with a fake runner ----------------------------------------------------------------


class FakeTc:
    """Records (host, argv); answers qdisc/class reads from fixtures; fails commands containing `fail`."""

    def __init__(self, qdiscs: list[dict], classes: str = "", fail: str | None = None, wanted: int = 0):
        self.calls: list[tuple[str, list[str]]] = []
        self.qdiscs, self.classes, self.fail = qdiscs, classes, fail
        self.changes: list[list[str]] = []
        self.enough = threading.Event()
        self.wanted = wanted

    def __call__(self, host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
        argv = list(argv)
        assert argv[0] == "tc", argv
        self.calls.append((host, argv))
        if self.fail is not None and self.fail in argv:
            return subprocess.CompletedProcess(argv, 2, "", "Error: Exclusivity flag on, cannot modify.\n")
        out = ""
        if argv[1:5] == ["-s", "-d", "-j", "qdisc"]:
            out = json.dumps(self.qdiscs)
        elif argv[1:3] == ["class", "show"]:
            out = self.classes
        elif argv[1:3] == ["class", "change"]:
            self.changes.append(argv)
            if len(self.changes) >= self.wanted:
                self.enough.set()
        return subprocess.CompletedProcess(argv, 0, out, "")


def test_install_runs_commands_then_verifies_and_describes() -> None:
    router = _fixture("netem_router_htb_bfifo.json")
    fake = FakeTc(router, (FIXTURES / "netem_router_htb_class.txt").read_text())
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    tree = NetemShaper(plan, EMPTY_REVERSE, fake).install()
    assert [argv for _host, argv in fake.calls[:3]] == [list(c.argv) for c in plan.commands]
    assert tree["forward"]["read_back"] == {"router:r-r": router}
    assert tree["forward"]["tree"] == describe_tree(plan)
    json.dumps(tree)  # JSON-able for environment.json


def test_install_names_the_failing_command_and_stderr() -> None:
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    with pytest.raises(TcFailed) as error:
        NetemShaper(plan, EMPTY_REVERSE, FakeTc([], fail="bfifo")).install()
    assert str(error.value) == ("router: `tc qdisc add dev r-r parent 1:1 handle 10: bfifo limit 10000` failed "
                                "(exit 2): Error: Exclusivity flag on, cannot modify.")


def test_rate_changes_follow_a_looping_delivery_trace() -> None:
    # period 200 ms: window 0 has 10, 20, 0 (= 200) -> 360.96 kbit/s, window 1 has 150 -> 120.32 kbit/s
    plan = _plan(LinkParams(rate=DeliveryTraceParams(np.array([10, 20, 150, 200])), queue_bytes=5000))
    assert plan.rate_changes == ((0.1, pytest.approx(120.32)),) and plan.rate_period_s == 0.2
    fake = FakeTc([], wanted=4)
    shaper = NetemShaper(plan, EMPTY_REVERSE, fake)
    shaper.start(netem.time.monotonic())
    assert fake.enough.wait(30), "the rate-change thread did not issue 4 changes"
    result = shaper.stop()
    first = result["rate_changes"][:4]
    assert [r["scheduled_s"] for r in first] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert [r["kbps"] for r in first] == pytest.approx([120.32, 360.96, 120.32, 360.96])
    assert fake.changes[:2] == [list(htb_class_argv("change", "r-r", 120.32)),
                                list(htb_class_argv("change", "r-r", 360.96))]
    assert all(r["error"] is None and r["direction"] == "forward" for r in first)
    assert result["rate_change_lag_ms"]["count"] == len(result["rate_changes"])
    assert result["failed_rate_changes"] == 0


def test_stop_without_schedule_reports_statistics() -> None:
    router = _fixture("netem_router_htb_bfifo.json")
    plan = _plan(LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000))
    shaper = NetemShaper(plan, EMPTY_REVERSE, FakeTc(router))
    shaper.start(0.0)
    result = shaper.stop()
    assert result["rate_changes"] == [] and result["rate_change_lag_ms"] == {"count": 0}
    assert [(q["kind"], q["handle"], q["dropped"]) for q in result["qdiscs"]] == [("htb", "1:", 0), ("bfifo", "10:", 0)]


# --- real qdiscs on this machine --------------------------------------------------------------------------


IP, TC = shutil.which("ip"), shutil.which("tc")
needs_root = pytest.mark.skipif(os.geteuid() != 0 or IP is None or TC is None,
                                reason="real qdiscs need root plus the ip and tc binaries")
A_IP, B_IP = "10.201.0.1", "10.201.0.2"
A_MAC, B_MAC = "02:00:00:00:20:01", "02:00:00:00:20:02"


def _namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.fixture
def veth_pair() -> Iterator[dict[str, str]]:
    """Two namespaces joined by one veth pair: `a` (sender + router roles) and `b` (receiver); always deleted."""
    prefix = f"tbnt{secrets.token_hex(3)}"
    names = {"a": f"{prefix}-a", "b": f"{prefix}-b"}
    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
            # No IPv6: router solicitations and MLD reports would pass the qdiscs too and blur the counts.
            subprocess.run(["ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                            "net.ipv6.conf.default.disable_ipv6=1"], check=True, timeout=10)
        subprocess.run(["ip", "-n", names["a"], "link", "add", "name", "va", "address", A_MAC, "type", "veth", "peer",
                        "name", "vb", "netns", names["b"], "address", B_MAC], check=True, timeout=10)
        # A static neighbour: no ARP request passes the qdiscs, so tc's counts are exactly our datagrams.
        subprocess.run(["ip", "-n", names["a"], "neigh", "replace", B_IP, "lladdr", B_MAC, "dev", "va", "nud",
                        "permanent"], check=True, timeout=10)
        for side, dev, address in (("a", "va", A_IP), ("b", "vb", B_IP)):
            subprocess.run(["ip", "-n", names[side], "addr", "add", f"{address}/30", "dev", dev], check=True, timeout=10)
            subprocess.run(["ip", "-n", names[side], "link", "set", dev, "up"], check=True, timeout=10)
            subprocess.run(["ip", "-n", names[side], "link", "set", "lo", "up"], check=True, timeout=10)
        yield names
    finally:
        for name in names.values():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)
        assert [n for n in _namespaces() if n.startswith(prefix)] == []


def _runner(names: dict[str, str]) -> netem.Run:
    hosts = {"sender": names["a"], "router": names["a"], "receiver": names["b"]}

    def run(host: str, argv: Sequence[str]) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", hosts[host], *argv], capture_output=True, text=True,
                              timeout=20, check=False)
    return run


RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind((sys.argv[1], 40002))
s.settimeout(1.0)
print("READY", flush=True)
rows = []
try:
    while True:
        data = s.recv(4096)
        rows.append((int.from_bytes(data[:4], "big"), int.from_bytes(data[4:12], "big"), time.monotonic_ns(),
                     len(data)))
except socket.timeout:
    pass
print("\\n".join(" ".join(map(str, row)) for row in rows))
"""
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
count, interval, size = int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
start = time.monotonic()
for seq in range(count):
    wait = start + seq * interval - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    stamp = time.monotonic_ns().to_bytes(8, "big")
    s.sendto(seq.to_bytes(4, "big") + stamp + bytes(size - 12), (sys.argv[1], 40002))
"""


def _send(names: dict[str, str], count: int, interval_s: float, size: int) -> list[tuple[int, float, float, int]]:
    """Send `count` datagrams a -> b; (seq, sent_s, arrived_s, bytes) per arrival in arrival order.

    Both namespaces read the same CLOCK_MONOTONIC, so arrived - sent is the one-way delay.
    """
    receiver = subprocess.Popen(["ip", "netns", "exec", names["b"], sys.executable, "-c", RECEIVER, B_IP],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "READY"
        subprocess.run(["ip", "netns", "exec", names["a"], sys.executable, "-c", SENDER, B_IP, str(count),
                        str(interval_s), str(size)], check=True, timeout=300)
        out, _ = receiver.communicate(timeout=60)
    finally:
        receiver.kill()
        receiver.wait()
    rows = [line.split() for line in out.splitlines() if line]
    return [(int(seq), int(sent) / 1e9, int(arrived) / 1e9, int(size)) for seq, sent, arrived, size in rows]


@needs_root
def test_real_htb_bfifo_install_verify_and_tamper(veth_pair: dict[str, str]) -> None:
    run = _runner(veth_pair)
    plan = plan_direction("forward", LinkParams(rate=ConstantRateParams(2000), queue_bytes=10000),
                          entry_host="sender", entry_if="va", bottleneck_if="va")
    shaper = NetemShaper(plan, EMPTY_REVERSE, run)
    tree = shaper.install()
    assert [row["kind"] for row in tree["forward"]["read_back"]["router:va"]] == ["htb", "bfifo"]
    verify(plan, shaper.read_qdiscs, shaper.read_classes)

    tamper = ["tc", "qdisc", "change", "dev", "va", "parent", "1:1", "handle", "10:", "bfifo", "limit", "5000"]
    assert run("router", tamper).returncode == 0
    with pytest.raises(QdiscMismatch, match="router dev va: bfifo 10: option limit: asked 10000, read back 5000"):
        verify(plan, shaper.read_qdiscs, shaper.read_classes)
    assert run("router", list(htb_class_argv("change", "va", 1000))).returncode == 0
    with pytest.raises(QdiscMismatch, match="htb class 1:1 option rate: asked 2000000bit, read back 1000000bit"):
        verify(plan, shaper.read_qdiscs, shaper.read_classes)


@needs_root
def test_real_htb_delivers_the_configured_rate_and_drops_at_twice_the_load(veth_pair: dict[str, str]) -> None:
    kbps, size = 2000.0, 1000
    plan = plan_direction("forward", LinkParams(rate=ConstantRateParams(kbps), queue_bytes=10000),
                          entry_host="sender", entry_if="va", bottleneck_if="va")
    shaper = NetemShaper(plan, EMPTY_REVERSE, _runner(veth_pair))
    shaper.install()
    payload_bits = size * 8  # the size table makes htb charge UDP payload bytes, as the sim does
    interval = payload_bits / (2 * kbps * 1000)  # offer twice the rate for one second
    arrivals = _send(veth_pair, round(1.0 / interval), interval, size)
    stats = shaper.stop()
    assert len(arrivals) > 100
    times = [arrived for _seq, _sent, arrived, _size in arrivals]
    # Payload bits delivered after the first arrival over the time they took: the bottleneck's output rate.
    # Charged as whole frames (42 header bytes more per 1000) it would be 4.2 % lower.
    delivered_kbps = (len(arrivals) - 1) * payload_bits / (times[-1] - times[0]) / 1000
    assert delivered_kbps == pytest.approx(kbps, rel=0.015)
    bfifo = next(q for q in stats["qdiscs"] if q["kind"] == "bfifo")
    assert bfifo["dropped"] > 0
    assert bfifo["sent_packets"] == len(arrivals)


# --- tests needing sch_netem (the Vagrant VM; skipped on kernels without it) -------------------------------


@pytest.fixture(scope="module")
def netem_kernel() -> None:
    """Skip unless we are root and the kernel takes a netem qdisc (tried for real)."""
    if os.geteuid() != 0 or IP is None or TC is None:
        pytest.skip("netem tests need root plus the ip and tc binaries")
    ok, detail = netem_available()
    if not ok:
        pytest.skip(f"kernel has no sch_netem (tc: {detail}); the userspace shaper is used instead")


@needs_root
def test_real_netem_gilbert_elliott_loss_and_delay(veth_pair: dict[str, str], netem_kernel: None) -> None:
    ge = GilbertElliottParams(p=0.05, r=0.5, loss_bad=1.0, loss_good=0.0)
    params = LinkParams(delay_s=0.02, loss=ge)
    plan = plan_direction("forward", params, entry_host="sender", entry_if="va", bottleneck_if="va")
    shaper = NetemShaper(plan, EMPTY_REVERSE, _runner(veth_pair))
    shaper.install()  # reads back and verifies gemodel, delay and limit
    count = 20000
    rows = _send(veth_pair, count, 0.0002, 100)
    stats = shaper.stop()
    loss = 1 - len(rows) / count
    expected = ge.stationary_loss()  # 0.05 / 0.55
    # Loss indicators of a 2-state chain are correlated with lag-1 coefficient 1 - p - r: the variance of
    # the mean grows by (1 + rho) / (1 - rho) over independent draws. Allow 5 standard deviations.
    rho = 1 - ge.p - ge.r
    sigma = math.sqrt(expected * (1 - expected) * (1 + rho) / (1 - rho) / count)
    assert abs(loss - expected) < 5 * sigma, (loss, expected, sigma)
    netem_row = next(q for q in stats["qdiscs"] if q["kind"] == "netem")
    assert netem_row["dropped"] == count - len(rows)
    delays = np.array([arrived - sent for _seq, sent, arrived, _size in rows])
    assert delays.min() >= 0.02 - 1e-4
    assert float(np.median(delays)) == pytest.approx(0.02, abs=0.002)


@needs_root
def test_real_netem_jitter_keeps_order_without_reorder(veth_pair: dict[str, str], netem_kernel: None) -> None:
    params = LinkParams(delay_s=0.02, jitter_s=0.01, reorder=False)
    plan = plan_direction("forward", params, entry_host="sender", entry_if="va", bottleneck_if="va")
    shaper = NetemShaper(plan, EMPTY_REVERSE, _runner(veth_pair))
    shaper.install()
    rows = _send(veth_pair, 2000, 0.001, 100)
    shaper.stop()
    seqs = [row[0] for row in rows]
    assert len(seqs) == 2000 and seqs == sorted(seqs)
    delays = np.array([arrived - sent for _seq, sent, arrived, _size in rows])
    assert delays.max() > 0.025  # jitter really happened (uniform in [10, 30] ms)


def test_timeline_is_empty_for_constant_rates_even_when_periodic() -> None:
    # both 100 ms windows of this 200 ms trace hold 2 opportunities (200 wraps to 0): one rate, nothing to change, no busy loop
    periodic = _plan(LinkParams(rate=DeliveryTraceParams(np.array([50, 150, 160, 200]))))
    assert periodic.rate_period_s == 0.2 and periodic.rate_changes == ()
    assert list(netem._timeline(periodic)) == []
    assert list(netem._timeline(_plan(LinkParams(rate=ConstantRateParams(1000))))) == []
