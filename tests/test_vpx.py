"""VpxEncoder / VpxDecoder on a synthetic moving pattern: keyframes, CBR accuracy, fidelity, behaviour under loss."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.codecs import vpx
from testbed.codecs.vpx import DecodeError, EncodedFrame, VpxDecoder, VpxEncoder, is_keyframe

SIZE = 256
FPS = 30
KBPS = 300
FRAMES = 90
LONG = 150  # past libvpx's default keyframe distance of 128 frames
FORCED = 45
SKIPPED = 20
CODECS = ("vp9", "vp8")


def synthetic_frames(count: int, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    """A textured background with a bright square moving over it, plus slight noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    background = np.stack(
        [
            128 + 60 * np.sin(x / 7) * np.cos(y / 11),
            128 + 50 * np.sin((x + y) / 13),
            100 + 40 * np.cos(x / 5 - y / 9),
        ],
        axis=-1,
    )
    side = size // 5
    frames = []
    for i in range(count):
        frame = background.copy()
        left = int((size - side) * (0.5 + 0.5 * np.sin(i / 10)))
        top = int((size - side) * (0.5 + 0.5 * np.cos(i / 13)))
        frame[top : top + side, left : left + side] = 235
        frame += rng.normal(0, 2, frame.shape)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def kbps(frames: list[EncodedFrame], fps: float = FPS) -> float:
    """Average bitrate of consecutive frames."""
    return sum(len(f.data) for f in frames) * 8 * fps / len(frames) / 1000


def decode_all(codec: str, stream: list[EncodedFrame]) -> list[np.ndarray]:
    """Decode every frame with a fresh decoder."""
    decoder = VpxDecoder(codec)
    return [decoder.decode(f.data) for f in stream]


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return synthetic_frames(LONG)


@pytest.fixture(scope="module", params=CODECS)
def codec(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def plain(codec: str, frames: list[np.ndarray]) -> list[EncodedFrame]:
    """All LONG frames encoded without any forced keyframe."""
    encoder = VpxEncoder(codec, SIZE, SIZE, FPS, KBPS)
    return [encoder.encode(f) for f in frames]


@pytest.fixture(scope="module")
def forced(codec: str, frames: list[np.ndarray]) -> list[EncodedFrame]:
    """The first FRAMES frames with a keyframe forced at FORCED."""
    encoder = VpxEncoder(codec, SIZE, SIZE, FPS, KBPS)
    return [encoder.encode(f, force_keyframe=i == FORCED) for i, f in enumerate(frames[:FRAMES])]


@pytest.fixture(scope="module")
def full_decode(codec: str, forced: list[EncodedFrame]) -> list[np.ndarray]:
    return decode_all(codec, forced)


# --------------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------------


def test_one_encoded_frame_per_input(plain: list[EncodedFrame]):
    assert len(plain) == LONG
    assert all(isinstance(f, EncodedFrame) and f.data for f in plain)


def test_only_the_first_frame_is_a_keyframe(plain: list[EncodedFrame]):
    assert [i for i, f in enumerate(plain) if f.keyframe] == [0]


def test_forced_keyframe(forced: list[EncodedFrame]):
    assert [i for i, f in enumerate(forced) if f.keyframe] == [0, FORCED]


def test_keyframe_interval_counts_from_the_start_and_ignores_forced_keyframes(codec: str, frames: list[np.ndarray]):
    encoder = VpxEncoder(codec, SIZE, SIZE, FPS, KBPS, keyframe_interval=30)
    stream = [encoder.encode(f, force_keyframe=i == FORCED) for i, f in enumerate(frames[:FRAMES])]
    assert [i for i, f in enumerate(stream) if f.keyframe] == [0, 30, FORCED, 60]


def test_cbr_hits_the_target(plain: list[EncodedFrame]):
    # Frames 10..89 are 2.67 s. libvpx CBR follows a leaky-bucket model with a 1 s buffer started half full, so
    # over this window it may legitimately bank or spend up to ~0.5 s of bits (~19 %) on top of small over- and
    # undershoots; +-25 % leaves that room yet catches unit slips (x8, x1000), a target that never reaches libvpx
    # or a wrong frame clock. (Measured here: 282-301 kbps.)
    assert kbps(plain[10:FRAMES]) == pytest.approx(KBPS, rel=0.25)


def test_cbr_keeps_every_frame_small(plain: list[EncodedFrame]):
    # With the 1 s buffer starting half full, the largest frame (the first keyframe) takes ~0.14 s of bits here.
    # Without minrate/maxrate (VBR) or with libvpx's default 6 s buffer, single frames took 0.23-0.9 s: a bound
    # of 0.2 s shows both settings reach libvpx.
    assert max(len(f.data) for f in plain) * 8 < 0.2 * KBPS * 1000


def test_cbr_follows_the_frame_clock(frames: list[np.ndarray]):
    # At 15 fps each frame gets twice the bits; a time base not handed to libvpx would halve or double the rate.
    encoder = VpxEncoder("vp9", SIZE, SIZE, 15, KBPS)
    stream = [encoder.encode(f) for f in frames[:FRAMES]]
    assert kbps(stream[10:], fps=15) == pytest.approx(KBPS, rel=0.25)


def test_keyframe_bits_agree_with_pyav(codec: str, frames: list[np.ndarray]):
    class PacketSpy:
        """Records PyAV's packets on their way out of the encoder."""

        def __init__(self, context):
            self.context = context
            self.packets = []

        def encode(self, frame):
            packets = self.context.encode(frame)
            self.packets.extend(packets)
            return packets

    encoder = VpxEncoder(codec, SIZE, SIZE, FPS, KBPS)
    spy = PacketSpy(encoder._context)
    encoder._context = spy
    stream = [encoder.encode(f, force_keyframe=i == FORCED) for i, f in enumerate(frames[:FRAMES])]
    pyav = [p.is_keyframe for p in spy.packets]
    assert pyav.count(True) == 2
    assert [f.keyframe for f in stream] == pyav
    assert [is_keyframe(codec, bytes(p)) for p in spy.packets] == pyav
    # The one-bit rules in REFERENCE.md section 5 hold on this output too.
    first_bytes = [bytes(p)[0] for p in spy.packets]
    if codec == "vp8":
        assert [(b & 1) == 0 for b in first_bytes] == pyav
    else:
        assert [((b >> 2) & 1) == 0 for b in first_bytes] == pyav


def test_is_keyframe_rejects_short_or_foreign_data():
    assert not is_keyframe("vp8", b"")
    assert not is_keyframe("vp9", b"")
    assert not is_keyframe("vp9", b"\x80\x00\x00\x00")  # keyframe bits without the sync code
    with pytest.raises(ValueError):
        is_keyframe("h264", b"\x00")


def test_every_encoder_option_is_known_to_ffmpeg(codec: str):
    # FFmpeg ignores option names it does not know, so a typo would silently fall back to a default.
    import av

    options = av.CodecContext.create(vpx.LIBVPX_NAMES[codec], "w").supported_options
    known = {o.name for o in options.generic} | {o.name for o in options.private}
    assert set(vpx._codec_options(codec, KBPS, None)) <= known


def test_encoder_that_buffers_raises(frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch):
    # Without lag-in-frames=0 VP9 holds 25 frames back to look ahead: this both shows the option is honoured and
    # exercises the guard. (VP8 in this libvpx build emits every frame at once whatever the lag.)
    real = vpx._codec_options

    def with_lookahead(*args):
        options = real(*args)
        del options["lag-in-frames"]
        return options

    monkeypatch.setattr(vpx, "_codec_options", with_lookahead)
    encoder = VpxEncoder("vp9", SIZE, SIZE, FPS, KBPS)
    with pytest.raises(RuntimeError, match="0 packets"):
        encoder.encode(frames[0])


def test_set_target_kbps_lowers_the_rate_at_the_cost_of_a_keyframe(codec: str, frames: list[np.ndarray]):
    changed = VpxEncoder(codec, SIZE, SIZE, FPS, 600)
    steady = VpxEncoder(codec, SIZE, SIZE, FPS, 600)
    for f in frames[:60]:
        changed.encode(f)
        steady.encode(f)
    changed.set_target_kbps(600)  # unchanged target: the encoder is kept, no keyframe
    assert not changed.encode(frames[60]).keyframe
    steady.encode(frames[60])
    changed.set_target_kbps(150)
    assert changed.target_kbps == 150
    after = [changed.encode(f) for f in frames[61:121]]
    reference = [steady.encode(f) for f in frames[61:121]]
    assert after[0].keyframe and not any(f.keyframe for f in after[1:])
    assert sum(len(f.data) for f in after) < 0.5 * sum(len(f.data) for f in reference)


def test_encoder_rejects_bad_input():
    with pytest.raises(ValueError):
        VpxEncoder("h264", SIZE, SIZE, FPS, KBPS)
    encoder = VpxEncoder("vp9", SIZE, SIZE, FPS, KBPS)
    with pytest.raises(ValueError):
        encoder.encode(np.zeros((SIZE, SIZE + 2, 3), np.uint8))
    with pytest.raises(ValueError):
        encoder.encode(np.zeros((SIZE, SIZE, 3), np.float32))
    with pytest.raises(ValueError):
        encoder.set_target_kbps(0)
    assert encoder.target_kbps == KBPS


# --------------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------------


def test_full_stream_decodes_faithfully(frames: list[np.ndarray], full_decode: list[np.ndarray]):
    assert all(d.shape == (SIZE, SIZE, 3) and d.dtype == np.uint8 for d in full_decode)
    assert min(psnr(d, f) for d, f in zip(full_decode, frames[:FRAMES], strict=True)) > 25


def test_decoding_from_a_forced_keyframe_matches_the_full_stream(
    codec: str, forced: list[EncodedFrame], full_decode: list[np.ndarray]
):
    late = decode_all(codec, forced[FORCED:])
    assert all(np.array_equal(a, b) for a, b in zip(late, full_decode[FORCED:], strict=True))


def test_lost_p_frame_drifts_silently_until_the_next_keyframe(
    codec: str, frames: list[np.ndarray], forced: list[EncodedFrame], full_decode: list[np.ndarray]
):
    # The decoder never checks references: the frame after a lost one decodes against a stale reference without
    # any error, so only the receiver can know the picture is wrong (it must track the reference chain).
    assert not forced[SKIPPED].keyframe
    decoder = VpxDecoder(codec)
    lossy = {i: decoder.decode(f.data) for i, f in enumerate(forced) if i != SKIPPED}
    assert all(np.array_equal(lossy[i], full_decode[i]) for i in range(SKIPPED))
    assert not np.array_equal(lossy[SKIPPED + 1], full_decode[SKIPPED + 1])
    assert all(np.array_equal(lossy[i], full_decode[i]) for i in range(FORCED, FRAMES))
    # Error resilience keeps the damage to stale reference pixels (worst frame 23.8 dB for VP9, 25.2 dB for VP8
    # here). Without it VP9 rejects every later frame up to the keyframe and VP8 drifts to 14-18 dB.
    assert min(psnr(lossy[i], frames[i]) for i in range(SKIPPED + 1, FORCED)) > 20


def test_garbage_and_empty_data_raise_decode_error(codec: str, forced: list[EncodedFrame]):
    rng = np.random.default_rng(1)
    decoder = VpxDecoder(codec)
    for junk in (rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), bytes(100), b"\x00", b""):
        with pytest.raises(DecodeError):
            decoder.decode(junk)
    # None of that (in particular the empty frame, which FFmpeg would take as end of stream) broke the decoder.
    assert decoder.decode(forced[0].data).shape == (SIZE, SIZE, 3)


def test_inter_frame_before_any_keyframe_raises(codec: str, forced: list[EncodedFrame]):
    decoder = VpxDecoder(codec)
    with pytest.raises(DecodeError):
        decoder.decode(forced[1].data)


def test_decoder_after_rejected_frame(codec: str, forced: list[EncodedFrame], full_decode: list[np.ndarray]):
    # libvpx VP9 distrusts its state after a rejected frame and refuses inter frames until the next keyframe;
    # VP8 drops the bad frame and carries on. Both resynchronise exactly on a keyframe.
    decoder = VpxDecoder(codec)
    for f in forced[:10]:
        decoder.decode(f.data)
    with pytest.raises(DecodeError):
        decoder.decode(bytes(range(256)) * 3)
    if codec == "vp9":
        with pytest.raises(DecodeError):
            decoder.decode(forced[10].data)
    else:
        assert np.array_equal(decoder.decode(forced[10].data), full_decode[10])
    assert np.array_equal(decoder.decode(forced[FORCED].data), full_decode[FORCED])
    assert np.array_equal(decoder.decode(forced[FORCED + 1].data), full_decode[FORCED + 1])
