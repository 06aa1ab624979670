"""Frame quality metrics: PSNR over RGB or luma, and SSIM (Wang et al. 2004) on BT.601 luma, in plain numpy."""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# BT.601 luma from gamma-encoded full-range R'G'B' (the JPEG / ITU-R BT.601 weights), left unrounded.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])

SSIM_SIGMA = 1.5
# scikit-image truncates its Gaussian at 3.5 sigma: radius int(3.5 * 1.5 + 0.5) = 5, an 11-tap window.
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# SSIM is defined for 8-bit frames here; the constants C1, C2 scale with this range.
SSIM_DATA_RANGE = 255.0


def _gaussian_taps() -> np.ndarray:
    """The normalized 1-D Gaussian window, the same weights as scipy.ndimage.gaussian_filter uses."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    taps = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


_GAUSSIAN_TAPS = _gaussian_taps()


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    """Reject frames that cannot be compared sample by sample."""
    if reference.shape != test.shape:
        raise ValueError(f"frames differ in shape: {reference.shape} vs {test.shape}")
    if reference.size == 0:
        raise ValueError("frames are empty")


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma Y' = 0.299 R' + 0.587 G' + 0.114 B' of an RGB frame (..., 3), as unrounded float64."""
    if frame.shape[-1:] != (3,):
        raise ValueError(f"expected an RGB frame with 3 channels last, got shape {frame.shape}")
    return frame.astype(np.float64) @ LUMA_WEIGHTS


def quantile(values: np.ndarray, q: float) -> float:
    """Linear-interpolated quantile; NaN for no values."""
    return float(np.quantile(values, q)) if len(values) else float("nan")


def psnr(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB over every sample (all channels) of two same-shaped frames; inf when they are identical."""
    _check_pair(reference, test)
    # float64 holds the integer squared errors of 8-bit frames exactly, so the MSE is exact up to the final division;
    # a dot product of the flattened errors avoids materialising their squares.
    error = (reference.astype(np.float64) - test).ravel()
    mse = float(np.dot(error, error)) / error.size
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr_y(reference: np.ndarray, test: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of the BT.601 luma (unrounded) of two RGB frames; inf when the lumas are identical."""
    _check_pair(reference, test)
    return psnr(luma(reference), luma(test), peak)


def _gray(frame: np.ndarray) -> np.ndarray:
    """The plane SSIM is computed on: BT.601 luma of an RGB frame, a 2-D frame as it is; float64."""
    if frame.ndim == 3:
        return luma(frame)
    if frame.ndim == 2:
        return frame.astype(np.float64)
    raise ValueError(f"expected an (H, W, 3) RGB or (H, W) gray frame, got shape {frame.shape}")


def _window_means(planes: np.ndarray, axis: int) -> np.ndarray:
    """Gaussian-weighted means along `axis` over every window that fits entirely (no padding)."""
    return sliding_window_view(planes, len(_GAUSSIAN_TAPS), axis=axis) @ _GAUSSIAN_TAPS


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM of two 8-bit frames, on BT.601 luma for RGB frames (a 2-D frame is used as it is)."""
    _check_pair(reference, test)
    x, y = _gray(reference), _gray(test)
    window = len(_GAUSSIAN_TAPS)
    if min(x.shape) < window:
        raise ValueError(f"SSIM needs frames of at least {window}x{window} pixels, got shape {reference.shape}")
    # scikit-image filters with reflected borders and then drops a `radius`-wide border from the mean, so
    # filtering only where the window fits gives exactly the values it averages, without computing the rest.
    means = _window_means(_window_means(np.stack([x, y, x * x, y * y, x * y]), axis=1), axis=2)
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = means
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    mean_x_y = mean_x * mean_y
    mean_x_sq = mean_x * mean_x
    mean_y_sq = mean_y * mean_y
    # Population (not sample) variances and covariance, as in Wang et al.
    numerator = (2.0 * mean_x_y + c1) * (2.0 * (mean_xy - mean_x_y) + c2)
    denominator = (mean_x_sq + mean_y_sq + c1) * ((mean_xx - mean_x_sq) + (mean_yy - mean_y_sq) + c2)
    return float(np.mean(numerator / denominator))


def ssim_db(value: float | np.ndarray) -> float | np.ndarray:
    """SSIM on a decibel scale, -10 log10(1 - SSIM), which spreads out values near 1; inf for SSIM 1."""
    with np.errstate(divide="ignore"):
        result = -10.0 * np.log10(1.0 - np.asarray(value, dtype=float))
    return float(result) if np.ndim(result) == 0 else result
