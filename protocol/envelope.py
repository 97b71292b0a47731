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
class UnpackLimits:
    """Bounds a decoder enforces on one frame: its size, each string, binary, array and map, and the nesting."""

    max_size: int
    max_str_len: int
    max_bin_len: int
    max_array_len: int
    max_map_len: int
    max_depth: int


# Before a peer has authenticated, the only frame it may send is AUTH (an envelope map holding a five-field body,
# a few hundred bytes): anything bigger or more deeply nested costs the hub work for nobody it knows.
PRE_AUTH_LIMITS = UnpackLimits(
    max_size=4 * 1024, max_str_len=1024, max_bin_len=256, max_array_len=16, max_map_len=16, max_depth=4
)


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
    return _checked_unpack(data, {}, _MAX_DEPTH)


def unpack_limited(data: bytes, limits: UnpackLimits) -> Any:
    """Decode msgpack within ``limits`` (checked before any decoding, and by the decoder while it reads).

    Raises:
        ProtocolError: FRAME_TOO_LARGE or MALFORMED_FRAME.
    """
    if len(data) > limits.max_size:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, "frame exceeds the size limit", size=len(data), limit=limits.max_size
        )
    bounds = {
        "max_str_len": limits.max_str_len, "max_bin_len": limits.max_bin_len, "max_array_len": limits.max_array_len,
        "max_map_len": limits.max_map_len, "max_ext_len": 0,
    }  # fmt: skip
    return _checked_unpack(data, bounds, limits.max_depth)


def _checked_unpack(data: bytes, bounds: dict[str, int], max_depth: int) -> Any:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **bounds)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"not a msgpack value: {exc}") from exc
    except RecursionError:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "msgpack value is nested too deeply") from None
    if _depth(value, max_depth) > max_depth:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "msgpack value is nested too deeply", limit=max_depth)
    return value


def _depth(value: Any, limit: int, level: int = 0) -> int:
    # On every received frame: recursing only into containers (not into every scalar) keeps it cheap.
    if level > limit:
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
            deepest = max(deepest, _depth(child, limit, level + 1))
            if deepest > limit:
                break  # already too deep: the rest need not be looked at
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


def decode_pre_auth(data: bytes) -> Envelope:
    """Parse the one frame an unauthenticated peer may send, within ``PRE_AUTH_LIMITS``: decoded once, here.

    Raises:
        ProtocolError: FRAME_TOO_LARGE, MALFORMED_FRAME, UNSUPPORTED_VERSION, UNKNOWN_TYPE or BAD_FIELD.
    """
    return envelope_from_wire(unpack_limited(data, PRE_AUTH_LIMITS))


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
