"""PSNR and SSIM: exact values on constructed errors, and agreement with scikit-image."""

import math

import numpy as np
import pytest
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from testbed.analysis.quality import luma, psnr, psnr_y, ssim, ssim_db


def skimage_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """The reference implementation with the parameters of Wang et al. that quality.ssim reproduces."""
    return structural_similarity(
        reference, test, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )


def noisy(frame: np.ndarray, spread: int, seed: int) -> np.ndarray:
    """`frame` plus uniform integer noise in [-spread, spread], clipped to 8 bits."""
    noise = np.random.default_rng(seed).integers(-spread, spread + 1, size=frame.shape)
    return np.clip(frame.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def frame_pairs() -> list:
    """Reference/test pairs: natural (astronaut) with noise and with a shift, random, and a flat frame."""
    rng = np.random.default_rng(7)
    astronaut = data.astronaut()
    random_frame = rng.integers(0, 256, size=(96, 128, 3), dtype=np.uint8)
    flat = np.full((40, 56, 3), 90, dtype=np.uint8)
    return [
        pytest.param(astronaut, noisy(astronaut, 12, seed=1), id="astronaut-noise"),
        pytest.param(astronaut, np.roll(astronaut, 3, axis=1), id="astronaut-shift"),
        pytest.param(random_frame, noisy(random_frame, 40, seed=2), id="random"),
        pytest.param(random_frame, rng.integers(0, 256, size=random_frame.shape, dtype=np.uint8), id="random-vs-random"),
        pytest.param(flat, noisy(flat, 3, seed=3), id="flat-noise"),
    ]


def test_identical_frames() -> None:
    frame = data.astronaut()
    assert psnr(frame, frame.copy()) == math.inf
    assert psnr_y(frame, frame.copy()) == math.inf
    assert ssim(frame, frame.copy()) == pytest.approx(1.0, abs=1e-12)
    assert ssim_db(1.0) == math.inf


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_psnr_of_plus_minus_k_error_is_exact(k: int) -> None:
    # A +k/-k checkerboard error on a mid-gray frame (no clipping): MSE is exactly k^2.
    reference = np.full((32, 48, 3), 128, dtype=np.uint8)
    signs = np.where((np.indices((32, 48, 3)).sum(axis=0) % 2) == 0, 1, -1)
    test = (reference.astype(np.int64) + k * signs).astype(np.uint8)
    assert psnr(reference, test) == pytest.approx(20 * math.log10(255 / k), rel=1e-12)
    assert psnr(reference, test, peak=1.0) == pytest.approx(-20 * math.log10(k), rel=1e-12, abs=1e-12)


def test_psnr_of_uniform_noise_matches_its_variance() -> None:
    # Uniform integers in [-k, k] have mean square k(k+1)/3; the exact sample MSE gives the exact dB value.
    k = 6
    reference = np.full((256, 256, 3), 128, dtype=np.uint8)
    noise = np.random.default_rng(5).integers(-k, k + 1, size=reference.shape)
    test = (reference + noise).astype(np.uint8)
    sample_mse = float(np.mean(noise.astype(np.float64) ** 2))
    assert psnr(reference, test) == pytest.approx(10 * math.log10(255**2 / sample_mse), rel=1e-12)
    assert psnr(reference, test) == pytest.approx(10 * math.log10(255**2 / (k * (k + 1) / 3)), abs=0.02)


def test_psnr_y_uses_bt601_luma() -> None:
    reference = np.zeros((8, 8, 3), dtype=np.uint8)
    test = reference.copy()
    test[..., 1] = 10  # green only: luma error 0.587 * 10 everywhere
    assert psnr_y(reference, test) == pytest.approx(20 * math.log10(255 / 5.87), rel=1e-12)
    assert luma(np.array([[255, 255, 255], [255, 0, 0]], dtype=np.uint8)) == pytest.approx([255.0, 0.299 * 255])


@pytest.mark.parametrize("reference, test", frame_pairs())
def test_psnr_matches_skimage(reference: np.ndarray, test: np.ndarray) -> None:
    assert psnr(reference, test) == pytest.approx(peak_signal_noise_ratio(reference, test, data_range=255), rel=1e-12)
    expected_y = peak_signal_noise_ratio(luma(reference), luma(test), data_range=255)
    assert psnr_y(reference, test) == pytest.approx(expected_y, rel=1e-12)


@pytest.mark.parametrize("reference, test", frame_pairs())
def test_ssim_matches_skimage_on_luma(reference: np.ndarray, test: np.ndarray) -> None:
    assert ssim(reference, test) == pytest.approx(skimage_ssim(luma(reference), luma(test)), abs=1e-10)


def test_ssim_of_gray_frames_matches_skimage() -> None:
    # Odd, non-square sizes check the window bookkeeping on both axes; 11x11 is the smallest accepted frame.
    rng = np.random.default_rng(11)
    for shape in [(37, 53), (11, 11), (64, 20)]:
        reference = rng.integers(0, 256, size=shape, dtype=np.uint8)
        test = noisy(reference, 25, seed=4)
        assert ssim(reference, test) == pytest.approx(skimage_ssim(reference, test), abs=1e-10)


def test_ssim_orders_distortions() -> None:
    astronaut = data.astronaut()
    light, heavy = ssim(astronaut, noisy(astronaut, 4, seed=1)), ssim(astronaut, noisy(astronaut, 40, seed=1))
    assert 1.0 > light > heavy > 0.0


@pytest.mark.parametrize("value, expected", [(0.0, 0.0), (0.9, 10.0), (0.99, 20.0), (0.999, 30.0), (-1.0, -3.0103)])
def test_ssim_db(value: float, expected: float) -> None:
    assert ssim_db(value) == pytest.approx(expected, abs=1e-4)


def test_shape_mismatch_and_tiny_frames_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(np.zeros((10, 40, 3), np.uint8), np.zeros((10, 40, 3), np.uint8))
    with pytest.raises(ValueError, match="3 channels"):
        psnr_y(np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8))
