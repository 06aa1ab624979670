"""VP8/VP9 through PyAV's libvpx wrappers: a real-time CBR encoder that emits one frame per frame in, and a decoder.

Behaviours measured on PyAV 18.1 (FFmpeg 8, libvpx bundled in the wheel), pinned by tests/test_vpx.py:
- FFmpeg silently ignores option names it does not know, so every option below was checked for its effect on the
  output. Without lag-in-frames=0 VP9 holds back 25 frames (VP8 here never does); without bufsize/rc_init_occupancy
  VP9's first keyframe took ~0.9 s worth of bits (libvpx's default 6 s buffer) and the rate then undershot.
- FFmpeg reads the bitrate only when the encoder opens, so changing it reopens libvpx and costs a keyframe.
- Decoding never checks references: a frame whose reference was lost decodes without error into drifted pixels
  (thanks to error-resilient mode; without it VP9 rejects every frame after a loss and VP8 drifts much further).
- libvpx rejects (DecodeError) garbage, truncated frames and inter frames before the first keyframe. After a rejected
  frame the VP9 decoder also rejects every inter frame until the next keyframe. VP8 carries on, though a truncated
  frame it rejected may already have altered its references.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

# FFmpeg's libvpx encoders and decoders share these names; decoding with libvpx too (not FFmpeg's native vp8/vp9)
# matches the reference systems and rejects truncated VP9 frames that the native decoder silently accepts.
LIBVPX_NAMES = {"vp9": "libvpx-vp9", "vp8": "libvpx"}

# libvpx output depends on its thread count (row-mt and tiles split the work differently), so it is fixed rather
# than left to the machine's core count: streams are then reproducible everywhere. One thread: sweeps run one
# process per core (--jobs), and on one core a second encoder thread only adds switching (4.1 vs 4.6 ms/frame).
ENCODER_THREADS = 1

# A keyframe distance libvpx never reaches: keyframes only at the start and when forced.
NO_PERIODIC_KEYFRAMES = 2**31 - 1

VP8_KEYFRAME_START_CODE = b"\x9d\x01\x2a"
VP9_KEYFRAME_SYNC_CODE = b"\x49\x83\x42"


class DecodeError(Exception):
    """libvpx rejected the data handed to the decoder."""


@dataclass(frozen=True, slots=True)
class EncodedFrame:
    """One compressed video frame, as libvpx emitted it."""

    data: bytes
    keyframe: bool


def is_keyframe(codec: str, data: bytes) -> bool:
    """Whether `data` starts a keyframe, read from the bitstream header alone (what a receiver sees)."""
    if codec == "vp8":
        # Frame tag bit 0 is 0 on keyframes, which then carry a start code after the 3-byte tag.
        return len(data) >= 6 and data[0] & 1 == 0 and data[3:6] == VP8_KEYFRAME_START_CODE
    if codec == "vp9":
        # Profile 0 header byte: frame marker 0b10, profile bits 00, show_existing_frame 0, frame_type 0 (key),
        # then a sync code. The encoder only produces profile 0 (8-bit 4:2:0).
        return len(data) >= 4 and data[0] & 0xFC == 0x80 and data[1:4] == VP9_KEYFRAME_SYNC_CODE
    raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(LIBVPX_NAMES)}")


def _codec_options(codec: str, target_kbps: float, keyframe_interval: int | None) -> dict[str, str]:
    """FFmpeg options for real-time CBR; FFmpeg ignores names it does not know, so each one's effect was checked."""
    bit_rate = round(target_kbps * 1000)
    keyframe_distance = str(keyframe_interval or NO_PERIODIC_KEYFRAMES)
    options = {
        "deadline": "realtime",
        "lag-in-frames": "0",
        # VPX_ERROR_RESILIENT_DEFAULT: frames depend on earlier ones only through reference pictures (no carried-over
        # probabilities or motion vectors), so a lost frame breaks the reference chain and nothing else.
        "error-resilient": "1",
        # FFmpeg selects libvpx CBR only when minrate == maxrate == bit rate.
        "minrate": str(bit_rate),
        "maxrate": str(bit_rate),
        # Real-time rate buffer as in Ringmaster/WebRTC: 1 s, starting half full (FFmpeg fixes optimal at 5/6).
        "bufsize": str(bit_rate),
        "rc_init_occupancy": str(bit_rate // 2),
        # libvpx places keyframes by itself (e.g. on scene cuts) only if these differ; equal means a fixed interval.
        "g": keyframe_distance,
        "keyint_min": keyframe_distance,
        "threads": str(ENCODER_THREADS),
    }
    if codec == "vp9":
        # Ringmaster's settings: 2 tile columns (log2 1; libvpx caps 512 px wide frames at 2), cyclic-refresh AQ.
        return options | {"cpu-used": "8", "row-mt": "1", "tile-columns": "1", "aq-mode": "3"}
    # VP8 real time reads a negative cpu-used as a fixed speed (positive adapts speed to wall-clock time, which
    # makes output timing-dependent); 6 is WebRTC's desktop default, also used by aiortc and so by Gemino.
    return options | {"cpu-used": "-6"}


def _frame_rate(fps: float | Fraction) -> Fraction:
    """Exact frame rate; float NTSC rates such as 29.97 come back as 2997/100, 30000/1001 stays 30000/1001."""
    return Fraction(fps).limit_denominator(1001)


def to_yuv420(rgb: np.ndarray) -> av.VideoFrame:
    """Convert a (height, width, 3) uint8 RGB frame to the yuv420p picture libvpx encodes (reusable)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (height, width, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


class VpxEncoder:
    """Real-time CBR libvpx encoder: exactly one encoded frame per input frame, returned synchronously."""

    def __init__(
        self,
        codec: str,
        width: int,
        height: int,
        fps: float | Fraction,
        target_kbps: float,
        keyframe_interval: int | None = None,
    ):
        if codec not in LIBVPX_NAMES:
            raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(LIBVPX_NAMES)}")
        if keyframe_interval is not None and keyframe_interval < 1:
            raise ValueError("keyframe_interval must be at least 1 (or None for no periodic keyframes)")
        self.codec = codec
        self.width = width
        self.height = height
        self.frame_rate = _frame_rate(fps)
        self.keyframe_interval = keyframe_interval
        self._next_pts = 0
        self._target_kbps = target_kbps
        self._context = self._open(target_kbps)

    @property
    def target_kbps(self) -> float:
        """The CBR target currently in effect."""
        return self._target_kbps

    def _open(self, target_kbps: float) -> av.CodecContext:
        """A fresh libvpx encoder for `target_kbps`."""
        if target_kbps <= 0:
            raise ValueError("target_kbps must be positive")
        context = av.CodecContext.create(LIBVPX_NAMES[self.codec], "w")
        context.width = self.width
        context.height = self.height
        context.pix_fmt = "yuv420p"
        # pts counts frames; libvpx's rate control derives each frame's bit budget from this clock.
        context.time_base = 1 / self.frame_rate
        context.framerate = self.frame_rate
        context.bit_rate = round(target_kbps * 1000)
        context.options = _codec_options(self.codec, target_kbps, self.keyframe_interval)
        return context

    def set_target_kbps(self, kbps: float) -> None:
        """Change the CBR target from the next frame on; that frame is a keyframe (see below)."""
        # FFmpeg's libvpx wrapper hands the bitrate to libvpx only when it opens (setting bit_rate later has no
        # effect, unlike libvpx's own vpx_codec_enc_config_set), so a new encoder is opened: ~2 ms, but a new
        # encoder has no references, so its first frame is a keyframe and its rate buffer restarts half full.
        if kbps == self._target_kbps:
            return
        self._context = self._open(kbps)
        self._target_kbps = kbps

    def encode(self, image: np.ndarray | av.VideoFrame, force_keyframe: bool = False) -> EncodedFrame:
        """Encode one frame: (height, width, 3) uint8 RGB, or a yuv420p frame from `to_yuv420`.

        Raises RuntimeError if libvpx does not return the frame at once.
        """
        frame = image if isinstance(image, av.VideoFrame) else to_yuv420(image)
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            raise ValueError(f"expected a {self.width}x{self.height} frame, got {frame.width}x{frame.height} "
                             f"{frame.format.name}")
        frame.pts = self._next_pts
        frame.pict_type = av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        packets = self._context.encode(frame)
        if len(packets) != 1:
            raise RuntimeError(
                f"libvpx returned {len(packets)} packets for frame {self._next_pts}; "
                "a real-time encoder must neither buffer nor drop frames"
            )
        self._next_pts += 1
        data = bytes(packets[0])
        return EncodedFrame(data, is_keyframe(self.codec, data))


class VpxDecoder:
    """libvpx decoder from encoded frames to RGB; it does not track the reference chain, the receiver must."""

    def __init__(self, codec: str):
        if codec not in LIBVPX_NAMES:
            raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(LIBVPX_NAMES)}")
        self.codec = codec
        self._context = av.CodecContext.create(LIBVPX_NAMES[codec], "r")

    def decode(self, data: bytes) -> np.ndarray:
        """Decode one encoded frame to a (height, width, 3) uint8 RGB array; DecodeError if libvpx rejects it."""
        if not data:
            # FFmpeg reads an empty packet as end of stream and would refuse every later packet.
            raise DecodeError("empty frame")
        try:
            frames = self._context.decode(av.Packet(data))
        except av.error.InvalidDataError as exc:
            raise DecodeError(f"libvpx rejected a {len(data)}-byte frame") from exc
        if len(frames) != 1:
            raise DecodeError(f"libvpx produced {len(frames)} pictures from a {len(data)}-byte frame")
        return frames[0].to_ndarray(format="rgb24")
