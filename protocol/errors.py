"""The one error tree of the protocol.

    CrcError                      root of every error CRC raises on purpose
    ├── ProtocolError             a frame or message broke the protocol; carries an ``ErrorCode``
    │   │                         ``remote=False``: we detected it in what the peer sent us
    │   └── IllegalTransition     an event that an order's or a plan step's transition table does not allow in
    │                             its state (ILLEGAL_STATE): a bug on this side, named by machine, state and event
    └── RemoteError               the peer told us (an ERROR message) that something failed on its side

A ``ProtocolError`` always names what went wrong with a stable ``code`` (sent on the wire so the peer can act on
it) and keeps the facts as fields (``size``, ``limit``, ``machine_id``...) in ``details``. Decoding never lets a
bare ``KeyError``/``TypeError``/``msgpack`` exception escape: every failure becomes a ``ProtocolError``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """Stable error codes, shared by hub and clients and sent in ERROR messages."""

    MALFORMED_FRAME = "malformed_frame"
    FRAME_TOO_LARGE = "frame_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    BAD_MAC = "bad_mac"
    BAD_SEQUENCE = "bad_sequence"
    STALE_TIMESTAMP = "stale_timestamp"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    WRONG_TARGET = "wrong_target"
    HANDSHAKE_FAILED = "handshake_failed"
    UNKNOWN_IDENTITY = "unknown_identity"
    ILLEGAL_STATE = "illegal_state"
    # Errors a hub answers to requests; defined here so both sides share one list.
    NOT_FOUND = "not_found"
    ALREADY_EXISTS = "already_exists"
    FORBIDDEN = "forbidden"
    UNAUTHORIZED = "unauthorized"  # REST: no access token, or one that is unknown, revoked or expired
    INVALID_REQUEST = "invalid_request"
    REVOKED = "revoked"
    INTERNAL = "internal"
    SHUTTING_DOWN = "shutting_down"
    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    QUEUE_FULL = "queue_full"
    TIMEOUT = "timeout"


class CrcError(Exception):
    """Root of every error CRC raises on purpose."""


class ProtocolError(CrcError):
    """Something a peer sent (or tried to send) broke the protocol.

    Args:
        code: the stable machine-readable code.
        message: what went wrong and, where it helps, what to do.
        **details: facts about the failure (``size=..., limit=...``), kept for logs and the wire.
    """

    def __init__(self, code: ErrorCode, message: str, **details: Any) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.details = details


class RemoteError(CrcError):
    """The peer reported a failure in an ERROR message (it is not our fault, or not only ours)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class IllegalTransition(ProtocolError):
    """An event that a transition table (``protocol.orders.ORDER_TRANSITIONS``, ``protocol.plans.STEP_TRANSITIONS``)
    does not allow in the current state.

    Args:
        machine: which state machine refused it (``"order"``, ``"step"``).
        state: the state it was in (it stays there).
        event: the event that is not allowed there.
    """

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(
            ErrorCode.ILLEGAL_STATE,
            f"{machine} event {event!r} is not allowed in state {state!r}",
            machine=machine,
            state=state,
            event=event,
        )
        self.machine = machine
        self.state = state
        self.event = event
