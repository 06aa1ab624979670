"""Deterministic synthetic clips for tests: a cartoon talking head and i.i.d. noise, generated in numpy."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# Fixed seeds: a clip depends only on (name, size, frames), never on global random state.
TALKING_HEAD_SEED = 20240601
NOISE_SEED = 20240602

# Auto-exposure-like brightness drift: a triangle wave in gain, so it never pauses (a sine would stall at its
# peaks) and every frame differs from the last a little everywhere.
DRIFT_GAIN_AMPLITUDE = 0.08
DRIFT_PERIOD_FRAMES = 96

SKIN = np.array([222.0, 176.0, 146.0])
SHIRT = np.array([60.0, 82.0, 150.0])
SCLERA = np.array([240.0, 240.0, 235.0])
PUPIL = np.array([40.0, 30.0, 25.0])
MOUTH = np.array([120.0, 30.0, 40.0])
WALL_TOP = np.array([92.0, 110.0, 140.0])
WALL_BOTTOM = np.array([150.0, 140.0, 118.0])


def _check_size(size: tuple[int, int], frames: int) -> tuple[int, int]:
    """Validate (width, height) and the frame count, returning (width, height)."""
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive (width, height), got {size}")
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    return width, height


def _paint_ellipse(
    canvas: np.ndarray,
    center: tuple[float, float],
    radii: tuple[float, float],
    color: np.ndarray,
    shade: float = 0.0,
) -> None:
    """Blend an anti-aliased ellipse into `canvas` (H, W, 3 float), darkening towards its rim by `shade`."""
    height, width = canvas.shape[:2]
    (cx, cy), (rx, ry) = center, radii
    # Only the bounding box is touched, which keeps many small ellipses cheap on large frames.
    x0, x1 = max(math.floor(cx - rx - 1), 0), min(math.ceil(cx + rx + 2), width)
    y0, y1 = max(math.floor(cy - ry - 1), 0), min(math.ceil(cy + ry + 2), height)
    if x0 >= x1 or y0 >= y1 or rx <= 0 or ry <= 0:
        return
    ys, xs = np.ogrid[y0:y1, x0:x1]
    radius = np.sqrt(((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2)
    # (1 - radius) * min radius approximates the distance to the rim in pixels: a one-pixel soft edge.
    coverage = np.clip((1.0 - radius) * min(rx, ry) + 0.5, 0.0, 1.0)[..., None]
    fill = color * (1.0 - shade * np.minimum(radius, 1.0) ** 2)[..., None]
    patch = canvas[y0:y1, x0:x1]
    patch += coverage * (fill - patch)


def _background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A static room: wall gradient, mid-frequency colored gratings, sharp-edged 'books' and fine texture."""
    scale = min(width, height)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    vertical = (ys / max(height - 1, 1))[..., None]
    canvas = WALL_TOP + vertical * (WALL_BOTTOM - WALL_TOP)
    for _ in range(3):
        angle = rng.uniform(0.0, math.pi)
        period = scale / rng.uniform(6.0, 20.0)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        wave = np.sin(2.0 * math.pi * (xs * math.cos(angle) + ys * math.sin(angle)) / period + phase)
        canvas += wave[..., None] * rng.uniform(4.0, 14.0, size=3)
    for _ in range(16):
        book_width, book_height = rng.uniform(0.04, 0.16) * scale, rng.uniform(0.1, 0.3) * scale
        left = rng.uniform(0.0, max(width - book_width, 0.0))
        top = rng.uniform(0.0, max(height - book_height, 0.0))
        canvas[round(top):round(top + book_height), round(left):round(left + book_width)] = rng.uniform(30, 230, 3)
    canvas += rng.uniform(-10.0, 10.0, size=(height, width, 1))
    # float32 halves the per-frame copying and blending; 8-bit output needs no more precision.
    return canvas.astype(np.float32)


def _drift_gain(frame_index: int) -> float:
    """Global brightness gain of a frame: a triangle wave around 1."""
    phase = (frame_index / DRIFT_PERIOD_FRAMES) % 1.0
    return 1.0 + DRIFT_GAIN_AMPLITUDE * (4.0 * abs(phase - 0.5) - 1.0)


def _talking_head(width: int, height: int, frames: int) -> np.ndarray:
    """A head swaying in front of a textured wall; eyes look around and blink, the mouth talks."""
    rng = np.random.default_rng(TALKING_HEAD_SEED)
    background = _background(width, height, rng)
    scale = min(width, height)
    face_rx, face_ry = 0.17 * scale, 0.23 * scale
    clip = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        canvas = background.copy()
        # Incommensurate periods (in frames) so the motion does not repeat within a typical clip.
        cx = width / 2 + 0.09 * scale * math.sin(2 * math.pi * t / 75)
        cy = 0.5 * height + 0.04 * scale * math.sin(2 * math.pi * t / 47 + 1.0)
        _paint_ellipse(canvas, (cx, height + 0.12 * scale), (0.45 * scale, 0.36 * scale), SHIRT, shade=0.2)
        _paint_ellipse(canvas, (cx, cy), (face_rx, face_ry), SKIN, shade=0.25)
        openness = 0.15 if t % 40 in (37, 38) else 1.0
        gaze = 0.4 * math.sin(2 * math.pi * t / 60)
        eye_rx, eye_ry = 0.18 * face_rx, 0.1 * face_ry * openness
        for side in (-1, 1):
            eye_x, eye_y = cx + side * 0.38 * face_rx, cy - 0.22 * face_ry
            _paint_ellipse(canvas, (eye_x, eye_y), (eye_rx, eye_ry), SCLERA)
            pupil_r = 0.5 * eye_rx
            _paint_ellipse(canvas, (eye_x + gaze * eye_rx, eye_y), (pupil_r, min(pupil_r, eye_ry)), PUPIL)
        mouth_open = 0.5 + 0.5 * math.sin(2 * math.pi * t / 9)
        _paint_ellipse(canvas, (cx, cy + 0.5 * face_ry), (0.32 * face_rx, (0.03 + 0.1 * mouth_open) * face_ry), MOUTH)
        clip[t] = np.clip(np.rint(canvas * _drift_gain(t)), 0, 255)
    return clip


def _noise(width: int, height: int, frames: int) -> np.ndarray:
    """Independent uniform noise in every sample: nothing to predict, the worst case for a codec."""
    rng = np.random.default_rng(NOISE_SEED)
    return rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)


_GENERATORS: dict[str, Callable[[int, int, int], np.ndarray]] = {
    "talking-head": _talking_head,
    "noise": _noise,
}
SYNTHETIC_NAMES = tuple(_GENERATORS)


def synthetic_clip(name: str, size: tuple[int, int], frames: int = 90) -> np.ndarray:
    """Frames (frames, H, W, 3) uint8 RGB of the named synthetic clip at size (width, height); deterministic."""
    if name not in _GENERATORS:
        raise ValueError(f"unknown synthetic clip {name!r} (known: {', '.join(SYNTHETIC_NAMES)})")
    width, height = _check_size(size, frames)
    return _GENERATORS[name](width, height, frames)
