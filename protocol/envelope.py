"""The msgpack envelope every message travels in, and its size limit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import Body, MsgType, body_from_wire

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 1024 * 1024
# Nesting deeper than this is never legitimate and would only serve to exhaust the decoder.
_MAX_DEPTH = 32


@dataclass(frozen=True)
class Envelope:
    """One message: who sends it to whom, in which scenario, when, and its typed body.

    ``reply_to`` carries the id of the request a RESPONSE or ERROR answers.
    """

    id: str
    sender: str
    recipient: str
    scenario: str
    ts: float
    body: Body
    reply_to: str = ""
    version: int = PROTOCOL_VERSION

    @property
    def type(self) -> MsgType:
        return self.body.TYPE


def pack(value: Any) -> bytes:
    """msgpack with bytes kept distinct from str."""
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def unpack(data: bytes, max_size: int = DEFAULT_MAX_FRAME) -> Any:
    """Decode msgpack, turning every failure into a ``ProtocolError``.

    Raises:
        ProtocolError: FRAME_TOO_LARGE or MALFORMED_FRAME.
    """
    if len(data) > max_size:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, "frame exceeds the size limit", size=len(data), limit=max_size)
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"not a msgpack value: {exc}") from exc
    if _depth(value) > _MAX_DEPTH:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "msgpack value is nested too deeply", limit=_MAX_DEPTH)
    return value


def _depth(value: Any, level: int = 0) -> int:
    # On every received frame: recursing only into containers (not into every scalar) keeps it cheap.
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return level
    deepest = level + 1
    for child in children:
        if isinstance(child, dict | list):
            deepest = max(deepest, _depth(child, level + 1))
    return deepest


def encode_envelope(envelope: Envelope, max_size: int = DEFAULT_MAX_FRAME) -> bytes:
    """Serialise an envelope.

    Raises:
        ProtocolError: FRAME_TOO_LARGE if it would exceed ``max_size`` (a local error: split the payload).
    """
    data = pack(envelope_to_wire(envelope))
    if len(data) > max_size:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"{envelope.type.value} message is {len(data)} bytes, over the {max_size}-byte limit; send files in chunks",
            size=len(data),
            limit=max_size,
        )
    return data


def envelope_to_wire(envelope: Envelope) -> dict[str, Any]:
    return {
        "v": envelope.version,
        "id": envelope.id,
        "t": envelope.type.value,
        "s": envelope.sender,
        "r": envelope.recipient,
        "sc": envelope.scenario,
        "ts": envelope.ts,
        "re": envelope.reply_to,
        "b": envelope.body.to_wire(),
    }


def decode_envelope(data: bytes, max_size: int = DEFAULT_MAX_FRAME) -> Envelope:
    """Parse and type-check an envelope.

    Raises:
        ProtocolError: FRAME_TOO_LARGE, MALFORMED_FRAME, UNSUPPORTED_VERSION, UNKNOWN_TYPE or BAD_FIELD.
    """
    return envelope_from_wire(unpack(data, max_size))


_ENVELOPE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int, "id": str, "t": str, "s": str, "r": str, "sc": str, "ts": (int, float), "re": str, "b": dict,
}  # fmt: skip


def envelope_from_wire(raw: Any) -> Envelope:
    """Type-check a decoded envelope map (see ``decode_envelope``)."""
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "an envelope is a msgpack map")
    for name, expected in _ENVELOPE_FIELDS.items():
        if name not in raw:
            raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"envelope lacks field {name!r}", field=name)
        value = raw[name]
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"envelope field {name!r} has the wrong type", field=name)
    if raw["v"] != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {raw['v']} is not supported (this side speaks {PROTOCOL_VERSION})",
            version=raw["v"],
        )
    try:
        msg_type = MsgType(raw["t"])
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {raw['t']!r}", type=raw["t"]) from None
    return Envelope(
        id=raw["id"],
        sender=raw["s"],
        recipient=raw["r"],
        scenario=raw["sc"],
        ts=float(raw["ts"]),
        body=body_from_wire(msg_type, raw["b"]),
        reply_to=raw["re"],
        version=raw["v"],
    )
