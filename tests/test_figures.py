"""Figures (testbed.analysis.figures) on hand-built logs, and render_all on a real small results directory.

Each figure is checked twice: its matplotlib Figure has the expected structure (subplots, lines, labels,
bar heights, marker positions, values computed by hand here), and the PNG written decodes and is not blank.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.patches import PathPatch, Rectangle

from testbed.analysis import figures as fg

FPS = 30


# ------------------------------------------------------------------------------------------- builders


def frame_rows(scheme: str, network: str, psnr: list[float], *, video: str = "v", seed: int = 1,
               rendered: list[bool] | None = None, keyframe: list[bool] | None = None,
               sent_bytes: list[int] | None = None, resolution: str | list[str] = "64x64") -> pd.DataFrame:
    """One run's frames.parquet rows, one per PSNR value, 30 fps."""
    n = len(psnr)
    return pd.DataFrame({
        "scheme": scheme, "network": network, "video": video, "seed": seed,
        "frame_id": np.arange(n), "capture_ms": np.arange(n) * 1000 / FPS,
        "sent_bytes": sent_bytes if sent_bytes is not None else [1000] * n,
        "keyframe": keyframe if keyframe is not None else [i == 0 for i in range(n)],
        "resolution": resolution if isinstance(resolution, list) else [resolution] * n,
        "decodable": True, "rendered": rendered if rendered is not None else [True] * n,
        "shown_frame_id": np.arange(n), "display_ms": np.arange(n) * 1000 / FPS + 50,
        "latency_ms": 50.0, "psnr_db": psnr, "ssim": 0.9, "lpips": np.nan, "freeze": False,
    })


def packet_rows(scheme: str, network: str, frame_ids: list[int], *, lost: dict[int, int] | None = None,
                bad: set[int] = frozenset(), video: str = "v", seed: int = 1, per_frame: int = 2,
                nbytes: int | list[int] = 500) -> pd.DataFrame:
    """`per_frame` media datagrams per frame; `lost[f]` of frame f's never arrive; frames in `bad` met the
    GE bad state; one ack (reverse flow, must be ignored) per frame."""
    lost = lost or {}
    rows = []
    for f in frame_ids:
        size = nbytes[f] if isinstance(nbytes, list) else nbytes
        for k in range(per_frame):
            gone = k < lost.get(f, 0)
            rows.append({"flow": "media", "frame_id": f, "bytes": size, "sent_ms": f * 1000 / FPS,
                         "arrived_ms": None if gone else f * 1000 / FPS + 50, "drop": "loss" if gone else None,
                         "ge_state": "bad" if f in bad else "good"})
        rows.append({"flow": "ack", "frame_id": None, "bytes": 30, "sent_ms": f * 1000 / FPS + 60,
                     "arrived_ms": None, "drop": None, "ge_state": None})
    table = pd.DataFrame(rows)
    table.insert(0, "seq", np.arange(len(table)))
    for column, value in (("seed", seed), ("video", video), ("network", network), ("scheme", scheme)):
        table.insert(0, column, value)
    return table


def assert_png(path: Path | None) -> np.ndarray:
    """The PNG exists, decodes to a reasonably sized RGB(A) image, and is not a single colour."""
    assert path is not None and path.is_file() and path.suffix == ".png"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert float(image[..., :3].var()) > 0
    return image


def legend_labels(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def labelled_lines(ax) -> list:
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


@pytest.fixture()
def lossy_frames() -> pd.DataFrame:
    """Networks n1 (schemes A, B, C) and n2 (A, B); A on n1 has one identical (inf PSNR) frame."""
    return pd.concat([
        frame_rows("A", "n1", [30, 32, 34, math.inf], rendered=[True, False, True, False]),
        frame_rows("B", "n1", [20, 25], rendered=[False, False]),
        frame_rows("C", "n1", [35, 36, 37], rendered=[True, True, True]),
        frame_rows("A", "n2", [31, 33, 35, 29, 28], rendered=[True, True, True, True, False]),
        frame_rows("B", "n2", [22, 24, 26, 40], rendered=[True, False, False, False]),
    ], ignore_index=True)


# -------------------------------------------------------------------------------------------- palette


def test_palette_is_positional_distinct_and_shared_across_figures(lossy_frames: pd.DataFrame) -> None:
    palette = fg.scheme_palette(["A", "B", "C"])
    assert list(palette) == ["A", "B", "C"] and len(set(palette.values())) == 3
    assert fg.scheme_palette(["A", "B"]) == {k: palette[k] for k in ("A", "B")}
    assert len(set(fg.scheme_palette([f"s{i}" for i in range(15)]).values())) == 15
    assert len(set(fg.scheme_palette([f"s{i}" for i in range(25)]).values())) == 25
    custom = {"C": palette["A"], "A": palette["B"], "B": palette["C"]}
    cdf = fg.build_psnr_cdf(lossy_frames, colors=custom)
    bars = fg.build_non_rendered(lossy_frames, colors=custom)
    for line in cdf.axes[0].get_lines():
        assert to_hex(line.get_color()) == custom[line.get_label()]
    for container in bars.axes[0].containers:
        assert to_hex(container.patches[0].get_facecolor()) == custom[container.get_label()]
    # Schemes follow the order of `colors`; a scheme it does not cover gets an unused colour.
    assert legend_labels(cdf) == ["C", "A", "B"]
    extended = fg._colors_for(["A", "B", "Z"], {"A": palette["A"], "B": palette["B"]})
    assert extended["Z"] not in (palette["A"], palette["B"])


# ------------------------------------------------------------------------------------------- 1. CDF


def test_psnr_cdf_has_a_subplot_per_network_and_a_line_per_scheme(lossy_frames: pd.DataFrame,
                                                                  tmp_path: Path) -> None:
    fig = fg.build_psnr_cdf(lossy_frames)
    assert [ax.get_title() for ax in fig.axes] == ["n1", "n2"]
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["A", "B", "C"]
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["A", "B"]
    assert legend_labels(fig) == ["A", "B", "C"]
    a_n1 = fig.axes[0].get_lines()[0]
    # The inf frame cannot be drawn but still counts: the curve stops at 3/4.
    np.testing.assert_allclose(a_n1.get_xdata(), [30, 32, 34])
    np.testing.assert_allclose(a_n1.get_ydata(), [0.25, 0.5, 0.75])
    b_n2 = fig.axes[1].get_lines()[1]
    np.testing.assert_allclose(b_n2.get_ydata(), [0.25, 0.5, 0.75, 1.0])
    assert_png(fg.plot_psnr_cdf(lossy_frames, tmp_path))
    assert (tmp_path / "psnr_cdf.png").is_file()


def test_cdf_points_are_thinned_but_keep_both_ends() -> None:
    x, y = fg.cdf_points(np.arange(10_000, dtype=float), max_points=100)
    assert len(x) == 100 and x[0] == 0 and x[-1] == 9999 and y[-1] == 1.0
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)


def test_cdf_grid_drops_unused_cells() -> None:
    frames = pd.concat([frame_rows("A", f"n{i}", [30, 31]) for i in range(4)], ignore_index=True)
    fig = fg.build_psnr_cdf(frames)
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes] == ["n0", "n1", "n2", "n3"]


# ------------------------------------------------------------------------------------------- 2. box


def test_box_stats_follow_the_thesis_caption() -> None:
    values = np.array([10.0, 20, 30, 40, 50])
    stats = fg.box_stats(values, "x")
    std = float(np.std(values))
    assert (stats["q1"], stats["med"], stats["q3"], stats["mean"]) == (20, 30, 40, 30)
    assert stats["whislo"] == pytest.approx(30 - 1.5 * std) and stats["whishi"] == pytest.approx(30 + 1.5 * std)
    assert stats["fliers"] == [] and stats["label"] == "x"


def test_psnr_box_has_one_box_per_network_and_scheme(lossy_frames: pd.DataFrame, tmp_path: Path) -> None:
    fig = fg.build_psnr_box(lossy_frames)
    (ax,) = fig.axes
    boxes = [p for p in ax.patches if isinstance(p, PathPatch)]
    assert len(boxes) == 5  # n1: A, B, C; n2: A, B
    assert [t.get_text() for t in ax.get_xticklabels()] == ["n1", "n2"]
    assert legend_labels(fig) == ["A", "B", "C"]
    # Whiskers of B on n2 run from the box to mean -/+ 1.5 std.
    values = np.array([22.0, 24, 26, 40])
    stats = fg.box_stats(values)
    ys = [tuple(np.round(line.get_ydata(), 9)) for line in ax.get_lines()]
    assert tuple(np.round([stats["q1"], stats["whislo"]], 9)) in ys
    assert tuple(np.round([stats["q3"], stats["whishi"]], 9)) in ys
    # The inf frame of A on n1 is capped for the statistics, not dropped and not infinite.
    capped = fg.box_stats(np.array([30, 32, 34, fg.PSNR_CAP_DB]))
    assert tuple(np.round([capped["q3"], capped["whishi"]], 9)) in ys
    assert_png(fg.plot_psnr_box(lossy_frames, tmp_path))


# ---------------------------------------------------------------------------------- 3. non-rendered


def test_non_rendered_bar_heights_are_the_percentages(lossy_frames: pd.DataFrame, tmp_path: Path) -> None:
    expected = {("n1", "A"): 50.0, ("n1", "B"): 100.0, ("n1", "C"): 0.0, ("n2", "A"): 20.0, ("n2", "B"): 75.0}
    table = fg.non_rendered_pct(lossy_frames)
    assert {(r.network, r.scheme): r.non_rendered_pct for r in table.itertuples()} == pytest.approx(expected)
    fig = fg.build_non_rendered(lossy_frames)
    (ax,) = fig.axes
    assert [c.get_label() for c in ax.containers] == ["A", "B", "C"]
    heights = {c.get_label(): [p.get_height() for p in c.patches] for c in ax.containers}
    assert heights == {"A": pytest.approx([50.0, 20.0]), "B": pytest.approx([100.0, 75.0]), "C": [0.0]}
    # Bars sit in their network's group: C has a bar only at n1 (x near 0).
    assert abs(ax.containers[2].patches[0].get_x()) < 0.5
    assert legend_labels(fig) == ["A", "B", "C"]
    assert_png(fg.plot_non_rendered(lossy_frames, tmp_path))


def test_non_rendered_accepts_another_definition(lossy_frames: pd.DataFrame, run_logs) -> None:
    below_30 = lossy_frames["psnr_db"] < 30  # the thesis' rule for Reparo
    table = fg.non_rendered_pct(lossy_frames, below_30)
    got = {(r.network, r.scheme): r.non_rendered_pct for r in table.itertuples()}
    assert got == pytest.approx({("n1", "A"): 0.0, ("n1", "B"): 100.0, ("n1", "C"): 0.0, ("n2", "A"): 40.0,
                                 ("n2", "B"): 75.0})
    ax = fg.build_non_rendered(lossy_frames, non_rendered=below_30).axes[0]
    assert [p.get_height() for p in ax.containers[0].patches] == pytest.approx([0.0, 40.0])
    frames, packets = run_logs
    marks = fg.build_time_series(frames, packets, non_rendered=frames["psnr_db"] < 31).axes[1]
    assert {line.get_label(): list(line.get_xdata()) for line in labelled_lines(marks)} == {
        "A": [], "B": list(range(10))}


# ---------------------------------------------------------------------------------- 4. time series


@pytest.fixture()
def run_logs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Schemes A and B, 10 frames, on a calm network and a lossy one (losses at frames 3-4, bad at 3, 4, 7)."""
    ids = list(range(10))
    psnr = [35.0 + 0.1 * i for i in ids]
    frames = pd.concat([
        frame_rows("A", "calm", psnr, keyframe=[i in (0, 6) for i in ids]),
        frame_rows("B", "calm", psnr),
        frame_rows("A", "lossy", psnr, rendered=[i not in (4, 5) for i in ids],
                   keyframe=[i in (0, 6) for i in ids], sent_bytes=[{0: 5000, 6: 3000}.get(i, 800) for i in ids]),
        frame_rows("B", "lossy", [30.0] * 10, sent_bytes=[4000] + [900] * 9),
    ], ignore_index=True)
    packets = pd.concat([
        packet_rows("A", "calm", ids), packet_rows("B", "calm", ids),
        packet_rows("A", "lossy", ids, lost={3: 2, 4: 1}, bad={3, 4, 7}),
        packet_rows("B", "lossy", ids, lost={4: 1}, bad={3, 4, 7}),
    ], ignore_index=True)
    return frames, packets


def test_run_selection_defaults_to_the_lossiest_network(run_logs) -> None:
    frames, packets = run_logs
    assert fg.lossiest_network(frames, packets) == "lossy"
    assert fg.select_run(frames, packets) == ("lossy", "v", 1)
    assert fg.select_run(frames, packets, network="calm") == ("calm", "v", 1)
    assert fg.select_run(frames, packets, seed=7) is None
    assert fg.select_run(frames, None) == ("calm", "v", 1)  # no packets: first network


def test_time_series_panels(run_logs, tmp_path: Path) -> None:
    frames, packets = run_logs
    fig = fg.build_time_series(frames, packets)
    ax_loss, ax_nr, ax_psnr = fig.axes
    assert "network lossy" in fig.get_suptitle()
    assert legend_labels(fig) == ["A", "B"]
    # Lost packets per frame: a marker at each frame that lost any, height = count.
    loss_lines = {line.get_label(): line for line in labelled_lines(ax_loss)}
    assert list(loss_lines) == ["A", "B"]
    assert list(loss_lines["A"].get_xdata()) == [3, 4] and list(loss_lines["A"].get_ydata()) == [2, 1]
    assert list(loss_lines["B"].get_xdata()) == [4] and list(loss_lines["B"].get_ydata()) == [1]
    # GE bad state: frames 3-4 and 7 give two grey bands, on every panel.
    spans = [p for p in ax_loss.patches if isinstance(p, Rectangle)]
    assert sorted((round(p.get_x(), 6), round(p.get_width(), 6)) for p in spans) == [(2.5, 2.0), (6.5, 1.0)]
    assert len([p for p in ax_psnr.patches if isinstance(p, Rectangle)]) == 2
    # Non-rendered marks: one row per scheme.
    marks = {line.get_label(): list(line.get_xdata()) for line in labelled_lines(ax_nr)}
    assert marks == {"A": [4, 5], "B": []}
    assert [t.get_text() for t in ax_nr.get_yticklabels()] == ["A", "B"]
    psnr_lines = labelled_lines(ax_psnr)
    assert [line.get_label() for line in psnr_lines] == ["A", "B"]
    np.testing.assert_allclose(psnr_lines[1].get_ydata(), [30.0] * 10)
    assert_png(fg.plot_time_series(frames, packets, tmp_path))


def test_time_series_parameters(run_logs) -> None:
    frames, packets = run_logs
    calm = fg.build_time_series(frames, packets, network="calm")
    assert "network calm" in calm.get_suptitle()
    assert all(len(line.get_xdata()) == 0 for line in labelled_lines(calm.axes[0]))
    zoom = fg.build_time_series(frames, packets, frame_range=(4, 6))
    np.testing.assert_array_equal(labelled_lines(zoom.axes[2])[0].get_xdata(), [4, 5, 6])
    assert fg.build_time_series(frames, packets, frame_range=(50, 60)) is None
    assert fg.build_time_series(frames, packets, network="nowhere") is None


def test_lost_packet_and_bad_state_helpers(run_logs) -> None:
    _, packets = run_logs
    run = packets[(packets["network"] == "lossy") & (packets["scheme"] == "A")]
    assert list(fg.lost_packets_per_frame(run, range(6))) == [0, 0, 0, 2, 1, 0]
    assert fg.bad_state_frames(packets[packets["network"] == "lossy"]) == [3, 4, 7]
    assert fg.bad_state_frames(packets[packets["network"] == "calm"]) == []
    assert fg._spans([7, 3, 4, 9, 10, 11]) == [(3, 4), (7, 7), (9, 11)]


# ---------------------------------------------------------------------------------- 5. frame sizes


def test_frame_sizes_mark_keyframes(run_logs, tmp_path: Path) -> None:
    frames, packets = run_logs
    fig = fg.build_frame_sizes(frames, packets)
    assert len(fig.axes) == 2
    sizes = {ax.get_lines()[0].get_label(): ax for ax in fig.axes}
    assert list(sizes) == ["A", "B"]
    size_a, keys_a = sizes["A"].get_lines()
    np.testing.assert_allclose(size_a.get_ydata(), [5.0] + [0.8] * 5 + [3.0] + [0.8] * 3)
    assert keys_a.get_label() == "keyframe"
    assert list(keys_a.get_xdata()) == [0, 6] and list(keys_a.get_ydata()) == [5.0, 3.0]
    assert list(sizes["B"].get_lines()[1].get_xdata()) == [0]
    assert "2 keyframes" in sizes["A"].get_title(loc="left")
    assert legend_labels(fig) == ["A", "B", "keyframe"]
    # Shared y axis reaches the largest frame of any scheme.
    assert sizes["B"].get_ylim()[1] >= 5.0
    assert_png(fg.plot_frame_sizes(frames, packets, tmp_path))


# -------------------------------------------------------------------------------- 6. bitrate sweep

SWEEP_SPEC = {
    "experiment": {"name": "sweep", "duration_s": 1},
    "scheme": [
        {"name": "s-50k", "kind": "vp9", "target_kbps": 50, "fec": "streaming"},
        {"name": "s-200k", "kind": "vp9", "target_kbps": 200, "fec": "streaming"},
        {"name": "s-100k", "kind": "vp9", "target_kbps": 100, "fec": "streaming"},
        {"name": "plain", "kind": "vp9", "target_kbps": 80, "fec": "none"},
    ],
    "network": [{"name": "fifo", "delay_ms": 50, "rate": {"kbps": 320}, "queue": {"bytes": 6000}},
                {"name": "open", "delay_ms": 50}],
}


def test_scheme_families_group_schemes_differing_only_in_target() -> None:
    assert fg.scheme_families(SWEEP_SPEC) == {"s": {"s-50k": 50.0, "s-100k": 100.0, "s-200k": 200.0}}
    assert fg.scheme_families(SWEEP_SPEC, ["s-50k", "plain"]) == {}
    unnamed = {"scheme": [{"name": "x", "kind": "vp8", "target_kbps": 1}, {"name": "y", "kind": "vp8",
                                                                           "target_kbps": 2}]}
    assert fg.scheme_families(unnamed) == {"vp8": {"x": 1.0, "y": 2.0}}


def test_bitrate_sweep_x_values_are_the_targets(tmp_path: Path) -> None:
    means = {"s-50k": 30.0, "s-100k": 34.0, "s-200k": 25.0, "plain": 33.0}
    frames = pd.concat([frame_rows(s, "fifo", [m - 1, m + 1]) for s, m in means.items()], ignore_index=True)
    packets = pd.concat([packet_rows(s, "fifo", [0, 1], per_frame=1, nbytes=n)
                         for s, n in (("s-50k", 1000), ("s-100k", 2000), ("s-200k", 4000), ("plain", 10))],
                        ignore_index=True)
    fig = fg.build_bitrate_sweep(frames, SWEEP_SPEC, packets)
    ax_psnr, ax_rate = fig.axes
    (line,) = labelled_lines(ax_psnr)
    assert line.get_label() == "s"
    assert list(line.get_xdata()) == [50, 100, 200]
    np.testing.assert_allclose(line.get_ydata(), [30, 34, 25])
    rates = {line.get_label(): line for line in labelled_lines(ax_rate)}
    # 2 frames x 1 datagram of n bytes in a 1 s run: 16 n bits/s.
    np.testing.assert_allclose(rates["s"].get_ydata(), [16, 32, 64])
    assert "link fifo: 320 kbps" in rates
    assert_png(fg.plot_bitrate_sweep(frames, SWEEP_SPEC, tmp_path, packets=packets))
    # Two networks: one line per (family, network); without packets only the PSNR panel.
    both = pd.concat([frames, frames.assign(network="open")], ignore_index=True)
    fig2 = fg.build_bitrate_sweep(both, SWEEP_SPEC)
    assert len(fig2.axes) == 1
    assert [line.get_label() for line in labelled_lines(fig2.axes[0])] == ["s / fifo", "s / open"]


def test_bitrate_sweep_needs_two_targets(tmp_path: Path) -> None:
    frames = pd.concat([frame_rows("s-50k", "fifo", [30.0]), frame_rows("plain", "fifo", [30.0])],
                       ignore_index=True)
    assert fg.build_bitrate_sweep(frames, SWEEP_SPEC) is None
    assert fg.plot_bitrate_sweep(frames, SWEEP_SPEC, tmp_path) is None
    assert fg.build_bitrate_sweep(frames, None) is None
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- 7. adaptation


def adaptive_logs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """3 s at 30 fps: 'gem' steps 256 -> 128 -> 64 pixels a side (the first switch 5 frames into the second
    window, so the window's most common resolution is 128), sending 100 / 50 / 25 bytes per frame and
    PSNR 36 / 33 / 30 in the three 1 s windows; 'vp8' stays at 256x256."""
    n = 3 * FPS
    window = [i // FPS for i in range(n)]
    gem = frame_rows("gem", "net", [36.0 - 3 * w for w in window],
                     resolution=[f"{s}x{s}" for s in (256 if i < 35 else 128 if i < 60 else 64 for i in range(n))])
    vp8 = frame_rows("vp8", "net", [34.0] * n, resolution="256x256")
    packets = pd.concat([
        packet_rows("gem", "net", list(range(n)), per_frame=1, nbytes=[100 // 2 ** w for w in window]),
        packet_rows("vp8", "net", list(range(n)), per_frame=1, nbytes=80),
    ], ignore_index=True)
    return pd.concat([gem, vp8], ignore_index=True), packets


def test_adaptation_panels_follow_resolution_changes(tmp_path: Path) -> None:
    frames, packets = adaptive_logs()
    assert fg.adaptive_schemes(frames) == ["gem"]
    fig = fg.build_adaptation(frames, packets)
    ax_rate, ax_res, ax_psnr = fig.axes
    assert legend_labels(fig) == ["gem"]
    for ax in fig.axes:
        (line,) = labelled_lines(ax)
        np.testing.assert_allclose(line.get_xdata(), [0.5, 1.5, 2.5])
    # 30 frames x 100 / 50 / 25 bytes per second.
    np.testing.assert_allclose(labelled_lines(ax_rate)[0].get_ydata(), [24, 12, 6])
    np.testing.assert_allclose(labelled_lines(ax_res)[0].get_ydata(), [256 ** 2, 128 ** 2, 64 ** 2])
    np.testing.assert_allclose(labelled_lines(ax_psnr)[0].get_ydata(), [36, 33, 30])
    assert [t.get_text() for t in ax_res.get_yticklabels()] == ["64\u00b2", "128\u00b2", "256\u00b2"]
    assert_png(fg.plot_adaptation(frames, packets, tmp_path))


def test_adaptation_with_a_time_varying_target_in_the_spec() -> None:
    frames, packets = adaptive_logs()
    spec = {"scheme": [{"name": "vp8", "kind": "vp8", "target_schedule": [[0, 500], [1, 200], [2, 50]]}]}
    assert fg.target_schedule(spec["scheme"][0]) == [(0.0, 500.0), (1.0, 200.0), (2.0, 50.0)]
    assert fg.target_schedule({"target_kbps": 300}) is None
    assert fg.adaptive_schemes(frames, spec) == ["gem", "vp8"]
    fig = fg.build_adaptation(frames, packets, spec)
    labels = [line.get_label() for line in labelled_lines(fig.axes[0])]
    assert labels == ["gem", "vp8", "target (vp8)"]
    target = labelled_lines(fig.axes[0])[2]
    assert list(target.get_ydata()) == [500, 200, 50, 50]


def test_adaptation_is_absent_when_resolution_and_target_are_constant(tmp_path: Path) -> None:
    frames, packets = adaptive_logs()
    constant = frames[frames["scheme"] == "vp8"]
    assert fg.adaptive_schemes(constant) == []
    assert fg.build_adaptation(constant, packets) is None
    assert fg.plot_adaptation(constant, packets, tmp_path) is None
    assert not list(tmp_path.iterdir())
    assert list(fg.resolution_pixels(pd.Series(["4x3", None, "junk", "10 x 10"]))[[0, 3]]) == [12.0, 100.0]


# --------------------------------------------------------------------------------------- absent data


def test_absent_data_gives_none_and_no_file(tmp_path: Path, lossy_frames: pd.DataFrame) -> None:
    empty = lossy_frames.iloc[:0]
    no_packets = pd.DataFrame(columns=["scheme", "network", "video", "seed", "flow", "frame_id", "bytes",
                                       "sent_ms", "arrived_ms", "ge_state"])
    assert fg.plot_psnr_cdf(empty, tmp_path) is None
    assert fg.plot_psnr_box(empty, tmp_path) is None
    assert fg.plot_non_rendered(empty, tmp_path) is None
    assert fg.plot_time_series(empty, no_packets, tmp_path) is None
    assert fg.plot_frame_sizes(empty, no_packets, tmp_path) is None
    assert fg.plot_bitrate_sweep(empty, SWEEP_SPEC, tmp_path) is None
    assert fg.plot_adaptation(empty, no_packets, tmp_path) is None
    # Frames without any PSNR: no PSNR figures, but non-rendered still applies.
    unmeasured = lossy_frames.assign(psnr_db=np.nan)
    assert fg.build_psnr_cdf(unmeasured) is None and fg.build_psnr_box(unmeasured) is None
    assert fg.build_time_series(unmeasured, None) is None
    assert not list(tmp_path.iterdir())
    assert fg.build_non_rendered(unmeasured) is not None
    assert fg.save(None, tmp_path / "x.png") is None and not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- render_all, real logs

TINY_SPEC = """
[experiment]
name = "figures"
duration_s = 2
seeds = [1]

[[video]]
name = "carphone"
source = "sample:carphone"
size = [128, 128]

[[scheme]]
name = "vp9-60k"
kind = "vp9"
target_kbps = 60
fec = "streaming"
redundancy = 0.5

[[scheme]]
name = "vp9-120k"
kind = "vp9"
target_kbps = 120
fec = "streaming"
redundancy = 0.5

[[network]]
name = "ge"
delay_ms = 50
loss = { model = "gilbert-elliott", p = 0.068, r = 0.852, loss_good = 0.04, loss_bad = 0.75, clock = "frame" }

[[network]]
name = "fifo"
delay_ms = 50
rate = { kbps = 160 }
queue = { bytes = 3000 }
"""


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real results directory from the simulator (2 schemes x 2 networks, 2 s each)."""
    from testbed.cli import main

    root = tmp_path_factory.mktemp("figures")
    spec = root / "tiny.toml"
    spec.write_text(TINY_SPEC)
    assert main(["run", str(spec), "--out", str(root / "results")]) == 0
    return root / "results"


def test_render_all_writes_every_applicable_figure(tiny_results: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    written = fg.render_all(tiny_results, tmp_path, progress=lambda *args: calls.append(args))
    expected = {"psnr_cdf", "psnr_box", "non_rendered", "time_series", "frame_sizes", "bitrate_sweep"}
    assert set(written) == expected  # constant resolution, constant targets: no adaptation figure
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(fg.FILE_NAMES[n] for n in expected)
    for name, path in written.items():
        assert path == tmp_path / "figures" / fg.FILE_NAMES[name]
        assert_png(path)
    total = len(fg.FILE_NAMES) + 1
    assert calls[0][:2] == (0, total) and calls[-1][:2] == (total, total)
    assert [c[0] for c in calls] == list(range(total + 1)) and all(c[1] == total for c in calls)
    assert "adaptation (not applicable)" in [c[2] for c in calls]


def test_render_all_figures_match_the_logs(tiny_results: Path) -> None:
    frames, packets, spec = fg.load_results(tiny_results)
    colors = fg.scheme_palette([s["name"] for s in spec["scheme"]])
    cdf = fg.build_psnr_cdf(frames, colors)
    assert [ax.get_title() for ax in cdf.axes] == ["ge", "fifo"]
    assert legend_labels(cdf) == ["vp9-60k", "vp9-120k"]
    sweep = fg.build_bitrate_sweep(frames, spec, packets, colors)
    assert [list(line.get_xdata()) for line in labelled_lines(sweep.axes[0])] == [[60.0, 120.0], [60.0, 120.0]]
    summary = pd.read_csv(tiny_results / "summary.csv")
    aggregate = summary[summary["level"] == "aggregate"].set_index(["network", "scheme"])["non_rendered_pct"]
    bars = fg.build_non_rendered(frames, colors).axes[0]
    for container in bars.containers:
        heights = [p.get_height() for p in container.patches]
        assert heights == pytest.approx([aggregate[(n, container.get_label())] for n in ("ge", "fifo")])


def test_render_all_on_a_directory_without_video(tmp_path: Path) -> None:
    calls = []
    assert fg.render_all(tmp_path, tmp_path / "out", progress=lambda *a: calls.append(a)) == {}
    assert len(calls) == len(fg.FILE_NAMES) + 2
