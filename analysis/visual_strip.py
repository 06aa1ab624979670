"""The visual strip of a freeze: original frames against what every scheme showed, PSNR under each thumbnail."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from testbed.analysis.figures import _new_figure
from testbed.analysis.network_summary import RUN_KEYS

CONTEXT_FRAMES = 2
MAX_COLUMNS = 12


@dataclass(frozen=True)
class FreezeWindow:
    """Display slots around the longest freeze of an experiment, in one (network, video, seed)."""

    network: str
    video: str
    seed: int
    scheme: str
    freeze_ms: float
    frame_ids: tuple[int, ...]


@dataclass(frozen=True)
class StripRow:
    """One row of the strip: a label and, per slot, the picture shown and its PSNR (None: the original)."""

    label: str
    pictures: list[np.ndarray]
    psnr_db: list[float | None]


def worst_freeze_window(frames: pd.DataFrame) -> FreezeWindow | None:
    """The slots from just before to just after the longest W3C freeze (the `freeze` column) in the logs."""
    rendered = frames[frames["rendered"]].sort_values([*RUN_KEYS, "frame_id"])
    gaps = rendered["display_ms"] - rendered.groupby(RUN_KEYS)["display_ms"].shift()
    previous = rendered.groupby(RUN_KEYS)["frame_id"].shift()
    freezes = rendered.assign(gap_ms=gaps, previous=previous)[rendered["freeze"]]
    if freezes.empty:
        return None
    worst = freezes.loc[freezes["gap_ms"].idxmax()]
    last_frame = int(frames.loc[(frames["scheme"] == worst["scheme"]) & (frames["network"] == worst["network"]),
                                "frame_id"].max())
    first = max(0, int(worst["previous"]) - CONTEXT_FRAMES)
    slots = np.arange(first, min(last_frame, int(worst["frame_id"]) + CONTEXT_FRAMES) + 1)
    if len(slots) > MAX_COLUMNS:  # long freezes: evenly spaced slots, first and last kept
        slots = slots[np.unique(np.linspace(0, len(slots) - 1, MAX_COLUMNS).round().astype(int))]
    return FreezeWindow(str(worst["network"]), str(worst["video"]), int(worst["seed"]), str(worst["scheme"]),
                        float(worst["gap_ms"]), tuple(int(s) for s in slots))


def build_visual_strip(window: FreezeWindow, rows: list[StripRow]) -> Figure:
    """A grid: one row per label (original first), one column per slot, PSNR under each thumbnail."""
    columns = len(window.frame_ids)
    fig = _new_figure(1.3 * columns + 1.2, 1.55 * len(rows) + 0.6)
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for r, row in enumerate(rows):
        for c, (picture, value) in enumerate(zip(row.pictures, row.psnr_db)):
            ax = axes[r][c]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {window.frame_ids[c]}", fontsize=8)
            if value is not None:
                ax.set_xlabel("inf dB" if np.isinf(value) else f"{value:.1f} dB", fontsize=8)
            if c == 0:
                ax.set_ylabel(row.label, fontsize=8)
    fig.suptitle(f"Longest freeze: {window.freeze_ms:.0f} ms ({window.scheme}) on {window.network}, "
                 f"{window.video}, seed {window.seed}", fontsize=10)
    return fig
