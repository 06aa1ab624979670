"""Cross traffic sharing the forward bottleneck: its schedule, its endpoint, the spec keys and sim runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from ge_statistics import loss_asymptotic_variance, stationary

from testbed.analysis.report import build_report
from testbed.codecs.probe import ProbeSender, ScheduledProbeSender, parse_probe_packet
from testbed.cross_traffic import cross_endpoint, cross_traffic_endpoints
from testbed.emulator.cross_traffic import CrossTrafficParams, on_periods, send_times
from testbed.emulator.link import Link
from testbed.emulator.payload_digest import payload_digest
from testbed.runner import run_experiment
from testbed.sim import simulate
from testbed.spec import load_spec
from testbed.spec_table import SpecError

BASE = """
[experiment]
name = "cross"
duration_s = {duration}

[[scheme]]
name = "probe"
kind = "probe"
rate_kbps = 200
packet_bytes = 1000

[[network]]
name = "dumbbell"
delay_ms = 25
{network}
"""


def spec_file(tmp_path: Path, network: str, duration: float = 60) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(BASE.format(duration=duration, network=network))
    return path


# ------------------------------------------------------------------------------------------- schedule


def test_constant_flow_sends_evenly_from_its_start() -> None:
    params = CrossTrafficParams(rate_kbps=96, packet_bytes=1200, start_s=0.25)  # one packet per 100 ms
    times = send_times(params, 10.0, 1, "net", "cross-1")
    assert len(times) == 98  # 0.25, 0.35, ..., 9.95
    assert times[0] == 0.25 and times[-1] == pytest.approx(9.95)
    assert np.allclose(np.diff(times), 0.1)


def test_fixed_on_off_sends_only_while_on_at_the_on_share_of_the_rate() -> None:
    params = CrossTrafficParams(rate_kbps=96, packet_bytes=1200, on_s=1.0, off_s=3.0)
    assert on_periods(params, 10.0, 1) == [(0.0, 1.0), (4.0, 5.0), (8.0, 9.0)]
    times = send_times(params, 10.0, 1)
    assert len(times) == 30  # 10 per second of on time, 3 on periods
    phase = np.mod(times, 4.0)
    assert (phase < 1.0 - 1e-9).all()
    long_run = send_times(params, 4000.0, 1)
    assert len(long_run) * 1200 * 8 / 4000.0 / 1000 == 24.0  # the on share (1/4) of 96 kbps


def test_exponential_on_off_periods_have_the_configured_means() -> None:
    params = CrossTrafficParams(rate_kbps=96, packet_bytes=1200, on_s=0.5, off_s=1.5, periods="exponential")
    periods = on_periods(params, 20000.0, 7, "net", "cross-1")
    on = np.array([end - start for start, end in periods[:-1]])
    gaps = np.array([b[0] - a[1] for a, b in zip(periods[:-1], periods[1:])])
    n = len(on)  # ~10,000 cycles; an exponential's standard deviation equals its mean
    assert abs(on.mean() - 0.5) < 4 * 0.5 / math.sqrt(n)
    assert abs(gaps.mean() - 1.5) < 4 * 1.5 / math.sqrt(n)
    assert on.std() == pytest.approx(0.5, rel=0.05)
    # Same seed and key, same schedule; another flow key, another one.
    assert np.array_equal(send_times(params, 100.0, 7, "net", "cross-1"), send_times(params, 100.0, 7, "net", "cross-1"))
    assert not np.array_equal(send_times(params, 100.0, 7, "net", "cross-1"),
                              send_times(params, 100.0, 7, "net", "cross-2"))


def test_cross_sender_emits_tagged_probe_packets_at_planned_times() -> None:
    sender = ScheduledProbeSender(np.array([0.0, 0.1, 0.2]), 100, "cross-2", tag=2)
    assert sender.get_timer() == 0.0
    sender.handle_timer(0.15)  # late timer: both due packets go, stamped with the actual time
    sent = sender.datagrams_to_send(0.15)
    assert [d.flow for d in sent] == ["cross-2", "cross-2"] and all(d.frame_id is None for d in sent)
    assert [len(d.payload) for d in sent] == [100, 100]
    assert [parse_probe_packet(d.payload) for d in sent] == [(0, 0.15), (1, 0.15)]
    assert sent[0].payload[16:] == bytes([2]) + bytes(83)  # the tag, then zero padding
    assert sender.get_timer() == 0.2
    sender.handle_timer(0.2)
    assert sender.datagrams_to_send(0.2) and sender.get_timer() is None


def test_flows_on_one_schedule_send_distinct_payloads(tmp_path: Path) -> None:
    # Identical flows stamped in the same microsecond: the mininet log merge matches datagrams by payload digest.
    network = "cross_traffic = [{rate_kbps = 100, packet_bytes = 1000}, {rate_kbps = 100, packet_bytes = 1000}]"
    run = load_spec(spec_file(tmp_path, network, duration=2)).runs()[0]
    scheme = ProbeSender(100, 1000, 2.0)
    senders = [scheme, *(sender for _, sender, _ in cross_traffic_endpoints(run))]
    payloads = []
    for sender in senders:
        sender.handle_timer(1.0)
        payloads += [d.payload for d in sender.datagrams_to_send(1.0)]
    assert len(payloads) == 3 * 13  # 0, 80, ..., 960 ms from each of the three flows
    assert len({payload_digest(p) for p in payloads}) == len(payloads)


# ------------------------------------------------------------------------------------------- spec


def test_spec_accepts_one_table_or_an_array_and_round_trips(tmp_path: Path) -> None:
    one = load_spec(spec_file(tmp_path, 'cross_traffic = {rate_kbps = 100}'))
    assert one.networks[0].cross_traffic == (CrossTrafficParams(100.0),)
    many = load_spec(spec_file(tmp_path, 'cross_traffic = [{kind = "probe", rate_kbps = 100, start_s = 0.5},\n'
                                         '  {kind = "on-off", rate_kbps = 300, on_s = 1, off_s = 2, '
                                         'periods = "exponential", packet_bytes = 500}]'))
    assert many.networks[0].cross_traffic == (
        CrossTrafficParams(100.0, start_s=0.5),
        CrossTrafficParams(300.0, 500, 0.0, 1.0, 2.0, "exponential"))
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(many.to_toml())
    assert load_spec(resolved).networks == many.networks


@pytest.mark.parametrize("network, message", [
    ('cross_traffic = {kind = "poisson", rate_kbps = 1}', 'network "dumbbell": cross_traffic.kind must be one of'),
    ('cross_traffic = {kind = "on-off", rate_kbps = 1, on_s = 1}', "cross_traffic.off_s is required"),
    ('cross_traffic = [{rate_kbps = 1}, {rate_kbps = 0}]', "cross_traffic[1].rate_kbps must be > 0"),
    ('cross_traffic = {rate_kbps = 1, on_s = 1}', "cross_traffic.on_s"),  # on/off keys need kind = "on-off"
    ('cross_traffic = {rate_kbps = 1, packet_bytes = 16}', "cross_traffic.packet_bytes must be within [17"),
    ("cross_traffic = 5", "cross_traffic must be a table or a non-empty array of tables"),
    ("cross_traffic = []", "cross_traffic must be a table or a non-empty array of tables"),
    ("cross_traffic = [" + ", ".join(["{rate_kbps = 1}"] * 5) + "]", "has 5 flows; at most 4"),
    ("reverse = {cross_traffic = {rate_kbps = 1}}", "reverse.cross_traffic"),  # forward only
])
def test_bad_cross_traffic_names_the_key(tmp_path: Path, network: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        load_spec(spec_file(tmp_path, network))
    assert message in str(error.value) and str(tmp_path) in str(error.value)


def test_netem_shaper_refuses_cross_traffic_that_would_bypass_netem(tmp_path: Path) -> None:
    network = 'cross_traffic = {rate_kbps = 100}\nrate = {kbps = 320}\n[mininet]\nshaper = "netem"'
    with pytest.raises(SpecError, match='netem cannot express network "dumbbell".*cross_traffic with loss, delay'):
        load_spec(spec_file(tmp_path, network))
    # Without loss or delay only htb and the FIFO shape the link: shared by every flow, so netem may run it.
    path = tmp_path / "no-delay.toml"
    path.write_text(BASE.format(duration=10, network=network).replace("delay_ms = 25", "delay_ms = 0"))
    assert load_spec(path).mininet.shaper == "netem"


# ------------------------------------------------------------------------------------------- sim


def test_cross_traffic_shares_the_fifo_and_only_the_scheme_is_summarized(tmp_path: Path) -> None:
    # 200 kbps of probe + 200 kbps of cross traffic into 320 kbps: a fifth of all packets cannot be carried.
    network = 'rate = {kbps = 320}\nqueue = {bytes = 6000}\ncross_traffic = {rate_kbps = 200, packet_bytes = 1000, start_s = 0.0123}'
    out = tmp_path / "out"
    run_experiment(load_spec(spec_file(tmp_path, network)), out)
    packets = pq.read_table(out / "packets.parquet").to_pandas()
    assert set(packets["flow"]) == {"media", "cross-1"}
    assert (packets["flow"] == "cross-1").sum() == 1500  # 60 s at one 1000-byte packet per 40 ms
    steady = packets[packets["sent_ms"] >= 5000]
    assert (steady["drop"] == "queue").mean() == pytest.approx(0.20, abs=0.005)
    delivered = steady[steady["arrived_ms"].notna()]
    # Both flows wait in one full queue: up to 6000 bytes ahead at 320 kbps is 150 ms, plus 25 ms and 25 ms.
    for flow in ("media", "cross-1"):
        delay = delivered.loc[delivered["flow"] == flow, "arrived_ms"] - delivered.loc[delivered["flow"] == flow,
                                                                                       "sent_ms"]
        assert delay.median() > 100 and delay.max() <= 25 + 25 + 150 + 1e-6
    summary = pd.read_csv(out / "summary.csv")
    run = summary[summary["seed"].astype(str) == "1"].iloc[0]
    media = packets[packets["flow"] == "media"]
    assert run["packets_sent"] == 1500  # the media probe's own packets
    assert run["loss_pct"] == pytest.approx(100 * media["arrived_ms"].isna().mean(), abs=1e-3)
    assert run["loss_pct"] != pytest.approx(100 * packets["arrived_ms"].isna().mean(), abs=0.5)  # cross lost more


def test_cross_traffic_meets_the_same_gilbert_elliott_channel(tmp_path: Path) -> None:
    network = ('loss = {model = "gilbert-elliott", p = 0.05, r = 0.4}\n'
               'cross_traffic = {kind = "on-off", rate_kbps = 800, on_s = 2, off_s = 1, packet_bytes = 1000}')
    spec = load_spec(spec_file(tmp_path, network, duration=120))
    packets = simulate(spec.runs()[0]).packets.to_pandas()
    forward = packets[packets["flow"].isin(["media", "cross-1"])]
    params = spec.networks[0].forward.loss
    _, bad = stationary(params)
    lost = forward["drop"] == "loss"
    se = math.sqrt(loss_asymptotic_variance(params) / len(forward))
    assert abs(lost.mean() - bad) < 4 * se
    # One chain for both flows: replaying a single forward Link over all their packets in send order gives
    # every packet its logged fate (a chain per flow would not).
    link = Link(spec.networks[0].forward, 1, "dumbbell", "forward")
    replayed = [link.transmit(int(size), sent_ms / 1000) for size, sent_ms in zip(forward["bytes"], forward["sent_ms"])]
    assert [r.drop for r in replayed] == [None if pd.isna(d) else d for d in forward["drop"]]
    assert [r.ge_state for r in replayed] == forward["ge_state"].tolist()
    assert (forward.loc[forward["flow"] == "cross-1", "drop"] == "loss").sum() > 0


def test_sim_runs_with_cross_traffic_are_deterministic(tmp_path: Path) -> None:
    network = ('loss = {model = "bernoulli", rate = 0.05}\nrate = {kbps = 300}\nqueue = {packets = 4}\n'
               'cross_traffic = [{kind = "on-off", rate_kbps = 300, on_s = 0.5, off_s = 0.5, periods = "exponential"},'
               ' {rate_kbps = 50, packet_bytes = 200}]')
    run = load_spec(spec_file(tmp_path, network, duration=20)).runs()[0]
    first, second = simulate(run).packets, simulate(run).packets
    assert first.equals(second)
    assert set(first.column("flow").to_pylist()) == {"media", "cross-1", "cross-2"}


def test_cross_endpoints_follow_the_roles(tmp_path: Path) -> None:
    network = "cross_traffic = [{rate_kbps = 100}, {rate_kbps = 50}]"
    run = load_spec(spec_file(tmp_path, network, duration=5)).runs()[0]
    flows = cross_traffic_endpoints(run)
    assert [flow for flow, _, _ in flows] == ["cross-1", "cross-2"]
    sender = cross_endpoint(run, "cross-sender-2")
    assert isinstance(sender, ScheduledProbeSender) and sender.flow == "cross-2" and sender.tag == 2
    assert len(sender.times_s) == 27  # ceil(5 s / 192 ms)
    assert not isinstance(cross_endpoint(run, "cross-receiver-1"), ScheduledProbeSender)
    with pytest.raises(ValueError, match="cross-sender-3"):
        cross_endpoint(run, "cross-sender-3")


def test_report_has_a_cross_traffic_table(tmp_path: Path) -> None:
    network = 'rate = {kbps = 320}\nqueue = {bytes = 6000}\ncross_traffic = [{rate_kbps = 200}, {rate_kbps = 40}]'
    out = tmp_path / "out"
    run_experiment(load_spec(spec_file(tmp_path, network, duration=20)), out)
    build_report(out)
    table = pd.read_csv(out / "tables" / "cross_traffic.csv")
    packets = pq.read_table(out / "packets.parquet").to_pandas()
    assert list(table["flow"]) == ["cross-1", "cross-2"]
    for flow, row in table.set_index("flow").iterrows():
        own = packets[packets["flow"] == flow]
        assert row["packets_sent"] == len(own)
        assert row["bitrate_kbps"] == pytest.approx(own["bytes"].sum() * 8 / 20 / 1000)
        assert row["queue_drop_pct"] == pytest.approx(100 * (own["drop"] == "queue").mean())
    assert "Cross traffic on the bottleneck" in (out / "report.md").read_text()
