"""Per-run / per-(scheme, network) metrics and paired deltas (testbed.analysis.aggregate).

Expected percentiles are worked out by hand with linear interpolation: the q-quantile of n sorted values
sits at position q * (n - 1).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.analysis.aggregate import (
    DB_CAP,
    SUMMARY_COLUMNS,
    bootstrap_mean_ci,
    paired_deltas,
    summarize_deltas,
    summarize_runs,
)
from testbed.analysis.freeze import libwebrtc_freezes, w3c_freezes
from testbed.analysis.network_summary import RUN_KEYS
from testbed.analysis.rendering import non_rendered_mask

NAN = float("nan")
INF = math.inf


def run_frames(psnr: list[float], *, scheme: str = "a", network: str = "n", video: str = "v", seed: int = 1,
               rendered: list[bool] | None = None, display_ms: list[float] | None = None,
               latency_ms: list[float] | None = None, ssim: list[float] | None = None,
               lpips: list[float] | None = None) -> pd.DataFrame:
    """One run's frames: by default all rendered 40 ms apart, 50 ms latency, SSIM 0.95, no LPIPS."""
    n = len(psnr)
    rendered = [True] * n if rendered is None else rendered
    if display_ms is None:
        display_ms = [100.0 + 40.0 * i if shown else NAN for i, shown in enumerate(rendered)]
    if latency_ms is None:
        latency_ms = [50.0 if shown else NAN for shown in rendered]
    return pd.DataFrame({
        "scheme": scheme, "network": network, "video": video, "seed": seed, "frame_id": range(n),
        "rendered": rendered, "display_ms": display_ms, "latency_ms": latency_ms, "psnr_db": psnr,
        "ssim": [0.95] * n if ssim is None else ssim, "lpips": [NAN] * n if lpips is None else lpips,
    })


def run_row(frames: pd.DataFrame, **kwargs) -> pd.Series:
    """The single run row of summarize_runs on one run."""
    table = summarize_runs(frames, **kwargs)
    runs = table[table["level"] == "run"]
    assert len(runs) == 1
    return runs.iloc[0]


# ---------------------------------------------------------------- frame statistics


def test_psnr_percentiles_and_worst_ten_percent_of_a_known_list() -> None:
    psnr = list(np.random.default_rng(1).permutation(np.arange(1.0, 101.0)))
    row = run_row(run_frames(psnr))
    assert row["frames"] == 100
    assert row["psnr_median_db"] == pytest.approx(50.5)
    assert row["psnr_p10_db"] == pytest.approx(10.9)
    assert row["psnr_p5_db"] == pytest.approx(5.95)
    assert row["psnr_p1_db"] == pytest.approx(1.99)
    assert row["psnr_worst10_mean_db"] == pytest.approx(5.5)  # mean of 1..10


def test_worst_ten_percent_rounds_the_frame_count_up() -> None:
    row = run_row(run_frames([float(v) for v in range(15, 0, -1)]))
    assert row["psnr_worst10_mean_db"] == pytest.approx(1.5)  # ceil(1.5) = 2 frames: 1 and 2


def test_ssim_percentiles_and_median_in_db() -> None:
    row = run_row(run_frames([35.0] * 5, ssim=[0.99, 0.9, 0.999, 0.98, 0.95]))
    assert row["ssim_median"] == pytest.approx(0.98)
    assert row["ssim_p10"] == pytest.approx(0.92)
    assert row["ssim_p5"] == pytest.approx(0.91)
    assert row["ssim_p1"] == pytest.approx(0.902)
    assert row["ssim_median_db"] == pytest.approx(-10 * math.log10(0.02))


def test_lpips_tail_is_the_high_percentiles_and_absent_lpips_is_nan() -> None:
    lpips = list(np.random.default_rng(2).permutation(np.arange(101) / 100))
    row = run_row(run_frames([35.0] * 101, lpips=lpips))
    assert (row["lpips_median"], row["lpips_p95"], row["lpips_p99"]) == pytest.approx((0.5, 0.95, 0.99))
    absent = run_row(run_frames([35.0] * 3))
    assert all(math.isnan(absent[c]) for c in ("lpips_median", "lpips_p95", "lpips_p99"))


def test_latency_is_over_rendered_frames_only() -> None:
    frames = run_frames([35.0] * 6, rendered=[True, True, False, True, True, True],
                        display_ms=[0.0, 40.0, NAN, 120.0, 160.0, 200.0],
                        latency_ms=[30.0, 10.0, 1000.0, 50.0, 20.0, 40.0])
    row = run_row(frames)
    assert row["latency_p50_ms"] == pytest.approx(30.0)
    assert row["latency_p95_ms"] == pytest.approx(48.0)
    assert row["latency_p99_ms"] == pytest.approx(49.6)


def test_non_rendered_pct_by_default_and_from_a_rendering_rule() -> None:
    frames = run_frames([35.0, 25.0, 20.0, 36.0], rendered=[True, True, False, True])
    assert run_row(frames)["non_rendered_pct"] == pytest.approx(25.0)
    threshold = non_rendered_mask(frames, "threshold")
    assert run_row(frames, non_rendered=threshold)["non_rendered_pct"] == pytest.approx(50.0)
    with pytest.raises(ValueError, match="index of frames"):
        summarize_runs(frames, non_rendered=threshold.iloc[:3])


def test_infinite_psnr_is_capped_for_statistics() -> None:
    mixed = run_row(run_frames([30.0, INF, INF, INF]))
    assert mixed["psnr_median_db"] == DB_CAP
    assert mixed["psnr_p10_db"] == pytest.approx(30.0 + 0.3 * (DB_CAP - 30.0))
    assert mixed["psnr_worst10_mean_db"] == pytest.approx(30.0)
    # Without the cap numpy interpolates inf - inf and returns NaN.
    identical = run_row(run_frames([INF] * 4, ssim=[1.0] * 4))
    assert [identical[c] for c in ("psnr_median_db", "psnr_p10_db", "psnr_p1_db", "psnr_worst10_mean_db")] == [
        DB_CAP] * 4
    assert identical["ssim_median_db"] == DB_CAP
    assert identical["ssim_median"] == 1.0


def test_finite_psnr_above_the_cap_is_capped_too() -> None:
    assert run_row(run_frames([101.0, 107.0, 40.0]))["psnr_median_db"] == DB_CAP


# ---------------------------------------------------------------- freezes


def freeze_and_pause_times() -> list[float]:
    """20 intervals of 40 ms, a 300 ms freeze, 20 more, a 6 s pause, then 10 more."""
    times = [40.0 * i for i in range(21)]
    times.append(times[-1] + 300.0)
    times += [times[-1] + 40.0 * i for i in range(1, 21)]
    times.append(times[-1] + 6000.0)
    times += [times[-1] + 40.0 * i for i in range(1, 11)]
    return times


def test_freezes_and_pauses_match_analysis_freeze() -> None:
    times = freeze_and_pause_times()
    # Interleave non-rendered frames (no display time) and shuffle: only rendered frames count, in time order.
    display = times + [NAN] * 5
    rendered = [True] * len(times) + [False] * 5
    frames = run_frames([35.0] * len(display), rendered=rendered, display_ms=display)
    row = run_row(frames.sample(frac=1.0, random_state=4))
    w3c, libwebrtc = w3c_freezes(times), libwebrtc_freezes(times)
    assert (w3c.count, w3c.total_s, w3c.pauses, w3c.pause_total_s) == (1, 0.3, 1, 6.0)
    assert libwebrtc.count == 1
    assert row["freeze_count"] == w3c.count
    assert row["freeze_total_s"] == w3c.total_s
    assert row["freeze_mean_s"] == w3c.mean_s
    assert row["freeze_time_pct"] == pytest.approx(100 * 300 / (times[-1] - times[0]))
    assert row["freeze_time_pct"] == w3c.freeze_time_pct
    assert row["libwebrtc_freeze_count"] == libwebrtc.count
    assert row["libwebrtc_freeze_total_s"] == libwebrtc.total_s
    assert row["libwebrtc_freeze_mean_s"] == libwebrtc.mean_s
    assert row["libwebrtc_freeze_time_pct"] == libwebrtc.freeze_time_pct
    assert (row["pause_count"], row["pause_total_s"]) == (1, 6.0)


def test_w3c_and_libwebrtc_differ_where_their_rules_do() -> None:
    # The 3rd interval (200 ms) is a W3C freeze (avg 40 -> bar 190); libwebrtc judges from the 5th only.
    times = [0.0, 40.0, 80.0, 280.0, 320.0, 360.0]
    row = run_row(run_frames([35.0] * len(times), display_ms=times))
    assert (row["freeze_count"], row["libwebrtc_freeze_count"], row["pause_count"]) == (1, 0, 0)


# ---------------------------------------------------------------- aggregate rows and bitrate


def packets_for(scheme: str, seed: int, sends: list[tuple[str, float, int]]) -> pd.DataFrame:
    """Delivered packets (flow, sent_ms, bytes) of one run, 50 ms after sending."""
    return pd.DataFrame({
        "scheme": scheme, "network": "n", "video": "v", "seed": seed, "flow": [s[0] for s in sends],
        "seq": range(len(sends)), "frame_id": 0, "bytes": [s[2] for s in sends],
        "sent_ms": [s[1] for s in sends], "arrived_ms": [s[1] + 50.0 for s in sends], "drop": None,
        "ge_state": None,
    })


def two_runs() -> pd.DataFrame:
    frozen = [0.0, 40.0, 80.0, 120.0, 400.0]  # a 280 ms W3C freeze after 40 ms frames
    return pd.concat([
        run_frames([10.0, 20.0, 30.0, 35.0, 36.0], seed=1, display_ms=frozen),
        run_frames([40.0, 50.0, 60.0], seed=2, rendered=[True, False, True]),
        run_frames([33.0], scheme="b", seed=1),
    ], ignore_index=True)


def test_table_layout_levels_and_keys() -> None:
    table = summarize_runs(two_runs())
    assert list(table.columns) == ["level", *RUN_KEYS, *SUMMARY_COLUMNS]
    assert table["level"].tolist() == ["run", "run", "run", "aggregate", "aggregate"]
    assert table[["scheme", "seed"]].values.tolist() == [["a", 1], ["a", 2], ["b", 1], ["a", "all"], ["b", "all"]]
    assert table.loc[table["level"] == "aggregate", "video"].tolist() == ["all", "all"]


def test_aggregate_pools_frames_and_averages_freezes_over_runs() -> None:
    table = summarize_runs(two_runs())
    runs = table[(table["level"] == "run") & (table["scheme"] == "a")]
    aggregate = table[(table["level"] == "aggregate") & (table["scheme"] == "a")].iloc[0]
    assert runs["freeze_count"].tolist() == [1, 0]
    assert runs["freeze_total_s"].tolist() == pytest.approx([0.28, 0.0])
    assert aggregate["frames"] == 8
    # Pooled frames: the median of the 8 PSNRs, not the mean of the per-run medians (30 and 50).
    assert aggregate["psnr_median_db"] == pytest.approx(35.5)
    assert aggregate["non_rendered_pct"] == pytest.approx(12.5)
    assert aggregate["freeze_count"] == pytest.approx(0.5)
    assert aggregate["freeze_total_s"] == pytest.approx(0.14)
    assert aggregate["freeze_mean_s"] == pytest.approx(0.14)


def test_bitrate_is_the_mean_over_windows_and_runs() -> None:
    packets = pd.concat([
        # Windows [2, 0, 1] kbps: mean 1 kbps sent; the ack is feedback and does not count.
        packets_for("a", 1, [("media", 0.0, 125), ("fec", 500.0, 125), ("ack", 700.0, 999), ("media", 2100.0, 125)]),
        packets_for("a", 2, [("media", 100.0, 375)]),
    ], ignore_index=True)
    table = summarize_runs(two_runs(), packets)
    runs = table[table["level"] == "run"]
    assert runs["bitrate_kbps"].tolist()[:2] == pytest.approx([1.0, 3.0])
    assert runs["delivered_kbps"].tolist()[:2] == pytest.approx([1.0, 3.0])
    assert math.isnan(runs["bitrate_kbps"].iloc[2])  # scheme b has no packets
    aggregate = table[table["level"] == "aggregate"]
    assert aggregate["bitrate_kbps"].iloc[0] == pytest.approx(2.0)
    assert math.isnan(aggregate["bitrate_kbps"].iloc[1])


# ---------------------------------------------------------------- paired deltas


def summary_table() -> pd.DataFrame:
    """Run rows of schemes a (baseline), b and c on network n (3 units; c lacks one) and m (1 unit)."""
    rows = [
        # scheme, network, video, seed, psnr_median_db, freeze_count, latency_p95_ms
        ("a", "n", "v1", 1, 30.0, 2, 50.0), ("a", "n", "v1", 2, 32.0, 0, 50.0), ("a", "n", "v2", 1, 34.0, 1, 50.0),
        ("b", "n", "v1", 1, 31.0, 1, 60.0), ("b", "n", "v1", 2, 35.0, 1, NAN), ("b", "n", "v2", 1, 33.0, 1, 70.0),
        ("c", "n", "v1", 1, 30.0, 2, 50.0), ("c", "n", "v1", 2, 30.0, 0, 50.0),
        ("a", "m", "v1", 1, 20.0, 5, 50.0), ("b", "m", "v1", 1, 25.0, 3, 50.0),
    ]
    table = pd.DataFrame(rows, columns=["scheme", "network", "video", "seed", "psnr_median_db", "freeze_count",
                                        "latency_p95_ms"])
    table.insert(0, "level", "run")
    aggregate = pd.DataFrame([{"level": "aggregate", "scheme": "b", "network": "n", "video": "all", "seed": "all",
                               "psnr_median_db": 99.0, "freeze_count": 9, "latency_p95_ms": 9.0}])
    return pd.concat([table, aggregate], ignore_index=True)


METRICS = ["psnr_median_db", "freeze_count", "latency_p95_ms"]


def deltas_of(deltas: pd.DataFrame, scheme: str, network: str, metric: str) -> list[float]:
    selected = deltas[(deltas["scheme"] == scheme) & (deltas["network"] == network) & (deltas["metric"] == metric)]
    return selected["delta"].tolist()


def test_paired_deltas_are_scheme_minus_baseline_per_unit() -> None:
    deltas = paired_deltas(summary_table(), METRICS)
    assert set(deltas["baseline"]) == {"a"}
    assert set(deltas["scheme"]) == {"b", "c"}
    assert deltas_of(deltas, "b", "n", "psnr_median_db") == [1.0, 3.0, -1.0]
    assert deltas_of(deltas, "b", "n", "freeze_count") == [-1.0, 1.0, 0.0]
    assert deltas_of(deltas, "c", "n", "psnr_median_db") == [0.0, -2.0]  # c has no (v2, 1): no pair
    assert deltas_of(deltas, "b", "m", "psnr_median_db") == [5.0]
    b = deltas[(deltas["scheme"] == "b") & (deltas["network"] == "n") & (deltas["metric"] == "psnr_median_db")]
    assert b[["video", "seed", "value", "baseline_value"]].values.tolist() == [
        ["v1", 1, 31.0, 30.0], ["v1", 2, 35.0, 32.0], ["v2", 1, 33.0, 34.0]]


def test_a_named_baseline_flips_the_sign() -> None:
    deltas = paired_deltas(summary_table(), ["psnr_median_db"], baseline="b")
    assert set(deltas["scheme"]) == {"a", "c"}
    assert deltas_of(deltas, "a", "n", "psnr_median_db") == [-1.0, -3.0, 1.0]
    assert deltas_of(deltas, "c", "n", "psnr_median_db") == [-1.0, -5.0]


def test_paired_deltas_reject_bad_requests() -> None:
    with pytest.raises(ValueError, match="baseline scheme 'z' is not in the table"):
        paired_deltas(summary_table(), METRICS, baseline="z")
    with pytest.raises(ValueError, match="unknown metrics: psnr_p50"):
        paired_deltas(summary_table(), ["psnr_p50"])
    duplicated = pd.concat([summary_table(), summary_table().iloc[:1]])
    with pytest.raises(ValueError, match="more than one run row"):
        paired_deltas(duplicated, METRICS)


def test_summarize_deltas_mean_ci_and_units() -> None:
    summary = summarize_deltas(paired_deltas(summary_table(), METRICS))
    by_key = summary.set_index(["network", "scheme", "metric"])
    b = by_key.loc[("n", "b", "psnr_median_db")]
    assert (b["units"], b["mean_delta"], b["baseline"]) == (3, 1.0, "a")
    assert -1.0 <= b["ci_low"] <= 1.0 <= b["ci_high"] <= 3.0
    assert b["ci_low"] < b["ci_high"]
    c = by_key.loc[("n", "c", "psnr_median_db")]
    assert (c["units"], c["mean_delta"]) == (2, -1.0)
    assert (c["ci_low"], c["ci_high"]) == (-2.0, 0.0)  # resample means are -2, -1, 0; each tail has P = 1/4
    # A NaN delta (b's second unit has no latency) is dropped, not counted as a unit.
    latency = by_key.loc[("n", "b", "latency_p95_ms")]
    assert (latency["units"], latency["mean_delta"]) == (2, 15.0)
    single = by_key.loc[("m", "b", "psnr_median_db")]
    assert (single["units"], single["mean_delta"]) == (1, 5.0)
    assert math.isnan(single["ci_low"]) and math.isnan(single["ci_high"])


def test_summarize_deltas_is_deterministic_and_independent_of_other_groups() -> None:
    deltas = paired_deltas(summary_table(), METRICS)
    pd.testing.assert_frame_equal(summarize_deltas(deltas), summarize_deltas(deltas))
    alone = deltas[(deltas["scheme"] == "b") & (deltas["network"] == "n") & (deltas["metric"] == "freeze_count")]
    full = summarize_deltas(deltas).set_index(["network", "scheme", "metric"]).loc[("n", "b", "freeze_count")]
    part = summarize_deltas(alone).iloc[0]
    assert (part["ci_low"], part["ci_high"]) == (full["ci_low"], full["ci_high"])


def test_bootstrap_ci_of_known_samples() -> None:
    two = bootstrap_mean_ci([0.0, 1.0])
    assert (two.units, two.mean, two.low, two.high) == (2, 0.5, 0.0, 1.0)
    constant = bootstrap_mean_ci([2.5] * 4)
    assert (constant.mean, constant.low, constant.high) == (2.5, 2.5, 2.5)
    empty = bootstrap_mean_ci([])
    assert empty.units == 0 and all(math.isnan(v) for v in (empty.mean, empty.low, empty.high))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_mean_ci([1.0, 2.0], confidence=1.0)


@pytest.mark.parametrize("seed", range(5))
def test_bootstrap_ci_contains_the_mean_and_repeats(seed: int) -> None:
    values = np.random.default_rng(seed).lognormal(size=6)  # skewed, so the interval is asymmetric
    ci = bootstrap_mean_ci(values)
    assert ci.low < ci.mean < ci.high
    assert ci == bootstrap_mean_ci(values)
    assert bootstrap_mean_ci(values, confidence=0.5).low > ci.low


# ---------------------------------------------------------------- end to end on a real results directory

TINY_SPEC = """
[experiment]
name = "aggregate-e2e"
duration_s = 3
seeds = [1, 2]

[[video]]
name = "carphone"
source = "sample:carphone"
size = [128, 128]
loop = "pingpong"

[[scheme]]
name = "vp9-streaming"
kind = "vp9"
target_kbps = 100
fec = "streaming"
redundancy = 0.5

[[scheme]]
name = "vp9-nofec"
kind = "vp9"
target_kbps = 150
fec = "none"

[[network]]
name = "ge-high"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.75, clock = "frame" }
"""

# Columns summary.csv shares with summarize_runs. bitrate_kbps agrees because every run's last forward packet
# is sent in its last second, so the number of 1 s windows equals duration_s.
SHARED_COLUMNS = [
    "frames", "psnr_median_db", "psnr_p10_db", "psnr_worst10_mean_db", "ssim_median", "non_rendered_pct",
    "freeze_count", "freeze_total_s", "latency_p50_ms", "latency_p95_ms", "bitrate_kbps",
]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results directory: $TESTBED_AGGREGATE_RESULTS if set (e.g. a thesis-ge run), else a 3 s run made here."""
    given = os.environ.get("TESTBED_AGGREGATE_RESULTS")
    if given:
        return Path(given)
    base = tmp_path_factory.mktemp("aggregate-e2e")
    spec = base / "spec.toml"
    spec.write_text(TINY_SPEC)
    out = base / "results"
    subprocess.run([sys.executable, "-m", "testbed", "run", str(spec), "--out", str(out), "--jobs", "1"],
                   check=True, capture_output=True, text=True)
    return out


def test_end_to_end_agrees_with_summary_csv(results_dir: Path) -> None:
    frames = pd.read_parquet(results_dir / "frames.parquet")
    packets = pd.read_parquet(results_dir / "packets.parquet")
    ours = summarize_runs(frames, packets).astype({"seed": str})
    theirs = pd.read_csv(results_dir / "summary.csv", dtype={"seed": str})
    theirs = theirs[theirs["frames"].notna()]  # rows of probe schemes have no frame columns
    merged = ours.merge(theirs, on=["level", *RUN_KEYS], suffixes=("", "@csv"), validate="one_to_one")
    assert len(merged) == len(ours) == len(theirs)
    assert set(merged["level"]) == {"run", "aggregate"}
    for column in SHARED_COLUMNS:
        # summary.csv is written with 4 decimals.
        np.testing.assert_allclose(merged[column].astype(float), merged[f"{column}@csv"].astype(float),
                                   atol=1e-4, rtol=0, equal_nan=True, err_msg=column)
    runs = ours[ours["level"] == "run"]
    assert (runs["delivered_kbps"] <= runs["bitrate_kbps"]).all()
    assert (runs["psnr_p1_db"] <= runs["psnr_p5_db"]).all() and (runs["psnr_p5_db"] <= runs["psnr_p10_db"]).all()


def test_end_to_end_paired_deltas(results_dir: Path) -> None:
    frames = pd.read_parquet(results_dir / "frames.parquet")
    runs = summarize_runs(frames)
    deltas = paired_deltas(runs)
    summary = summarize_deltas(deltas)
    schemes = list(frames["scheme"].drop_duplicates())
    units = frames[["network", "video", "seed"]].drop_duplicates().groupby("network").size()
    assert set(summary["scheme"]) == set(schemes[1:])
    assert set(deltas["baseline"]) == {schemes[0]}
    for row in summary.itertuples():
        assert row.units == units[row.network]
        value = runs.loc[(runs["level"] == "run") & (runs["scheme"] == row.scheme) & (runs["network"] == row.network),
                         row.metric].mean()
        base = runs.loc[(runs["level"] == "run") & (runs["scheme"] == schemes[0]) & (runs["network"] == row.network),
                        row.metric].mean()
        assert row.mean_delta == pytest.approx(value - base)
        if row.units >= 2:
            assert row.ci_low <= row.mean_delta <= row.ci_high
        else:
            assert math.isnan(row.ci_low)
