"""Sans-IO receiver of the VP8/VP9 + FEC baseline (Ringmaster/Tambur behaviour).

Frames are consumed strictly in order. A frame is decodable when it is complete (every data datagram
arrived or FEC recovered it) and its reference chain is intact (it is a keyframe, or the previous frame
was decoded). An incomplete frame is given up once a datagram of a frame more than `deadline_frames`
later arrives (Tambur: not recovered within tau frames), which breaks the chain until a keyframe; the
receiver skips ahead to a later complete keyframe as soon as there is one. Complete frames are ACKed;
quality reports (datagrams received / lost) go out every 2 s; keyframe requests (WebRTC-style PLI) are
sent on a broken chain when enabled; with `nack`, gaps in sequence numbers are NACKed for retransmission.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed.codecs.endpoint import Datagram
from testbed.codecs.frame_protection import FrameAssembler
from testbed.codecs.framing import MAX_NACK_SEQS, Feedback, FeedbackKind, parse_media
from testbed.codecs.vpx import DecodeError, VpxDecoder, is_keyframe

REPORT_INTERVAL_S = 2.0
# A datagram claiming a frame this far ahead is hostile or corrupt: honouring it would give up every frame between.
MAX_FRAME_JUMP = 1 << 14
KEYFRAME_REQUEST_INTERVAL_S = 0.2


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """The receiver's decision on one frame; a rendered frame carries its picture and the bitstream decoded."""

    frame_id: int
    complete: bool
    decodable: bool
    display_s: float | None
    image: np.ndarray | None = None
    bitstream: bytes | None = None

    @property
    def rendered(self) -> bool:
        """True when the frame was shown."""
        return self.display_s is not None


class VpxReceiver:
    """Reassembles, FEC-decodes, orders and decodes frames; sends ACKs, reports, keyframe requests."""

    def __init__(self, codec: str, fec: str, tau: int = 3, deadline_frames: int = 3,
                 keyframe_requests: bool = False, nack: bool = False):
        self.deadline_frames = deadline_frames
        self.keyframe_requests = keyframe_requests
        self.nack = nack
        self.codec = codec
        self._decoder = VpxDecoder(codec)
        self._assembler = FrameAssembler(fec, tau)
        self._complete: dict[int, tuple[bytes, bool]] = {}
        self._next = 0
        self._chain_ok = False
        self._newest_seen = -1
        self._outbox: list[Datagram] = []
        self._outcomes: list[FrameOutcome] = []
        self._report_at: float | None = None
        self._seqs_in_report = 0
        self._highest_seq = -1
        self._reported_seq = -1
        self._last_request_s = -1e9
        self._unparsable = 0
        self.undecodable_bitstreams = 0

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one media datagram."""
        packet = parse_media(data)
        if packet is None or packet.frame_id > max(self._newest_seen, self._next) + MAX_FRAME_JUMP:
            self._unparsable += 1
            return
        if self._report_at is None:
            self._report_at = now + REPORT_INTERVAL_S
        self._seqs_in_report += 1
        if self.nack and packet.seq > self._highest_seq + 1:
            # A gap in sequence numbers: ask for the missing datagrams once (paths keep order by default).
            missing = range(max(self._highest_seq + 1, packet.seq - MAX_NACK_SEQS), packet.seq)
            self._send(Feedback(FeedbackKind.NACK, packet.frame_id, seqs=tuple(missing)), None, "nack")
        self._highest_seq = max(self._highest_seq, packet.seq)
        # Datagrams of decided frames still go to the assembler: streaming parity rebuilds later frames.
        self._newest_seen = max(self._newest_seen, packet.frame_id)
        for frame_id, frame in self._assembler.add(packet):
            # Read the keyframe bit from the bitstream: FEC may rebuild a frame none of whose packets came.
            self._complete[frame_id] = (frame, is_keyframe(self.codec, frame))
            self._send(Feedback(FeedbackKind.ACK, frame_id), frame_id, "ack")
        self._advance(now)

    def get_timer(self) -> float | None:
        """Time of the next quality report."""
        return self._report_at

    def handle_timer(self, now: float) -> None:
        """Send the quality report of the last interval."""
        if self._report_at is None or now < self._report_at:
            return
        expected = self._highest_seq - self._reported_seq
        lost = max(0, expected - self._seqs_in_report)
        self._send(Feedback(FeedbackKind.REPORT, self._next, self._seqs_in_report, lost), None, "report")
        self._reported_seq = self._highest_seq
        self._seqs_in_report = 0
        self._report_at = now + REPORT_INTERVAL_S

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Hand over queued feedback."""
        out, self._outbox = self._outbox, []
        return out

    @property
    def malformed(self) -> int:
        """Datagrams dropped as malformed: unparsable, absurd frame ids, or refused by the FEC decoder."""
        return self._unparsable + self._assembler.rejected

    def pop_outcomes(self) -> list[FrameOutcome]:
        """Frame decisions made since the last call, in frame order."""
        out, self._outcomes = self._outcomes, []
        return out

    def _send(self, feedback: Feedback, frame_id: int | None, flow: str) -> None:
        self._outbox.append(Datagram(feedback.serialize(), frame_id, flow))

    def _decide(self, frame_id: int, complete: bool, decodable: bool, now: float,
                image: np.ndarray | None = None, bitstream: bytes | None = None) -> None:
        display_s = now if image is not None else None
        self._outcomes.append(FrameOutcome(frame_id, complete, decodable, display_s, image, bitstream))
        self._next = frame_id + 1

    def _request_keyframe(self, now: float) -> None:
        """Ask for a keyframe (PLI) while the chain is broken, at most every 0.2 s."""
        if self.keyframe_requests and now - self._last_request_s >= KEYFRAME_REQUEST_INTERVAL_S:
            self._last_request_s = now
            self._send(Feedback(FeedbackKind.KEYFRAME_REQUEST, self._next), None, "keyframe-request")

    def _advance(self, now: float) -> None:
        """Decide every frame that can be decided now, strictly in order."""
        while True:
            frame_id = self._next
            if frame_id in self._complete:
                data, keyframe = self._complete.pop(frame_id)
                image = None
                if keyframe or self._chain_ok:
                    try:
                        image = self._decoder.decode(data)
                    except DecodeError:
                        self.undecodable_bitstreams += 1
                if image is not None:
                    self._chain_ok = True
                    self._decide(frame_id, True, True, now, image, data)
                else:
                    self._decide(frame_id, True, False, now)
                    self._chain_ok = False
            elif self._later_complete_keyframe(frame_id) or self._newest_seen > frame_id + self.deadline_frames:
                self._decide(frame_id, False, False, now)
                self._chain_ok = False
            else:
                break
        if not self._chain_ok and self._next > 0:
            self._request_keyframe(now)  # only if skipping ahead to a keyframe did not already mend it
        self._assembler.forget_before(self._next)

    def _later_complete_keyframe(self, frame_id: int) -> bool:
        return any(keyframe and later > frame_id for later, (_, keyframe) in self._complete.items())
