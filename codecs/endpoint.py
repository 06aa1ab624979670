"""The sans-IO contract every scheme endpoint follows (the aioquic pattern).

Every method takes the current time `now` in seconds; nothing reads a clock or touches a socket.
A backend delivers datagrams with `receive_datagram`, fires `handle_timer` when `get_timer` is due,
and after each call collects `datagrams_to_send`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Datagram:
    """A payload to send, with its flow and frame for the packet log (frame None if not a frame).

    Flows: "media", "fec" (parity) and "rtx" (retransmissions) go forward; "ack", "report",
    "keyframe-request" and "nack" are feedback.
    """

    payload: bytes
    frame_id: int | None = None
    flow: str = "media"


class Endpoint(Protocol):
    """A scheme's sender or receiver."""

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Take one datagram that arrived at `now`."""
        ...

    def datagrams_to_send(self, now: float) -> list[Datagram]:
        """Return (and forget) everything queued for sending."""
        ...

    def get_timer(self) -> float | None:
        """Time at which `handle_timer` must be called, or None."""
        ...

    def handle_timer(self, now: float) -> None:
        """Do the work that was due at the timer."""
        ...
