"""Network-level summary of packet logs: delivered rate, loss by cause, one-way delay."""

from __future__ import annotations

import pandas as pd

from testbed.analysis.log_schema import CROSS_FLOW_PREFIX, FORWARD_FLOWS
from testbed.analysis.quality import quantile

RUN_KEYS = ["scheme", "network", "video", "seed"]
AGGREGATE_KEYS = ["scheme", "network"]
ALL = "all"

NETWORK_COLUMNS = [
    "packets_sent", "bitrate_kbps", "achieved_kbps", "loss_pct", "loss_model_pct", "queue_drop_pct",
    "undelivered_pct", "delay_p50_ms", "delay_p95_ms", "delay_max_ms",
]


def network_metrics(packets: pd.DataFrame, duration_s: float) -> dict[str, float]:
    """Metrics of one group of forward packets; rates are per run (groups spanning runs are divided)."""
    runs = max(len(packets.drop_duplicates(RUN_KEYS)), 1)
    sent = len(packets)
    delivered = packets["arrived_ms"].notna()
    delays = (packets["arrived_ms"] - packets["sent_ms"])[delivered].to_numpy()
    per_run_seconds = duration_s * runs

    def pct(mask: pd.Series) -> float:
        return 100.0 * float(mask.sum()) / sent if sent else float("nan")

    return {
        "packets_sent": sent,
        "bitrate_kbps": 8.0 * float(packets["bytes"].sum()) / per_run_seconds / 1000.0,
        "achieved_kbps": 8.0 * float(packets["bytes"][delivered].sum()) / per_run_seconds / 1000.0,
        "loss_pct": pct(~delivered),
        "loss_model_pct": pct(packets["drop"] == "loss"),
        "queue_drop_pct": pct(packets["drop"] == "queue"),
        "undelivered_pct": pct(~delivered & packets["drop"].isna()),
        "delay_p50_ms": quantile(delays, 0.5),
        "delay_p95_ms": quantile(delays, 0.95),
        "delay_max_ms": float(delays.max()) if len(delays) else float("nan"),
    }


def summarize_network(packets: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """One row per run and one aggregated row per (scheme, network), from the forward (media, fec, rtx) flows."""
    forward = packets[packets["flow"].isin(FORWARD_FLOWS)]
    rows = []
    for key, group in forward.groupby(RUN_KEYS, sort=False):
        rows.append({"level": "run", **dict(zip(RUN_KEYS, key)), **network_metrics(group, duration_s)})
    for key, group in forward.groupby(AGGREGATE_KEYS, sort=False):
        rows.append({"level": "aggregate", **dict(zip(AGGREGATE_KEYS, key)), "video": ALL, "seed": ALL,
                     **network_metrics(group, duration_s)})
    return pd.DataFrame(rows, columns=["level", *RUN_KEYS, *NETWORK_COLUMNS])


def summarize_cross_traffic(packets: pd.DataFrame, duration_s: float) -> pd.DataFrame:
    """One row per (scheme, network, cross-traffic flow), seeds pooled: what the competing flows got through."""
    cross = packets[packets["flow"].astype(str).str.startswith(CROSS_FLOW_PREFIX)]
    keys = [*AGGREGATE_KEYS, "flow"]
    rows = [{**dict(zip(keys, key)), **network_metrics(group, duration_s)}
            for key, group in cross.groupby(keys, sort=False)]
    return pd.DataFrame(rows, columns=[*keys, *NETWORK_COLUMNS])
