"""Non-rendered frames (testbed.analysis.rendering) under the dependency, threshold and relative rules."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from testbed.analysis.rendering import (
    always_rendering_schemes,
    choose_rules,
    non_rendered_by_scheme,
    non_rendered_mask,
)


def frames_table(scheme: str, psnr: list[float], rendered: list[bool] | None = None, *, network: str = "ge",
                 video: str = "v", seed: int = 1) -> pd.DataFrame:
    """One run's frames with ids 0.. and the columns the rules read."""
    return pd.DataFrame({
        "scheme": scheme, "network": network, "video": video, "seed": seed,
        "frame_id": range(len(psnr)), "psnr_db": psnr,
        "rendered": [True] * len(psnr) if rendered is None else rendered,
    })


def test_dependency_rule_is_not_rendered() -> None:
    frames = frames_table("vp9", [35.0, 20.0, 36.0, 10.0], [True, False, True, False])
    assert non_rendered_mask(frames).tolist() == [False, True, False, True]


def test_threshold_rule_is_strictly_below_the_bar_and_ignores_rendered() -> None:
    frames = frames_table("reparo", [29.99, 30.0, 45.0, math.inf, 12.0], [True, True, True, True, False])
    assert non_rendered_mask(frames, "threshold").tolist() == [True, False, False, False, True]
    assert non_rendered_mask(frames, "threshold", threshold_db=45.0).tolist() == [True, True, False, False, True]


def test_threshold_rule_refuses_missing_psnr() -> None:
    frames = frames_table("reparo", [35.0, float("nan")])
    with pytest.raises(ValueError, match="1 frames without psnr_db"):
        non_rendered_mask(frames, "threshold")


def test_relative_rule_pairs_on_scheme_video_seed_and_frame_not_network() -> None:
    lossy = frames_table("reparo", [40.0, 36.9, 37.0, math.inf, 20.0, 39.0], network="ge-high")
    twin = frames_table("reparo", [40.0, 40.0, 40.0, math.inf, math.inf, 40.0], network="lossless")
    # Decoys that must not be paired: another seed, another scheme, another video, and a shuffled order.
    decoys = pd.concat([
        frames_table("reparo", [10.0] * 6, network="lossless", seed=2),
        frames_table("vp9", [10.0] * 6, network="lossless"),
        frames_table("reparo", [10.0] * 6, network="lossless", video="w"),
    ])
    lossless = pd.concat([decoys, twin]).sample(frac=1.0, random_state=3)
    mask = non_rendered_mask(lossy, "relative", relative_db=3.0, lossless_frames=lossless)
    # 36.9 < 40 - 3; 37.0 is not; inf vs inf is never below; a finite PSNR is below an infinite twin.
    assert mask.tolist() == [False, True, False, False, True, False]
    assert non_rendered_mask(lossy, "relative", relative_db=0.5, lossless_frames=lossless).tolist() == [
        False, True, True, False, True, True]


def test_relative_rule_keeps_the_index_of_the_frames() -> None:
    lossy = frames_table("reparo", [30.0, 39.0, 20.0]).set_index(pd.Index([7, 3, 5]))
    lossless = frames_table("reparo", [40.0, 40.0, 40.0], network="lossless").iloc[::-1]
    mask = non_rendered_mask(lossy, "relative", relative_db=3.0, lossless_frames=lossless)
    assert mask.to_dict() == {7: True, 3: False, 5: True}


def test_relative_rule_raises_on_frames_without_a_twin() -> None:
    lossy = frames_table("reparo", [40.0, 40.0, 40.0])
    lossless = frames_table("reparo", [40.0, 40.0], network="lossless")
    with pytest.raises(ValueError, match=r"1 frames have no loss-free twin, e\.g\. .*'reparo', 'v', 1, 2"):
        non_rendered_mask(lossy, "relative", lossless_frames=lossless)


def test_relative_rule_raises_on_ambiguous_twins() -> None:
    lossy = frames_table("reparo", [40.0])
    lossless = pd.concat([frames_table("reparo", [40.0], network="a"), frames_table("reparo", [41.0], network="b")])
    with pytest.raises(ValueError, match="ambiguous"):
        non_rendered_mask(lossy, "relative", lossless_frames=lossless)


def test_relative_rule_needs_the_lossless_frames() -> None:
    with pytest.raises(ValueError, match="needs lossless_frames"):
        non_rendered_mask(frames_table("reparo", [40.0]), "relative")


def test_unknown_rule_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown rule 'psnr'"):
        non_rendered_mask(frames_table("reparo", [40.0]), "psnr")  # type: ignore[arg-type]


def mixed_schemes() -> pd.DataFrame:
    """vp9 drops a frame on one network only; reparo renders everything everywhere."""
    return pd.concat([
        frames_table("vp9", [35.0, 25.0, 35.0], [True, True, True], network="lossless"),
        frames_table("vp9", [35.0, 20.0, 25.0], [True, False, True], network="ge"),
        frames_table("reparo", [35.0, 25.0, 31.0], network="ge"),
    ], ignore_index=True)


def test_always_rendering_schemes_must_render_in_every_run() -> None:
    assert always_rendering_schemes(mixed_schemes()) == ["reparo"]


def test_choose_rules_heuristic_and_overrides() -> None:
    frames = mixed_schemes()
    assert choose_rules(frames) == {"vp9": "dependency", "reparo": "threshold"}
    assert choose_rules(frames, "relative") == {"vp9": "dependency", "reparo": "relative"}
    assert choose_rules(frames, overrides={"vp9": "threshold"}) == {"vp9": "threshold", "reparo": "threshold"}
    with pytest.raises(ValueError, match="scheme 'vp9': unknown rule"):
        choose_rules(frames, overrides={"vp9": "never"})  # type: ignore[dict-item]


def test_non_rendered_by_scheme_applies_each_scheme_its_rule() -> None:
    frames = mixed_schemes().set_index(pd.Index(range(100, 109)))
    mask = non_rendered_by_scheme(frames)
    # vp9: ~rendered (its 25 dB frames still count as rendered); reparo: PSNR < 30 dB.
    assert mask.tolist() == [False, False, False, False, True, False, False, True, False]
    assert mask.index.equals(frames.index)
    explicit = non_rendered_by_scheme(frames, {"vp9": "threshold", "reparo": "threshold"}, threshold_db=32.0)
    assert explicit.tolist() == [False, True, False, False, True, True, False, True, True]


def test_non_rendered_by_scheme_relative_for_the_always_rendering_scheme() -> None:
    frames = mixed_schemes()
    lossless = pd.concat([frames_table("reparo", [36.0, 36.0, 36.0], network="lossless"),
                          frames_table("vp9", [35.0, 35.0, 35.0], network="lossless")])
    mask = non_rendered_by_scheme(frames, choose_rules(frames, "relative"), relative_db=4.0,
                                  lossless_frames=lossless)
    assert mask.tolist() == [False, False, False, False, True, False, False, True, True]


def test_non_rendered_by_scheme_needs_a_rule_for_every_scheme_and_a_unique_index() -> None:
    frames = mixed_schemes()
    with pytest.raises(ValueError, match="no non-rendered rule for scheme 'reparo'"):
        non_rendered_by_scheme(frames, {"vp9": "dependency"})
    with pytest.raises(ValueError, match="unique index"):
        non_rendered_by_scheme(frames.set_index(pd.Index([0] * len(frames))))
