"""Merging agent and shaper logs into packets.parquet rows (testbed.log_merge), on hand-built logs."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pyarrow as pa

from testbed import mininet_backend
from testbed.emulator.mininet_topology import _plan
from testbed.emulator.payload_digest import payload_digest
from testbed.log_merge import LOST_AFTER_SHAPER, NOT_SEEN_BY_SHAPER, UNATTRIBUTED, merge_packet_logs
from testbed.spec import load_spec

NAMES = ("scheme", "net", "none", 1)


def frame(table: pa.Table) -> dict[str, list]:
    """The merged columns as lists, missing values as None."""
    return table.to_pydict()


def sent(rows):
    return pd.DataFrame(rows, columns=["flow", "frame_id", "size", "sent_s", "digest"])


def arrived(rows):
    return pd.DataFrame(rows, columns=["digest", "size", "arrived_s"])


def shaper(rows):
    return pd.DataFrame(rows, columns=["direction", "digest", "drop", "scheduled_s", "ge_state"])


def test_digest_is_a_signed_int64_of_the_payload():
    assert payload_digest(b"abc") == payload_digest(b"abc")
    assert payload_digest(b"abc") != payload_digest(b"abd")
    assert -(2 ** 63) <= payload_digest(bytes(1200)) < 2 ** 63


def test_fates_from_the_shaper_log_and_arrivals():
    # Forward: a delivered, b lost by the channel, c dropped by the queue, d never reached the shaper,
    # e left the shaper but was never read, f still in flight at the end (scheduled after end_s = 10).
    a, b, c, d, e, f = range(1, 7)
    forward = sent([("media", 0, 100, 0.0, a), ("media", 0, 100, 0.1, b), ("fec", 0, 50, 0.2, c),
                    ("media", 1, 100, 0.3, d), ("media", 1, 100, 0.4, e), ("media", 2, 100, 9.99, f)])
    forward_arrived = arrived([(a, 100, 0.05)])
    decisions = shaper([("forward", a, None, 0.05, "good"), ("forward", b, "loss", None, "bad"),
                        ("forward", c, "queue", None, "good"), ("forward", e, None, 0.45, "good"),
                        ("forward", f, None, 10.04, "good"),
                        ("reverse", 99, None, 0.2, None)])
    reverse = sent([("ack", 0, 20, 0.15, 99)])
    reverse_arrived = arrived([(99, 20, 0.2)])
    table = frame(merge_packet_logs(forward, forward_arrived, reverse, reverse_arrived, decisions, 10.0, (0.05, 0.05),
                              NAMES))
    assert list(table["flow"]) == ["media", "media", "ack", "fec", "media", "media", "media"]
    assert list(table["seq"]) == [0, 1, 0, 0, 2, 3, 4]  # per flow, in send order
    arrivals = dict(zip(table["sent_ms"], table["arrived_ms"]))
    assert arrivals[0.0] == 50.0 and arrivals[150.0] == 200.0 and arrivals[100.0] is None
    drops = dict(zip(table["sent_ms"], table["drop"]))
    assert drops == {0.0: None, 100.0: "loss", 150.0: None, 200.0: "queue", 300.0: NOT_SEEN_BY_SHAPER,
                     400.0: LOST_AFTER_SHAPER, 9990.0: None}
    states = dict(zip(table["sent_ms"], table["ge_state"]))
    assert states[100.0] == "bad" and states[300.0] is None


def test_repeated_payloads_are_matched_by_order_of_occurrence():
    # The same feedback payload sent three times; the shaper dropped the second copy.
    forward = sent([("report", None, 30, t, 7) for t in (1.0, 2.0, 3.0)])
    decisions = shaper([("forward", 7, None, 1.1, None), ("forward", 7, "loss", None, None),
                        ("forward", 7, None, 3.1, None)])
    got = arrived([(7, 30, 1.1), (7, 30, 3.1)])
    empty_sent, empty_arrived = sent([]), arrived([])
    table = frame(merge_packet_logs(forward, got, empty_sent, empty_arrived, decisions, 10.0, (0.1, 0.1),
                              NAMES))
    # Without the shaper's occurrence order the third copy's arrival would be credited to the second.
    assert list(table["drop"]) == [None, "loss", None]
    assert table["arrived_ms"] == [1100.0, None, 3100.0]


def test_without_a_shaper_log_drops_are_unattributed_unless_still_in_flight():
    forward = sent([("media", 0, 100, 1.0, 1), ("media", 0, 100, 2.0, 2), ("media", 1, 100, 9.96, 3)])
    table = frame(merge_packet_logs(forward, arrived([(1, 100, 1.05)]), sent([]), arrived([]), None, 10.0, (0.05, 0.05),
                              NAMES))
    assert list(table["drop"]) == [None, UNATTRIBUTED, None]
    assert table["ge_state"] == [None, None, None]


def test_a_dumbbell_run_merges_every_agent_and_credits_each_flow(tmp_path):
    """mininet_backend._collect on hand-built logs of a probe and one cross-traffic flow sharing the shaper."""
    spec = tmp_path / "spec.toml"
    spec.write_text('[experiment]\nname = "x"\nduration_s = 1\ndrain_s = 1\n'
                    '[[scheme]]\nname = "probe"\nkind = "probe"\nrate_kbps = 100\n'
                    '[[network]]\nname = "net"\ndelay_ms = 25\ncross_traffic = {rate_kbps = 50}\n')
    run = load_spec(spec).runs()[0]
    media = sent([("media", None, 1000, 0.0, 1), ("media", None, 1000, 0.1, 2), ("media", None, 1000, 0.2, 3)])
    cross = sent([("cross-1", None, 1200, 0.05, 11), ("cross-1", None, 1200, 0.15, 12)])
    logs = {"sender.sent": media, "cross-sender-1.sent": cross,
            "receiver.arrived": arrived([(1, 1000, 0.03), (3, 1000, 0.23)]),
            "cross-receiver-1.arrived": arrived([(12, 1200, 0.18)]),
            "receiver.sent": sent([]), "cross-receiver-1.sent": sent([]),
            "sender.arrived": arrived([]), "cross-sender-1.arrived": arrived([]),
            # The shaper saw both hosts' datagrams interleaved, in arrival order.
            "shaper": shaper([("forward", 1, None, 0.03, "good"), ("forward", 11, "loss", None, "bad"),
                              ("forward", 2, "queue", None, "good"), ("forward", 12, None, 0.18, "good"),
                              ("forward", 3, None, 0.23, "good")])}
    for name, rows in logs.items():
        rows.to_parquet(tmp_path / f"{name}.parquet")
    rows = frame(mininet_backend._collect(run, tmp_path, has_shaper_log=True).packets)
    assert list(zip(rows["flow"], rows["seq"], rows["arrived_ms"], rows["drop"], rows["ge_state"])) == [
        ("media", 0, 30.0, None, "good"), ("cross-1", 0, None, "loss", "bad"), ("media", 1, None, "queue", "good"),
        ("cross-1", 1, 180.0, None, "good"), ("media", 2, 230.0, None, "good")]


def test_agents_start_receivers_first_with_their_peers():
    topo = replace(_plan("tbmerge", 2), pids={})
    assert mininet_backend._agent_ends(topo) == [
        ("receiver", "10.200.2.2", "10.200.1.1"), ("cross-receiver-1", "10.200.2.11", "10.200.1.11"),
        ("cross-receiver-2", "10.200.2.12", "10.200.1.12"), ("sender", "10.200.1.1", "10.200.2.2"),
        ("cross-sender-1", "10.200.1.11", "10.200.2.11"), ("cross-sender-2", "10.200.1.12", "10.200.2.12")]
