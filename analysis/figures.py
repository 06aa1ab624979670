"""Figures of a results directory, after the Reparo thesis (Figs. 5-6 .. 5-11) and Gemino's Fig. 3-10.

Reads logs only (``frames.parquet``, ``packets.parquet``, ``spec.toml``); never runs anything. Every
figure has two functions:

``build_<figure>(...) -> matplotlib.figure.Figure | None``
    Draws the figure from DataFrames (and the resolved spec as a dict where needed) and returns it, or
    ``None`` when the data it needs is absent. Only schemes and networks present in the logs are drawn.
``plot_<figure>(..., out_dir) -> Path | None``
    Builds it and writes ``out_dir/<figure>.png`` (see ``FILE_NAMES``); ``None`` and no file when the
    build returned ``None``.

``render_all(results_dir, out_dir)`` writes every applicable figure to ``out_dir/figures/``.

Conventions:
- Colours: ``scheme_palette(schemes)`` gives each scheme a colour from its position in the list (the
  spec's order in ``render_all``), so a scheme keeps its colour in every figure of a results directory.
  Every ``build_*`` takes ``colors`` (scheme -> colour); schemes it does not cover get the next free
  colours. Schemes are drawn in the order of ``colors``, then of first appearance in the logs.
- PSNR can be ``inf`` (shown frame identical to the original). Statistics (box plot, means, windowed
  means) cap it at ``PSNR_CAP_DB``; the CDF counts such frames but cannot draw them, so its curve then
  ends below 1.
- Non-rendered frames are ``~frames.rendered`` (VP9+Tambur's definition, that of ``summary.csv``'s
  ``non_rendered_pct``) unless a boolean mask aligned to the frames' index is passed as ``non_rendered``
  (e.g. one that judges always-rendering schemes by PSNR < 30 dB, as the thesis does for Reparo).
- A lost packet is a forward (media/FEC/rtx) datagram that never arrived (``arrived_ms`` null), whatever the
  cause (loss model, queue overflow, still in flight at the end).
- Matplotlib is used through ``Figure`` objects and the Agg canvas only: no pyplot, no display, no
  global figure state.
"""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from testbed.analysis.aggregate import DB_CAP, capped_db
from testbed.analysis.log_schema import FORWARD_FLOWS
from testbed.analysis.network_summary import RUN_KEYS

DPI = 120
PSNR_CAP_DB = DB_CAP
CDF_MAX_POINTS = 2000

FILE_NAMES = {
    "psnr_cdf": "psnr_cdf.png",
    "psnr_box": "psnr_box.png",
    "non_rendered": "non_rendered.png",
    "time_series": "time_series.png",
    "frame_sizes": "frame_sizes.png",
    "bitrate_sweep": "bitrate_sweep.png",
    "adaptation": "adaptation.png",
}

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_LINESTYLES = ["-", "--", "-.", ":"]
_BAD_STATE_COLOR = "0.85"

Progress = Callable[[int, int, str], None]


# ---------------------------------------------------------------------------------------------- palette


def scheme_palette(schemes: Iterable[str]) -> dict[str, str]:
    """Colour (hex) of each scheme by its position: tab10, tab20 beyond 10 schemes, evenly spaced hues beyond 20."""
    names = list(dict.fromkeys(schemes))
    if len(names) <= 10:
        base = matplotlib.colormaps["tab10"].colors
    elif len(names) <= 20:
        base = matplotlib.colormaps["tab20"].colors
    else:
        hsv = matplotlib.colormaps["hsv"]
        base = [hsv(i / len(names)) for i in range(len(names))]
    return {name: to_hex(base[i]) for i, name in enumerate(names)}


def _colors_for(schemes: Sequence[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    """`colors` extended to every scheme in `schemes`, new ones taking palette colours not yet used."""
    result = dict(colors or {})
    missing = [s for s in schemes if s not in result]
    if missing:
        pool = scheme_palette([*result, *missing])
        used = set(result.values())
        free = [c for c in pool.values() if c not in used]
        for i, scheme in enumerate(missing):
            result[scheme] = free[i] if i < len(free) else pool[scheme]
    return result


def _scheme_order(present: Iterable[str], colors: Mapping[str, str] | None) -> list[str]:
    """Schemes present in the data, in the order of `colors`, then of first appearance."""
    present = list(dict.fromkeys(present))
    known = [s for s in (colors or {}) if s in present]
    return known + [s for s in present if s not in known]


def _unique(values: pd.Series) -> list:
    """Distinct non-null values in order of first appearance."""
    return list(pd.unique(values.dropna()))


# ------------------------------------------------------------------------------------------------ utils


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure | None, path: Path) -> Path | None:
    """Write `fig` as a PNG at `path` (parents created); None, and no file, when `fig` is None."""
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(_STYLE):
        fig.savefig(path, dpi=DPI)
    return path


def _styled(build: Callable[..., Figure | None]) -> Callable[..., Figure | None]:
    """Run a build function under the shared style (rc params are read when artists are created)."""

    def wrapper(*args: Any, **kwargs: Any) -> Figure | None:
        with matplotlib.rc_context(_STYLE):
            return build(*args, **kwargs)

    wrapper.__name__ = build.__name__
    wrapper.__qualname__ = build.__qualname__
    wrapper.__doc__ = build.__doc__
    return wrapper


def _has_psnr(frames: pd.DataFrame | None) -> bool:
    return frames is not None and not frames.empty and "psnr_db" in frames and frames["psnr_db"].notna().any()


def _forward(packets: pd.DataFrame | None) -> pd.DataFrame:
    if packets is None or packets.empty or "flow" not in packets:
        return pd.DataFrame(columns=[*RUN_KEYS, "flow", "frame_id", "bytes", "sent_ms", "arrived_ms", "ge_state"])
    return packets[packets["flow"].isin(FORWARD_FLOWS)]


def _grid(count: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(count, max_cols)
    return math.ceil(count / cols), cols


def _subplots(fig: Figure, count: int, max_cols: int = 3, **kwargs: Any) -> list:
    """Exactly `count` axes on a grid (surplus grid cells removed)."""
    rows, cols = _grid(count, max_cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, **kwargs)).ravel().tolist()
    for ax in axes[count:]:
        fig.delaxes(ax)
    return axes[:count]


def _scheme_legend(fig: Figure, schemes: Sequence[str], colors: Mapping[str, str], kind: str = "line") -> None:
    """One figure-level legend whose labels are exactly the scheme names."""
    if kind == "patch":
        handles = [Patch(facecolor=colors[s], edgecolor="black", label=s) for s in schemes]
    else:
        handles = [Line2D([], [], color=colors[s], lw=2, label=s) for s in schemes]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(schemes), 4), frameon=False)


# ------------------------------------------------------------------------------------------ 1. PSNR CDF


def cdf_points(values: np.ndarray, total: int | None = None,
               max_points: int = CDF_MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF (x sorted, y = rank / total) of finite `values`, thinned to about `max_points` points.

    `total` (default: len(values)) is the population the fractions refer to, so values left out (inf PSNR)
    still count.
    """
    x = np.sort(np.asarray(values, dtype=float))
    total = len(x) if total is None else total
    y = np.arange(1, len(x) + 1) / total if total else np.zeros(0)
    if len(x) > max_points:
        keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
        x, y = x[keep], y[keep]
    return x, y


def _psnr_groups(frames: pd.DataFrame, colors: Mapping[str, str] | None
                 ) -> tuple[pd.DataFrame, list, list[str], dict[str, str]]:
    """Frames with a PSNR, their networks and schemes in drawing order, and every scheme's colour."""
    data = frames[frames["psnr_db"].notna()]
    schemes = _scheme_order(data["scheme"], colors)
    return data, _unique(data["network"]), schemes, _colors_for(schemes, colors)


@_styled
def build_psnr_cdf(frames: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure | None:
    """CDF of per-frame PSNR: one subplot per network, one line per scheme (all videos and seeds pooled)."""
    if not _has_psnr(frames):
        return None
    data, networks, schemes, colors = _psnr_groups(frames, colors)
    rows, cols = _grid(len(networks))
    fig = _new_figure(3.9 * cols + 0.4, 3.2 * rows + 0.7)
    axes = _subplots(fig, len(networks), sharex=True, sharey=True)
    for ax, network in zip(axes, networks):
        here = data[data["network"] == network]
        for scheme in schemes:
            psnr = here.loc[here["scheme"] == scheme, "psnr_db"].to_numpy(dtype=float)
            if len(psnr) == 0:
                continue
            x, y = cdf_points(psnr[np.isfinite(psnr)], total=len(psnr))
            ax.plot(x, y, drawstyle="steps-post", color=colors[scheme], lw=1.6, label=scheme)
        ax.set_title(network)
        ax.set_xlabel("PSNR (dB)")
        ax.set_ylim(0, 1.02)
    for ax in axes[::cols]:
        ax.set_ylabel("fraction of frames")
    _scheme_legend(fig, [s for s in schemes if (data["scheme"] == s).any()], colors)
    fig.suptitle("Per-frame PSNR")
    return fig


def plot_psnr_cdf(frames: pd.DataFrame, out_dir: Path, colors: Mapping[str, str] | None = None) -> Path | None:
    """Write psnr_cdf.png (see build_psnr_cdf)."""
    return save(build_psnr_cdf(frames, colors), Path(out_dir) / FILE_NAMES["psnr_cdf"])


# ------------------------------------------------------------------------------------------ 2. PSNR box


def box_stats(values: np.ndarray, label: str = "") -> dict[str, Any]:
    """Fig. 5-6 box: 25th / 75th percentile box, median line, whiskers at mean -/+ 1.5 standard deviations."""
    values = np.asarray(values, dtype=float)
    mean = float(np.mean(values))
    std = float(np.std(values))
    q1, med, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {"label": label, "q1": q1, "med": med, "q3": q3, "mean": mean,
            "whislo": mean - 1.5 * std, "whishi": mean + 1.5 * std, "fliers": []}


@_styled
def build_psnr_box(frames: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure | None:
    """PSNR box per network (loss level) and scheme, Fig. 5-6 style (see box_stats); the dot is the mean."""
    if not _has_psnr(frames):
        return None
    data, networks, schemes, colors = _psnr_groups(frames, colors)
    width = 0.8 / len(schemes)
    fig = _new_figure(max(5.0, 1.1 + len(networks) * (0.45 * len(schemes) + 0.5)), 4.2)
    ax = fig.subplots()
    for i, network in enumerate(networks):
        here = data[data["network"] == network]
        for j, scheme in enumerate(schemes):
            psnr = capped_db(here.loc[here["scheme"] == scheme, "psnr_db"])
            if len(psnr) == 0:
                continue
            position = i + (j - (len(schemes) - 1) / 2) * width
            ax.bxp([box_stats(psnr, scheme)], positions=[position], widths=width * 0.8, patch_artist=True,
                   showmeans=True, showfliers=False, manage_ticks=False,
                   boxprops={"facecolor": colors[scheme], "alpha": 0.85, "edgecolor": "black"},
                   medianprops={"color": "black", "lw": 1.5},
                   meanprops={"marker": "o", "markerfacecolor": "white", "markeredgecolor": "black",
                              "markersize": 4})
    ax.set_xticks(range(len(networks)), networks)
    ax.set_xlim(-0.6, len(networks) - 0.4)
    ax.set_xlabel("network")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("PSNR per frame: box 25-75 %, median line, whiskers mean \u00b1 1.5 std")
    present = [s for s in schemes if (data["scheme"] == s).any()]
    _scheme_legend(fig, present, colors, kind="patch")
    return fig


def plot_psnr_box(frames: pd.DataFrame, out_dir: Path, colors: Mapping[str, str] | None = None) -> Path | None:
    """Write psnr_box.png (see build_psnr_box)."""
    return save(build_psnr_box(frames, colors), Path(out_dir) / FILE_NAMES["psnr_box"])


# -------------------------------------------------------------------------------------- 3. non-rendered


def _non_rendered_mask(frames: pd.DataFrame, non_rendered: pd.Series | None) -> pd.Series:
    """The given mask (aligned to `frames`' index), else ~rendered; NaN where neither says."""
    if non_rendered is not None:
        return non_rendered.reindex(frames.index).astype("boolean")
    return ~frames["rendered"].astype("boolean")


def non_rendered_pct(frames: pd.DataFrame, non_rendered: pd.Series | None = None) -> pd.DataFrame:
    """Percentage of frames not rendered per (network, scheme), all videos and seeds pooled."""
    mask = _non_rendered_mask(frames, non_rendered)
    known = mask.notna()
    table = mask[known].astype(float).groupby([frames.loc[known, "network"], frames.loc[known, "scheme"]],
                                              sort=False).mean() * 100
    return table.rename("non_rendered_pct").reset_index()


@_styled
def build_non_rendered(frames: pd.DataFrame, colors: Mapping[str, str] | None = None,
                       non_rendered: pd.Series | None = None) -> Figure | None:
    """Bars of non-rendered frames (%) per network, one bar per scheme (Fig. 5-7); values printed on top."""
    if frames is None or frames.empty or (non_rendered is None and "rendered" not in frames):
        return None
    table = non_rendered_pct(frames, non_rendered)
    if table.empty:
        return None
    networks = _unique(table["network"])
    schemes = _scheme_order(table["scheme"], colors)
    colors = _colors_for(schemes, colors)
    width = 0.8 / len(schemes)
    fig = _new_figure(max(5.0, 1.1 + len(networks) * (0.45 * len(schemes) + 0.5)), 4.0)
    ax = fig.subplots()
    for j, scheme in enumerate(schemes):
        rows = table[table["scheme"] == scheme].set_index("network")["non_rendered_pct"]
        x = [i + (j - (len(schemes) - 1) / 2) * width for i, n in enumerate(networks) if n in rows.index]
        heights = [float(rows[n]) for n in networks if n in rows.index]
        bars = ax.bar(x, heights, width * 0.9, color=colors[scheme], edgecolor="black", lw=0.5, label=scheme)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(range(len(networks)), networks)
    ax.set_xlabel("network")
    ax.set_ylabel("non-rendered frames (%)")
    ax.set_ylim(0, max(1.0, float(table["non_rendered_pct"].max()) * 1.15))
    ax.set_title("Frames not rendered")
    _scheme_legend(fig, schemes, colors, kind="patch")
    return fig


def plot_non_rendered(frames: pd.DataFrame, out_dir: Path, colors: Mapping[str, str] | None = None,
                      non_rendered: pd.Series | None = None) -> Path | None:
    """Write non_rendered.png (see build_non_rendered)."""
    return save(build_non_rendered(frames, colors, non_rendered), Path(out_dir) / FILE_NAMES["non_rendered"])


# ----------------------------------------------------------------------------------- run selection


def lossiest_network(frames: pd.DataFrame, packets: pd.DataFrame | None) -> str | None:
    """The network (among those in `frames`) whose forward packets were most often not delivered."""
    networks = _unique(frames["network"]) if frames is not None and not frames.empty else []
    if not networks:
        return None
    forward = _forward(packets)
    forward = forward[forward["network"].isin(networks)]
    if forward.empty:
        return networks[0]
    lost = forward["arrived_ms"].isna().groupby(forward["network"], sort=False).mean()
    return max(networks, key=lambda n: (float(lost.get(n, -1.0)), -networks.index(n)))


def select_run(frames: pd.DataFrame, packets: pd.DataFrame | None = None, network: str | None = None,
               video: str | None = None, seed: int | None = None) -> tuple[str, str, int] | None:
    """(network, video, seed) of one run: the given values, else the lossiest network, its first video and
    lowest seed. None when `frames` holds no such run."""
    if frames is None or frames.empty:
        return None
    network = network if network is not None else lossiest_network(frames, packets)
    data = frames[frames["network"] == network]
    if video is not None:
        data = data[data["video"] == video]
    elif not data.empty:
        video = _unique(data["video"])[0]
        data = data[data["video"] == video]
    if seed is not None:
        data = data[data["seed"] == seed]
    elif not data.empty:
        seed = int(data["seed"].min())
    if data.empty:
        return None
    return network, video, int(seed)


def _run_rows(table: pd.DataFrame, run: tuple[str, str, int]) -> pd.DataFrame:
    network, video, seed = run
    return table[(table["network"] == network) & (table["video"] == video) & (table["seed"] == seed)]


def _spans(ids: Sequence[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive integers as (first, last)."""
    spans: list[tuple[int, int]] = []
    for i in sorted(set(int(v) for v in ids)):
        if spans and i == spans[-1][1] + 1:
            spans[-1] = (spans[-1][0], i)
        else:
            spans.append((i, i))
    return spans


def lost_packets_per_frame(packets: pd.DataFrame, frame_ids: Sequence[int]) -> np.ndarray:
    """Forward datagrams of each frame in `frame_ids` that never arrived (one run, one scheme)."""
    forward = _forward(packets)
    lost = forward[forward["arrived_ms"].isna() & forward["frame_id"].notna()]
    counts = lost["frame_id"].astype(np.int64).value_counts()
    return np.array([int(counts.get(int(f), 0)) for f in frame_ids], dtype=int)


def bad_state_frames(packets: pd.DataFrame) -> list[int]:
    """Frame ids whose forward datagrams met the Gilbert-Elliott bad state (any scheme in `packets`)."""
    forward = _forward(packets)
    if "ge_state" not in forward:
        return []
    bad = forward[(forward["ge_state"] == "bad") & forward["frame_id"].notna()]
    return sorted(set(bad["frame_id"].astype(np.int64).tolist()))


# ------------------------------------------------------------------------------------ 4. time series


@_styled
def build_time_series(frames: pd.DataFrame, packets: pd.DataFrame | None, network: str | None = None,
                      video: str | None = None, seed: int | None = None,
                      frame_range: tuple[int, int] | None = None,
                      colors: Mapping[str, str] | None = None,
                      non_rendered: pd.Series | None = None) -> Figure | None:
    """Fig. 5-8 for one (network, video, seed), by default the lossiest network's first run.

    Three panels over frame index: lost forward packets per frame per scheme (one marker per frame that
    lost any), non-rendered frames as one row of marks per scheme, and PSNR per scheme; grey bands mark
    the frames whose packets met the Gilbert-Elliott bad state.
    `frame_range` = (first, last) frame ids, inclusive, zooms in.
    """
    if frames is not None and not frames.empty:
        frames = frames.assign(_non_rendered=_non_rendered_mask(frames, non_rendered).fillna(False))
    if not _has_psnr(frames):
        return None
    run = select_run(frames, packets, network, video, seed)
    if run is None:
        return None
    run_frames = _run_rows(frames, run).sort_values("frame_id")
    run_packets = _run_rows(_forward(packets), run)
    if frame_range is not None:
        first, last = frame_range
        run_frames = run_frames[run_frames["frame_id"].between(first, last)]
        run_packets = run_packets[run_packets["frame_id"].between(first, last)]
        if run_frames.empty:
            return None
    schemes = _scheme_order(run_frames["scheme"], colors)
    colors = _colors_for(schemes, colors)
    fig = _new_figure(10.0, 7.0)
    ax_loss, ax_nr, ax_psnr = fig.subplots(3, 1, sharex=True, height_ratios=[2, 0.4 + 0.35 * len(schemes), 3])

    bad = _spans(bad_state_frames(run_packets))
    for ax in (ax_loss, ax_nr, ax_psnr):
        for first, last in bad:
            ax.axvspan(first - 0.5, last + 0.5, color=_BAD_STATE_COLOR, lw=0, zorder=0)
    for k, scheme in enumerate(schemes):
        ids = run_frames.loc[run_frames["scheme"] == scheme, "frame_id"].to_numpy()
        lost = lost_packets_per_frame(run_packets[run_packets["scheme"] == scheme], ids)
        hit = lost > 0
        ax_loss.plot(ids[hit], lost[hit], linestyle="none", marker=_MARKERS[k % len(_MARKERS)], markersize=4,
                     markerfacecolor="none", markeredgecolor=colors[scheme], markeredgewidth=1.2, label=scheme)
    ax_loss.set_ylabel("lost packets\nper frame")
    ax_loss.set_ylim(0, max(1.0, ax_loss.get_ylim()[1]))
    if bad:
        ax_loss.legend(handles=[Patch(color=_BAD_STATE_COLOR, label="GE bad state")], loc="upper right")

    for row, scheme in enumerate(schemes):
        mine = run_frames[run_frames["scheme"] == scheme]
        ids = mine.loc[mine["_non_rendered"].astype(bool), "frame_id"].to_numpy()
        ax_nr.plot(ids, np.full(len(ids), row), linestyle="none", marker="|", markersize=9,
                   markeredgewidth=1.5, color=colors[scheme], label=scheme)
    ax_nr.set_yticks(range(len(schemes)), schemes)
    ax_nr.set_ylim(len(schemes) - 0.5, -0.5)
    ax_nr.set_ylabel("not\nrendered")
    ax_nr.grid(False, axis="y")

    for scheme in schemes:
        mine = run_frames[run_frames["scheme"] == scheme]
        ax_psnr.plot(mine["frame_id"], mine["psnr_db"].clip(upper=PSNR_CAP_DB), color=colors[scheme], lw=1.0,
                     label=scheme)
    ax_psnr.set_ylabel("PSNR (dB)")
    ax_psnr.set_xlabel("frame index")
    _scheme_legend(fig, schemes, colors)
    fig.suptitle(f"One run: network {run[0]}, video {run[1]}, seed {run[2]}")
    return fig


def plot_time_series(frames: pd.DataFrame, packets: pd.DataFrame | None, out_dir: Path,
                     **kwargs: Any) -> Path | None:
    """Write time_series.png (see build_time_series; keyword arguments are passed on)."""
    return save(build_time_series(frames, packets, **kwargs), Path(out_dir) / FILE_NAMES["time_series"])


# ------------------------------------------------------------------------------------ 5. frame sizes


@_styled
def build_frame_sizes(frames: pd.DataFrame, packets: pd.DataFrame | None = None, network: str | None = None,
                      video: str | None = None, seed: int | None = None,
                      colors: Mapping[str, str] | None = None) -> Figure | None:
    """Fig. 5-10: bytes sent per frame (media + FEC + headers) over frame index, one subplot per scheme, for
    one (network, video, seed) chosen as in build_time_series; keyframes marked with a triangle."""
    if frames is None or frames.empty or "sent_bytes" not in frames or frames["sent_bytes"].isna().all():
        return None
    run = select_run(frames, packets, network, video, seed)
    if run is None:
        return None
    run_frames = _run_rows(frames, run).sort_values("frame_id")
    schemes = _scheme_order(run_frames["scheme"], colors)
    colors = _colors_for(schemes, colors)
    fig = _new_figure(10.0, 1.2 + (1.9 if len(schemes) <= 4 else 1.45) * len(schemes))
    axes = _subplots(fig, len(schemes), max_cols=1, sharex=True, sharey=True)
    top = 0.0
    for ax, scheme in zip(axes, schemes):
        mine = run_frames[run_frames["scheme"] == scheme]
        kbytes = mine["sent_bytes"].to_numpy(dtype=float) / 1000
        top = max(top, float(np.nanmax(kbytes)) if len(kbytes) else 0.0)
        ax.plot(mine["frame_id"], kbytes, color=colors[scheme], lw=0.9, label=scheme)
        key = mine["keyframe"].fillna(False).astype(bool).to_numpy()
        ax.plot(mine["frame_id"].to_numpy()[key], kbytes[key], linestyle="none", marker="v", markersize=7,
                markerfacecolor=colors[scheme], markeredgecolor="black", label="keyframe")
        count = int(key.sum())
        ax.set_title(f"{scheme}: {count} keyframe{'' if count == 1 else 's'}, mean {np.nanmean(kbytes):.2f} kB"
                     f" per frame", loc="left", fontsize=10)
        ax.set_ylabel("kB")
    # After all plots: set_ylim turns autoscaling off, and the axes share y.
    axes[0].set_ylim(0, max(top, 1e-3) * 1.1)
    handles = [Line2D([], [], color=colors[s], lw=2, label=s) for s in schemes]
    handles.append(Line2D([], [], linestyle="none", marker="v", markersize=7, markerfacecolor="white",
                          markeredgecolor="black", label="keyframe"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), frameon=False)
    axes[-1].set_xlabel("frame index")
    fig.suptitle(f"Bytes sent per frame: network {run[0]}, video {run[1]}, seed {run[2]}")
    return fig


def plot_frame_sizes(frames: pd.DataFrame, packets: pd.DataFrame | None, out_dir: Path,
                     **kwargs: Any) -> Path | None:
    """Write frame_sizes.png (see build_frame_sizes; keyword arguments are passed on)."""
    return save(build_frame_sizes(frames, packets, **kwargs), Path(out_dir) / FILE_NAMES["frame_sizes"])


# ---------------------------------------------------------------------------------- 6. bitrate sweep


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scheme_families(spec: Mapping[str, Any], schemes: Iterable[str] | None = None) -> dict[str, dict[str, float]]:
    """Schemes of the spec that differ only in name and a numeric target_kbps, grouped: family label ->
    {scheme: target_kbps}. Only families with at least 2 distinct targets (among `schemes`, when given).

    The label is the members' common name prefix (trailing separators removed), else the kind."""
    wanted = None if schemes is None else set(schemes)
    groups: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    for table in spec.get("scheme", []) or []:
        name, target = table.get("name"), table.get("target_kbps")
        if name is None or not _is_number(target) or (wanted is not None and name not in wanted):
            continue
        key = json.dumps({k: v for k, v in table.items() if k not in ("name", "target_kbps")},
                         sort_keys=True, default=str)
        groups.setdefault(key, {})[name] = float(target)
        kinds[key] = str(table.get("kind", "scheme"))
    families: dict[str, dict[str, float]] = {}
    for key, members in groups.items():
        if len(set(members.values())) < 2:
            continue
        label = os.path.commonprefix(list(members)).rstrip("-_ .@") or kinds[key]
        while label in families:
            label += "'"
        families[label] = dict(sorted(members.items(), key=lambda item: item[1]))
    return families


def _duration_s(spec: Mapping[str, Any] | None, run_packets: pd.DataFrame) -> float | None:
    duration = (spec or {}).get("experiment", {}).get("duration_s")
    if _is_number(duration) and duration > 0:
        return float(duration)
    if run_packets.empty:
        return None
    span = (run_packets["sent_ms"].max() - run_packets["sent_ms"].min()) / 1000
    return float(span) if span > 0 else None


def sent_kbps(packets: pd.DataFrame, spec: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Forward (media + FEC + rtx) kbps sent per (network, scheme), mean over runs; duration from the spec
    (else each run's span of send times)."""
    forward = _forward(packets)
    rows = []
    for (scheme, network), group in forward.groupby(["scheme", "network"], sort=False):
        rates = []
        for _, run in group.groupby(["video", "seed"], sort=False):
            duration = _duration_s(spec, run)
            if duration:
                rates.append(8 * float(run["bytes"].sum()) / duration / 1000)
        if rates:
            rows.append({"network": network, "scheme": scheme, "sent_kbps": float(np.mean(rates))})
    return pd.DataFrame(rows, columns=["network", "scheme", "sent_kbps"])


def _link_kbps(spec: Mapping[str, Any], network: str) -> float | None:
    for table in spec.get("network", []) or []:
        if table.get("name") == network:
            rate = table.get("rate") or {}
            return float(rate["kbps"]) if isinstance(rate, Mapping) and _is_number(rate.get("kbps")) else None
    return None


@_styled
def build_bitrate_sweep(frames: pd.DataFrame, spec: Mapping[str, Any] | None,
                        packets: pd.DataFrame | None = None,
                        colors: Mapping[str, str] | None = None) -> Figure | None:
    """Fig. 5-11: mean PSNR vs the scheme's target_kbps, one line per (scheme family, network).

    Families are from scheme_families(spec); a line needs at least 2 targets with frames. With packets, a
    second panel shows the forward kbps actually sent against the target (dotted: sent = target; dashed
    grey: the network's rate limit)."""
    if not _has_psnr(frames) or not spec:
        return None
    data = frames[frames["psnr_db"].notna()]
    families = scheme_families(spec, _unique(data["scheme"]))
    if not families:
        return None
    networks = _unique(data["network"])
    colors = _colors_for(_scheme_order(data["scheme"], colors), colors)
    means = data.assign(psnr=np.minimum(data["psnr_db"].to_numpy(dtype=float), PSNR_CAP_DB)) \
        .groupby(["network", "scheme"], sort=False)["psnr"].mean()
    rates = sent_kbps(packets, spec).set_index(["network", "scheme"])["sent_kbps"] \
        if packets is not None and not _forward(packets).empty else None

    lines = []
    for family, members in families.items():
        for k, network in enumerate(networks):
            points = [(target, means[(network, s)], s) for s, target in members.items() if (network, s) in means]
            if len({p[0] for p in points}) >= 2:
                lines.append((family, k, network, points))
    if not lines:
        return None
    with_rates = rates is not None and not rates.empty
    fig = _new_figure(6.5, 6.6 if with_rates else 4.2)
    axes = fig.subplots(2, 1, sharex=True) if with_rates else [fig.subplots()]
    ax_psnr = axes[0]
    label_network = len(networks) > 1
    for family, k, network, points in lines:
        color = colors[next(iter(families[family]))]
        label = f"{family} / {network}" if label_network else family
        style = {"color": color, "marker": _MARKERS[k % len(_MARKERS)],
                 "linestyle": _LINESTYLES[k % len(_LINESTYLES)], "lw": 1.6}
        ax_psnr.plot([p[0] for p in points], [p[1] for p in points], label=label, **style)
        if with_rates:
            sent = [(t, rates[(network, s)]) for t, _, s in points if (network, s) in rates]
            axes[1].plot([p[0] for p in sent], [p[1] for p in sent], label=label, **style)
    ax_psnr.set_ylabel("mean PSNR (dB)")
    ax_psnr.set_title("Mean PSNR vs target bitrate")
    ax_psnr.legend(loc="best")
    if with_rates:
        ax_rate = axes[1]
        targets = sorted({p[0] for *_, points in lines for p in points})
        ax_rate.plot(targets, targets, color="black", linestyle=":", lw=1, label="sent = target")
        for network in sorted({line[2] for line in lines}):
            link = _link_kbps(spec, network)
            if link is not None:
                ax_rate.axhline(link, color="0.5", linestyle="--", lw=1,
                                label=f"link {network}: {link:g} kbps")
        ax_rate.set_ylabel("sent kbps (media + FEC + rtx)")
        ax_rate.set_ylim(bottom=0)
        ax_rate.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("target bitrate (kbps)")
    return fig


def plot_bitrate_sweep(frames: pd.DataFrame, spec: Mapping[str, Any] | None, out_dir: Path,
                       packets: pd.DataFrame | None = None,
                       colors: Mapping[str, str] | None = None) -> Path | None:
    """Write bitrate_sweep.png (see build_bitrate_sweep)."""
    return save(build_bitrate_sweep(frames, spec, packets, colors), Path(out_dir) / FILE_NAMES["bitrate_sweep"])


# ------------------------------------------------------------------------------------- 7. adaptation

_RESOLUTION = re.compile(r"^\s*(\d+)\s*[x\u00d7X]\s*(\d+)\s*$")


def resolution_pixels(values: pd.Series) -> pd.Series:
    """'WxH' strings -> W*H (float, NaN for null or unparsable)."""
    def pixels(value: Any) -> float:
        match = _RESOLUTION.match(value) if isinstance(value, str) else None
        return float(int(match[1]) * int(match[2])) if match else math.nan

    return values.map(pixels).astype(float)


def target_schedule(scheme: Mapping[str, Any]) -> list[tuple[float, float]] | None:
    """A time-varying target of a spec [[scheme]] table as [(time_s, kbps), ...], or None when constant.

    No spec key defines one yet; accepted forms: `target_schedule` or `target_kbps` holding
    [[time_s, kbps], ...] or {"time_s": [...], "kbps": [...]}."""
    for key in ("target_schedule", "target_kbps"):
        value = scheme.get(key)
        if isinstance(value, Mapping) and "time_s" in value and "kbps" in value:
            value = list(zip(value["time_s"], value["kbps"]))
        if isinstance(value, list) and len(value) >= 2 and all(
                isinstance(p, list | tuple) and len(p) == 2 and all(_is_number(v) for v in p) for p in value):
            points = sorted((float(t), float(k)) for t, k in value)
            if len({k for _, k in points}) > 1:
                return points
    return None


def adaptive_schemes(frames: pd.DataFrame, spec: Mapping[str, Any] | None = None) -> list[str]:
    """Schemes whose resolution changes within some run, or whose spec target changes over time."""
    if frames is None or frames.empty:
        return []
    varying = set()
    if "resolution" in frames:
        counts = frames.dropna(subset=["resolution"]).groupby(RUN_KEYS, sort=False)["resolution"].nunique()
        varying = {key[0] for key, n in counts.items() if n > 1}
    for table in (spec or {}).get("scheme", []) or []:
        if target_schedule(table) is not None:
            varying.add(table.get("name"))
    return [s for s in _unique(frames["scheme"]) if s in varying]


def windowed_series(frames: pd.DataFrame, packets: pd.DataFrame | None, window_s: float = 1.0) -> pd.DataFrame:
    """Per window of `window_s` (by capture time / send time) for one run of one scheme: window start (s),
    sent kbps (forward packets), the most common resolution in pixels, mean PSNR (capped)."""
    width_ms = window_s * 1000
    frame_window = np.floor(frames["capture_ms"].to_numpy(dtype=float) / width_ms).astype(np.int64)
    pixels = resolution_pixels(frames["resolution"]).to_numpy() if "resolution" in frames else \
        np.full(len(frames), np.nan)
    psnr = np.minimum(frames["psnr_db"].to_numpy(dtype=float), PSNR_CAP_DB)
    table = pd.DataFrame({"window": frame_window, "pixels": pixels, "psnr": psnr})
    grouped = table.groupby("window", sort=True)
    result = pd.DataFrame({
        "pixels": grouped["pixels"].agg(lambda v: v.mode().iloc[0] if v.notna().any() else np.nan),
        "psnr_db": grouped["psnr"].mean(),
    })
    forward = _forward(packets)
    if not forward.empty:
        packet_window = np.floor(forward["sent_ms"].to_numpy(dtype=float) / width_ms).astype(np.int64)
        kbps = forward["bytes"].groupby(packet_window).sum() * 8 / window_s / 1000
        result = result.join(kbps.rename("kbps"), how="outer")
    else:
        result["kbps"] = np.nan
    result.index.name = "window"
    result = result.reset_index()
    result["start_s"] = result["window"] * window_s
    result["kbps"] = result["kbps"].fillna(0.0) if not forward.empty else result["kbps"]
    return result[["start_s", "kbps", "pixels", "psnr_db"]]


def _first_adaptive_run(frames: pd.DataFrame, schemes: Sequence[str]) -> tuple[str, str, int] | None:
    rows = frames[frames["scheme"].isin(schemes)]
    if rows.empty:
        return None
    first = rows.iloc[0]
    if "resolution" in rows:
        counts = rows.dropna(subset=["resolution"]).groupby(RUN_KEYS, sort=False)["resolution"].nunique()
        changing = [key for key, n in counts.items() if n > 1]
        if changing:
            return changing[0][1], changing[0][2], int(changing[0][3])
    return first["network"], first["video"], int(first["seed"])


@_styled
def build_adaptation(frames: pd.DataFrame, packets: pd.DataFrame | None, spec: Mapping[str, Any] | None = None,
                     network: str | None = None, video: str | None = None, seed: int | None = None,
                     window_s: float = 1.0, colors: Mapping[str, str] | None = None) -> Figure | None:
    """Fig. 3-10: sent bitrate, resolution (pixels) and mean PSNR per `window_s` window over time, for the
    adaptive schemes (adaptive_schemes) in one run: the given (network, video, seed), else the first run in
    which a resolution changes. None when no scheme adapts. A time-varying target is drawn in black."""
    if frames is None or frames.empty:
        return None
    schemes = adaptive_schemes(frames, spec)
    if not schemes:
        return None
    default = _first_adaptive_run(frames, schemes)
    run = (network if network is not None else default[0], video if video is not None else default[1],
           seed if seed is not None else default[2])
    run_frames = _run_rows(frames[frames["scheme"].isin(schemes)], run)
    if run_frames.empty:
        return None
    run_packets = _run_rows(_forward(packets), run)
    schemes = _scheme_order(run_frames["scheme"], colors)
    colors = _colors_for(schemes, colors)
    targets = {t.get("name"): target_schedule(t) for t in (spec or {}).get("scheme", []) or []}
    fig = _new_figure(9.0, 7.5)
    ax_rate, ax_res, ax_psnr = fig.subplots(3, 1, sharex=True)
    all_pixels: set[float] = set()
    for scheme in schemes:
        series = windowed_series(run_frames[run_frames["scheme"] == scheme].sort_values("capture_ms"),
                                 run_packets[run_packets["scheme"] == scheme], window_s)
        centre = series["start_s"] + window_s / 2
        ax_rate.plot(centre, series["kbps"], color=colors[scheme], lw=1.5, label=scheme)
        ax_res.plot(centre, series["pixels"], drawstyle="steps-mid", color=colors[scheme], lw=1.5, label=scheme)
        ax_psnr.plot(centre, series["psnr_db"], color=colors[scheme], lw=1.5, label=scheme)
        all_pixels.update(series["pixels"].dropna().tolist())
        schedule = targets.get(scheme)
        if schedule:
            end = float(series["start_s"].max() + window_s) if len(series) else schedule[-1][0]
            xs = [t for t, _ in schedule] + [max(end, schedule[-1][0])]
            ys = [k for _, k in schedule] + [schedule[-1][1]]
            ax_rate.plot(xs, ys, drawstyle="steps-post", color="black", lw=1.2, linestyle="--",
                         label=f"target ({scheme})")
    ax_rate.set_ylabel("sent kbps")
    ax_rate.set_ylim(bottom=0)
    if any(targets.get(s) for s in schemes):
        ax_rate.legend(loc="upper right", fontsize=8)
    ax_res.set_ylabel("resolution (pixels)")
    ticks = sorted(all_pixels)
    if 0 < len(ticks) <= 8:
        side = [math.isqrt(int(p)) for p in ticks]
        ax_res.set_yticks(ticks, [f"{s}\u00b2" if s * s == int(p) else f"{int(p)}" for s, p in zip(side, ticks)])
    ax_psnr.set_ylabel("mean PSNR (dB)")
    ax_psnr.set_xlabel("time (s)")
    _scheme_legend(fig, schemes, colors)
    fig.suptitle(f"Adaptation over time ({window_s:g} s windows): network {run[0]}, video {run[1]}, "
                 f"seed {run[2]}")
    return fig


def plot_adaptation(frames: pd.DataFrame, packets: pd.DataFrame | None, out_dir: Path,
                    spec: Mapping[str, Any] | None = None, **kwargs: Any) -> Path | None:
    """Write adaptation.png (see build_adaptation; keyword arguments are passed on)."""
    return save(build_adaptation(frames, packets, spec, **kwargs), Path(out_dir) / FILE_NAMES["adaptation"])


# ------------------------------------------------------------------------------------------ render_all

_FRAME_COLUMNS = ["scheme", "network", "video", "seed", "frame_id", "capture_ms", "sent_bytes", "keyframe",
                  "resolution", "rendered", "psnr_db"]
_PACKET_COLUMNS = ["scheme", "network", "video", "seed", "flow", "frame_id", "bytes", "sent_ms", "arrived_ms",
                   "ge_state"]


def _read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=columns)
    import pyarrow.parquet as pq

    available = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in columns if c in available])


def load_results(results_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(frames, packets, spec) of a results directory; only the columns figures use; absent files give empty
    tables / an empty spec."""
    results_dir = Path(results_dir)
    frames = _read_parquet(results_dir / "frames.parquet", _FRAME_COLUMNS)
    packets = _read_parquet(results_dir / "packets.parquet", _PACKET_COLUMNS)
    spec_path = results_dir / "spec.toml"
    spec = tomllib.loads(spec_path.read_text(encoding="utf-8")) if spec_path.exists() else {}
    return frames, packets, spec


def render_all(results_dir: Path, out_dir: Path, progress: Progress | None = None) -> dict[str, Path]:
    """Write every applicable figure of `results_dir` to `out_dir/figures/`; name -> path of those written.

    `progress(done, total, label)` is called once before loading (done = 0) and after each step, label
    naming the step just finished."""
    steps = len(FILE_NAMES) + 1
    report = progress or (lambda done, total, label: None)
    report(0, steps, "loading logs")
    frames, packets, spec = load_results(results_dir)
    report(1, steps, "logs loaded")
    figures_dir = Path(out_dir) / "figures"
    colors = scheme_palette([*(t.get("name") for t in spec.get("scheme", []) or [] if t.get("name")),
                             *_unique(frames.get("scheme", pd.Series(dtype=str))),
                             *_unique(packets.get("scheme", pd.Series(dtype=str)))])
    makers: dict[str, Callable[[], Path | None]] = {
        "psnr_cdf": lambda: plot_psnr_cdf(frames, figures_dir, colors=colors),
        "psnr_box": lambda: plot_psnr_box(frames, figures_dir, colors=colors),
        "non_rendered": lambda: plot_non_rendered(frames, figures_dir, colors=colors),
        "time_series": lambda: plot_time_series(frames, packets, figures_dir, colors=colors),
        "frame_sizes": lambda: plot_frame_sizes(frames, packets, figures_dir, colors=colors),
        "bitrate_sweep": lambda: plot_bitrate_sweep(frames, spec, figures_dir, packets=packets, colors=colors),
        "adaptation": lambda: plot_adaptation(frames, packets, figures_dir, spec=spec, colors=colors),
    }
    written: dict[str, Path] = {}
    for done, (name, make) in enumerate(makers.items(), start=2):
        path = make()
        if path is not None:
            written[name] = path
        report(done, steps, name if path is not None else f"{name} (not applicable)")
    return written
