"""Sealed scenarios: orders, results and live output the hub carries but cannot read.

In a scenario its master created sealed (every machine certificate says so, ``MachineCertificate.sealed``), the
master seals the body of each command and hosts order to the target machine's sealing key
(``protocol.sealing``: RFC 9180 HPKE), bound to (scenario, machine id, order id, kind), and signs the sealed body;
the body also names the *reply key*, the master's own sealing key, under that signature. The daemon opens the
body, runs it, and seals what it reports back to the reply key: the result's output and error text (its status,
exit code and times stay readable: the hub's plans and waits run on them) and every live output chunk. So the
hub sees which machine runs what kind of order when, for how long and with which outcome, and the sizes; never
a command, an environment, a hosts entry or a byte of output.

File contents of sealed scenarios travel sealed as ``crc put --secret`` ones do; key, trust, update and ping
orders carry nothing to hide and stay plain. A daemon of a sealed scenario (``DaemonConfig.sealed``) refuses a
plain command or hosts order, and any order signed under an access token's delegation: in a sealed scenario
commands come from masters only, since an operator's requests go through the hub in the clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity
from protocol.orders import OrderKind
from protocol.sealing import SealContext, SealingKey, SealingPrivateKey, seal, unseal_any

SEALED_KINDS = frozenset({OrderKind.EXEC, OrderKind.HOSTS})
ORDER = "order"
RESULT = "result"
OUTPUT = "output"
# The result fields a sealed result carries only inside its ``extra["sealed"]``.
SEALED_RESULT_FIELDS = ("stdout", "stderr", "error", "stdout_truncated", "stderr_truncated")


def is_sealed_body(body: Mapping[str, Any]) -> bool:
    """A body ``seal_body`` made: its ciphertext and the reply key (a sealed *file*'s body is a plain map that
    describes its sealed content: ``PutFileBody.sealed``)."""
    return isinstance(body.get("sealed"), bytes) and "reply_key" in body


def seal_body(
    body: Mapping[str, Any], *, kind: OrderKind, to: SealingKey, reply_key: SealingKey, scenario: str, machine: str,
    order_id: str,
) -> dict[str, Any]:  # fmt: skip
    """The sealed form of an order's body, for the master to sign."""
    context = SealContext(ORDER, scenario, machine, order_id, kind.value)
    return {"sealed": seal(to, pack(dict(body)), context), "reply_key": reply_key.to_text()}


@dataclass(frozen=True)
class OpenedBody:
    body: dict[str, Any]
    reply_key: SealingKey


def reply_key_of(body: Mapping[str, Any]) -> SealingKey | None:
    """The reply key a sealed body names (it is under the master's signature), or None for a plain body."""
    raw = body.get("reply_key")
    if not is_sealed_body(body) or not isinstance(raw, str):
        return None
    try:
        return SealingKey.from_text(raw)
    except ProtocolError:
        return None


def open_body(
    body: Mapping[str, Any], keys: Sequence[Identity | SealingPrivateKey], *, kind: OrderKind, scenario: str,
    machine: str, order_id: str,
) -> OpenedBody:  # fmt: skip
    """The plain body of a sealed order, opened with the first of ``keys`` that opens it.

    Raises:
        ProtocolError: BAD_FIELD for a malformed sealed body or a kind that is never sealed; BAD_SIGNATURE when it
            does not open (sealed to another machine, for another order or kind, or altered).
    """
    sealed, reply_key = body.get("sealed"), reply_key_of(body)
    if kind not in SEALED_KINDS:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{kind.value} orders are never sealed")
    if not isinstance(sealed, bytes) or reply_key is None or set(body) != {"sealed", "reply_key"}:
        raise ProtocolError(ErrorCode.BAD_FIELD, "a sealed body is its ciphertext and the master's reply key")
    plain = unseal_any(keys, sealed, SealContext(ORDER, scenario, machine, order_id, kind.value))
    return OpenedBody(_unpacked(plain), reply_key)


def seal_result(fields: Mapping[str, Any], *, to: SealingKey, scenario: str, machine: str, order_id: str) -> bytes:
    """A result's output and error (``SEALED_RESULT_FIELDS``), sealed to the master's reply key."""
    plain = {name: fields[name] for name in SEALED_RESULT_FIELDS if name in fields}
    return seal(to, pack(plain), SealContext(RESULT, scenario, machine, order_id, ""))


def open_result(
    sealed: bytes, keys: Sequence[SealingPrivateKey], *, scenario: str, machine: str, order_id: str
) -> dict[str, Any]:
    """What ``seal_result`` sealed, opened with the first of ``keys`` that opens it. Raises ProtocolError
    BAD_SIGNATURE if none does, BAD_FIELD if malformed."""
    opened = _unpacked(unseal_any(keys, sealed, SealContext(RESULT, scenario, machine, order_id, "")))
    expected = {"stdout": bytes, "stderr": bytes, "error": str, "stdout_truncated": bool, "stderr_truncated": bool}
    for name, value in opened.items():
        if name not in expected or not isinstance(value, expected[name]):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a sealed result's {name!r} is malformed")
    return opened


def seal_output(data: bytes, *, to: SealingKey, scenario: str, order_id: str, stream: str) -> bytes:
    """A live output chunk sealed to the master's reply key. Live output is best effort (the signed result holds
    the output for certain), so a chunk is bound to its order and stream, not to its place among them: a hub can
    drop, repeat or reorder chunks of one stream, not move them to another order or read them. (The order id
    names the machine: ids are per machine.)"""
    return seal(to, data, SealContext(OUTPUT, scenario, "", order_id, stream))


def open_output(data: bytes, keys: Sequence[SealingPrivateKey], *, scenario: str, order_id: str, stream: str) -> bytes:
    """A live chunk, opened with the first of ``keys`` that opens it. Raises ProtocolError if none does."""
    return unseal_any(keys, data, SealContext(OUTPUT, scenario, "", order_id, stream))


def _unpacked(plain: bytes) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(plain, raw=False)
    except (ValueError, msgpack.UnpackException):
        raise ProtocolError(ErrorCode.BAD_FIELD, "a sealed value does not decode") from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, "a sealed value is a map")
    return value
