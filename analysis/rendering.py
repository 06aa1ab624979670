"""Non-rendered frames under the three definitions used to compare codecs with and without frame dependencies.

``dependency`` -- for codecs whose frames depend on earlier ones (VP8/VP9 + FEC): a frame is not rendered
    when it was not played, because of its own loss or an undecodable reference (``~rendered`` in
    frames.parquet). Thesis ch. 5.3, VP9+Tambur.
``threshold`` -- for neural codecs that always render something (Reparo): a frame counts as not rendered
    when its PSNR is below ``threshold_db`` (30 dB in the thesis, ch. 5.3).
``relative`` -- a frame counts as not rendered when its PSNR is more than ``relative_db`` below the same
    scheme's PSNR for that frame in a paired loss-free run, so a scheme is judged against its own
    loss-free quality rather than an absolute bar. Frames pair on (scheme, video, seed, frame_id); the
    loss-free run's network is not a key. ``DEFAULT_RELATIVE_DB`` = 3 dB is our choice, not a published one.

Infinite PSNR (identical frames) compares as IEEE floats: inf is never below a bar, and never more than
``relative_db`` below an infinite loss-free PSNR (inf - 3 = inf), while any finite PSNR is below it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import pandas as pd

Rule = Literal["dependency", "threshold", "relative"]
RULES: tuple[str, ...] = get_args(Rule)

DEFAULT_THRESHOLD_DB = 30.0
DEFAULT_RELATIVE_DB = 3.0

# Frames of a lossy run and of its loss-free twin pair on these columns (the network differs by design).
PAIR_KEYS = ["scheme", "video", "seed", "frame_id"]


def _check_psnr(psnr: pd.Series, what: str) -> None:
    """A missing PSNR would silently count as rendered under both PSNR rules, so refuse it."""
    if psnr.isna().any():
        raise ValueError(f"{what} has {int(psnr.isna().sum())} frames without psnr_db")


def _first_key(keys: pd.DataFrame) -> tuple:
    """The first row of `keys` as plain Python values, for readable error messages."""
    return next(keys.itertuples(index=False, name=None))


def _lossless_psnr(frames: pd.DataFrame, lossless_frames: pd.DataFrame) -> pd.Series:
    """The loss-free PSNR of each frame's twin, aligned with `frames`; raises on missing or ambiguous twins."""
    twins = lossless_frames[PAIR_KEYS + ["psnr_db"]]
    duplicated = twins.duplicated(PAIR_KEYS)
    if duplicated.any():
        key = _first_key(twins.loc[duplicated, PAIR_KEYS])
        raise ValueError(f"loss-free frames are ambiguous: {int(duplicated.sum())} repeat a "
                         f"(scheme, video, seed, frame_id), e.g. {key} (pass the frames of one loss-free network)")
    _check_psnr(twins["psnr_db"], "the loss-free frames table")
    paired = frames[PAIR_KEYS].merge(twins, on=PAIR_KEYS, how="left")
    missing = paired["psnr_db"].isna()
    if missing.any():
        key = _first_key(paired.loc[missing, PAIR_KEYS])
        raise ValueError(f"{int(missing.sum())} frames have no loss-free twin, e.g. (scheme, video, seed, "
                         f"frame_id) = {key}")
    # A left merge keeps the left order, so positions line up with `frames`.
    return pd.Series(paired["psnr_db"].to_numpy(), index=frames.index)


def non_rendered_mask(
    frames: pd.DataFrame,
    rule: Rule = "dependency",
    *,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    relative_db: float = DEFAULT_RELATIVE_DB,
    lossless_frames: pd.DataFrame | None = None,
) -> pd.Series:
    """Boolean Series (index of `frames`): True where the frame counts as not rendered under `rule`."""
    if rule == "dependency":
        return (~frames["rendered"].astype(bool)).rename("non_rendered")
    if rule == "threshold":
        _check_psnr(frames["psnr_db"], "the frames table")
        return (frames["psnr_db"] < threshold_db).rename("non_rendered")
    if rule == "relative":
        if lossless_frames is None:
            raise ValueError('rule "relative" needs lossless_frames, the frames of a paired loss-free run')
        _check_psnr(frames["psnr_db"], "the frames table")
        reference = _lossless_psnr(frames, lossless_frames)
        return (frames["psnr_db"] < reference - relative_db).rename("non_rendered")
    raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")


def always_rendering_schemes(frames: pd.DataFrame) -> list[str]:
    """Schemes whose `rendered` column is True in every frame of every run (in order of appearance)."""
    rendered_everywhere = frames.groupby("scheme", sort=False)["rendered"].all()
    return [str(scheme) for scheme, always in rendered_everywhere.items() if always]


def choose_rules(
    frames: pd.DataFrame,
    always_rendering_rule: Rule = "threshold",
    overrides: Mapping[str, Rule] | None = None,
) -> dict[str, Rule]:
    """The rule for each scheme: `overrides` first, else `always_rendering_rule` for always-rendering ones.

    The heuristic reads "rendered in every frame of every run" as "a codec that always renders" (Reparo):
    a dependency codec that never lost a frame in these logs (e.g. only loss-free networks) also matches,
    and is then judged by PSNR. Pass `overrides` (scheme -> rule) where that matters.
    """
    overrides = dict(overrides or {})
    for scheme, rule in overrides.items():
        if rule not in RULES:
            raise ValueError(f"scheme {scheme!r}: unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    always = set(always_rendering_schemes(frames))
    rules: dict[str, Rule] = {}
    for scheme in frames["scheme"].drop_duplicates():
        rules[scheme] = overrides.get(scheme, always_rendering_rule if scheme in always else "dependency")
    return rules


def non_rendered_by_scheme(
    frames: pd.DataFrame,
    rules: Mapping[str, Rule] | None = None,
    *,
    threshold_db: float = DEFAULT_THRESHOLD_DB,
    relative_db: float = DEFAULT_RELATIVE_DB,
    lossless_frames: pd.DataFrame | None = None,
) -> pd.Series:
    """Non-rendered mask with each scheme judged by its own rule (`rules`, default `choose_rules(frames)`)."""
    if not frames.index.is_unique:
        raise ValueError("frames needs a unique index to carry per-scheme results back")
    rules = choose_rules(frames) if rules is None else rules
    mask = pd.Series(False, index=frames.index, name="non_rendered")
    for scheme, group in frames.groupby("scheme", sort=False):
        if scheme not in rules:
            raise ValueError(f"no non-rendered rule for scheme {scheme!r}")
        mask[group.index] = non_rendered_mask(group, rules[scheme], threshold_db=threshold_db,
                                              relative_db=relative_db, lossless_frames=lossless_frames)
    return mask
