"""Sans-IO sender of the VP8/VP9 + FEC baseline (Ringmaster/Tambur behaviour).

Every 1/fps it encodes the next frame (a keyframe when forced), protects it with FEC and sends all its
datagrams at once. Keyframes are forced as Ringmaster/Tambur do: when the oldest unacknowledged frame is
older than 1 s, or when the newest acknowledged frame is more than tau frames past the oldest
unacknowledged one; optionally also on the receiver's keyframe request (WebRTC PLI). The adaptive FEC
ratio follows the receiver's quality reports (any loss -> 1/2, none -> 0), applied with a 3-frame lag.
Optionally, datagrams the receiver NACKs are resent once (flow "rtx") while they are under a second old, if
the smoothed capture-to-ACK round trip lets the copy arrive within tau + 1 frame intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av

from testbed.codecs.endpoint import Datagram
from testbed.codecs.frame_protection import FrameProtector
from testbed.codecs.framing import FeedbackKind, MediaPacket, parse_feedback
from testbed.codecs.video_source import VideoSource
from testbed.codecs.vpx import VpxEncoder, to_yuv420

FLOW_MEDIA = "media"
FLOW_FEC = "fec"
FLOW_RTX = "rtx"
RTT_SMOOTHING = 1 / 8  # RFC 6298's alpha
UNACKED_TIMEOUT_S = 1.0
RATIO_LAG_FRAMES = 3
LOSS_RATIO = Fraction(1, 2)


@dataclass(frozen=True)
class VpxSenderConfig:
    """Codec and protection settings of one VPX + FEC scheme."""

    codec: str = "vp9"
    target_kbps: float = 300.0
    fec: str = "streaming"
    tau: int = 3
    ratio: Fraction | None = None  # None: adaptive from receiver reports
    mtu: int = 1200
    keyframe_interval: int | None = None
    keyframe_on_request: bool = False
    retransmissions: bool = False


@dataclass(frozen=True, slots=True)
class SentFrame:
    """What the sender did with one captured frame."""

    frame_id: int
    capture_s: float
    media_bytes: int
    fec_bytes: int
    sent_bytes: int
    keyframe: bool
    forced_keyframe: bool
    ratio: Fraction


class VpxSender:
    """Encodes, protects and sends frames; reacts to ACKs, reports, keyframe requests and NACKs."""

    def __init__(self, source: VideoSource, config: VpxSenderConfig):
        self.source = source
        self.config = config
        height, width = source.frame(0).shape[:2]
        self.resolution = f"{width}x{height}"
        self._encoder = VpxEncoder(config.codec, width, height, source.fps, config.target_kbps,
                                   config.keyframe_interval)
        self._protector = FrameProtector(config.fec, config.mtu, config.tau)
        self._next_frame = 0
        self._seq = 0
        self._outbox: list[Datagram] = []
        self._unacked: set[int] = set()  # frames sent since the last keyframe and not acknowledged
        self._newest_acked = -1
        self._force_keyframe = False
        self._ratio = config.ratio if config.ratio is not None else Fraction(0)
        self._pending_ratios: list[tuple[int, Fraction]] = []
        # Clips loop, so each clip frame is converted to yuv420p once (the conversion costs as much as encoding).
        self._yuv_frames: dict[int, av.VideoFrame] = {}
        self._history: dict[int, Datagram] = {}  # seq -> datagram of the last second, for retransmission
        self._retransmitted: set[int] = set()
        self.smoothed_rtt_s: float | None = None
        self.frames: list[SentFrame] = []

    def get_timer(self) -> float | None:
        """Capture time of the next frame; None when the video is over."""
        if self._next_frame >= self.source.frame_count:
            return None
        return self._next_frame / self.source.fps

    def handle_timer(self, now: float) -> None:
        """Encode and send every frame whose capture time has come."""
        while self._next_frame < self.source.frame_count and self._next_frame / self.source.fps <= now:
            self._send_frame(self._next_frame, now)
            self._next_frame += 1

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take feedback: ACKs, quality reports, keyframe requests, NACKs; ignore anything malformed."""
        feedback = parse_feedback(data)
        if feedback is None:
            return
        if feedback.kind == FeedbackKind.ACK:
            if feedback.frame_id >= self._next_frame:
                return  # acknowledges a frame never sent: hostile or corrupt
            self._unacked.discard(feedback.frame_id)
            self._update_rtt(now - feedback.frame_id / self.source.fps)
            self._newest_acked = max(self._newest_acked, feedback.frame_id)
        elif feedback.kind == FeedbackKind.REPORT and self.config.ratio is None:
            ratio = LOSS_RATIO if feedback.lost > 0 else Fraction(0)
            self._pending_ratios.append((self._next_frame + RATIO_LAG_FRAMES, ratio))
        elif feedback.kind == FeedbackKind.KEYFRAME_REQUEST and self.config.keyframe_on_request:
            self._force_keyframe = True
        elif feedback.kind == FeedbackKind.NACK and self.config.retransmissions and self._rtx_in_time():
            for seq in feedback.seqs:
                if seq in self._history and seq not in self._retransmitted:
                    self._retransmitted.add(seq)
                    original = self._history[seq]
                    self._outbox.append(Datagram(original.payload, original.frame_id, FLOW_RTX))

    def _update_rtt(self, sample_s: float) -> None:
        """Smoothed round trip from capture to ACK (includes waiting for FEC recovery: an upper bound)."""
        if self.smoothed_rtt_s is None:
            self.smoothed_rtt_s = sample_s
        else:
            self.smoothed_rtt_s += RTT_SMOOTHING * (sample_s - self.smoothed_rtt_s)

    def _rtx_in_time(self) -> bool:
        """Retransmit only when the RTT lets a copy arrive before the receiver gives the frame up (tau + 1 frames)."""
        return self.smoothed_rtt_s is not None and self.smoothed_rtt_s <= (self.config.tau + 1) / self.source.fps

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Hand over the queued datagrams."""
        out, self._outbox = self._outbox, []
        return out

    def _keyframe_due(self, frame_id: int) -> bool:
        """Ringmaster/Tambur: an old unacked frame, or acks running more than tau past a missing frame."""
        if not self._unacked:
            return False
        oldest = min(self._unacked)
        # Ages in frames, not float seconds: 62/30 - 32/30 must be exactly 1 s, which is not "older".
        return (frame_id - oldest > UNACKED_TIMEOUT_S * self.source.fps
                or self._newest_acked - oldest > self.config.tau)

    def _forget_history(self, frame_id: int) -> None:
        """Keep one second of datagrams: older frames are past any receiver deadline."""
        oldest = frame_id - self.source.fps
        for seq in [seq for seq, datagram in self._history.items() if datagram.frame_id < oldest]:
            del self._history[seq]
            self._retransmitted.discard(seq)

    def _current_ratio(self, frame_id: int) -> Fraction:
        while self._pending_ratios and self._pending_ratios[0][0] <= frame_id:
            self._ratio = self._pending_ratios.pop(0)[1]
        return self._ratio

    def _send_frame(self, frame_id: int, now: float) -> None:
        capture_s = frame_id / self.source.fps
        forced = self._force_keyframe or self._keyframe_due(frame_id)
        self._force_keyframe = False
        clip_index = self.source.clip_index(frame_id)
        if clip_index not in self._yuv_frames:
            self._yuv_frames[clip_index] = to_yuv420(self.source.frame(frame_id))
        encoded = self._encoder.encode(self._yuv_frames[clip_index], force_keyframe=forced)
        if encoded.keyframe:
            self._unacked.clear()  # frames before a keyframe no longer matter
        self._unacked.add(frame_id)
        ratio = self._current_ratio(frame_id)
        fragments = self._protector.protect(encoded.data, ratio)
        send_time_us = round(now * 1e6)
        sent = fec = 0
        for index, fragment in enumerate(fragments):
            packet = MediaPacket(self._seq, frame_id, encoded.keyframe, fragment.parity, index, len(fragments),
                                 send_time_us, fragment.fec, fragment.payload)
            payload = packet.serialize()
            self._seq += 1
            sent += len(payload)
            fec += len(fragment.payload) if fragment.parity else 0
            datagram = Datagram(payload, frame_id, FLOW_FEC if fragment.parity else FLOW_MEDIA)
            self._outbox.append(datagram)
            if self.config.retransmissions:
                self._history[packet.seq] = datagram
        if self.config.retransmissions:
            self._forget_history(frame_id)
        self.frames.append(SentFrame(frame_id, capture_s, len(encoded.data), fec, sent, encoded.keyframe,
                                     forced, ratio))
