"""Futures and scenario messages signed by their writer, so that a hub cannot fake a value a script acts on.

A kv value (``crc-daemon kv set``, ``Master.kv_set``) or a message (``crc-daemon send``, ``Master.send_message``)
travels as a ``SignedValue``: "writer W (a machine, or the master) of scenario S wrote VALUE under key or topic K
at T, as write N", signed by the writer's key (a machine's key, or the master's). The hub stores the statement
as it came and hands it back to readers together with the writer's master-signed ``MachineCertificate`` and the
signed results of its key rotations (``protocol.certificates``). ``verify_value`` is what every reader runs
(``crc-daemon kv get|wait`` and ``recv`` in the daemon, ``Master.kv_get|kv_wait`` in the SDK):

1. the statement is one of the kind asked for (kv or message: the domains differ, ``crc-kv-v1`` / ``crc-msg-v1``),
   for the scenario and the key or topic asked for: a signed value copied from another key or scenario is refused;
2. a master write is signed by the reader's master key itself;
3. a machine write comes with a certificate endorsed by the reader's master key, for this scenario and this
   writer id, and is signed by a key the certificate's rotation chain trusts; a kv key lies under that machine's
   own certified name (``db/...``), the rule the hub enforces for writes, now checked where it matters;
4. a message names, in its signed ``target``, a selection that may include the reader (plain names and globs
   are checked against the reader's name; ``role:``/``label:`` selectors are taken as written, the reader not
   holding its own role).

What a hostile hub can still do, and what remains to the reader:

- withhold a value or a message, or delay it (a wait then times out);
- serve an *older* signed value of the same key of the same scenario (an earlier ``db/ready``), or a value past
  its TTL: the TTL is the hub's bookkeeping and not signed; ``written_at`` is, so a reader may judge freshness;
- re-deliver a message the reader already had (the daemon remembers recent message ids and refuses repeats,
  within ``clients/daemon``'s bounded memory), or deliver a ``role:``/``label:`` message to a machine that the
  selector does not name;
- replay values of a scenario of the same name that the same master deleted and created again (names, not hub
  ids, are what both sides know);
- values signed by a master key that was rotated away (``crc rotate-key``) no longer verify: write them again.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from protocol.certificates import MachineCertificate, trusted_keys
from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey
from protocol.targeting import is_pattern


class ValueKind(StrEnum):
    KV = "kv"
    MESSAGE = "msg"


class WriterKind(StrEnum):
    MACHINE = "machine"
    MASTER = "master"


_DOMAINS = {ValueKind.KV: "crc-kv-v1", ValueKind.MESSAGE: "crc-msg-v1"}
MAX_ROTATION_PROOFS = 256  # more than any machine will rotate; bounds what a hub can make a reader check


def _untrusted(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_SIGNATURE, message, **details)


@dataclass(frozen=True)
class SignedValue:
    kind: ValueKind
    scenario: str  # the scenario's name, as writer and readers know it
    name: str  # the kv key, or the message topic
    value: bytes
    writer: str  # a machine id (stable across its key rotations) or a master id
    writer_kind: WriterKind
    written_at: float  # unix time the writer wrote it (passed in)
    write_id: str  # unique per write (random, passed in): tells two writes of the same value apart
    target: str = ""  # a message's target as its writer sent it; "" for kv
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        return pack([_DOMAINS[self.kind], self.writer_kind.value, self.writer, self.scenario, self.name,
                     self.target, self.value, float(self.written_at), self.write_id])  # fmt: skip

    def signed(self, writer: Identity) -> SignedValue:
        """Signed with ``writer``'s key (a machine's current key, or the master's)."""
        return replace(self, signature=writer.sign(self.signing_payload()))

    def check_signature(self, keys: Sequence[PublicKey]) -> PublicKey:
        """The key of ``keys`` that signed it.

        Raises:
            ProtocolError: BAD_SIGNATURE if none did.
        """
        payload = self.signing_payload()
        for key in keys:
            try:
                key.verify(self.signature, payload)
            except ProtocolError:
                continue
            return key
        raise _untrusted("the signature is not its writer's", writer=self.writer)

    def to_wire(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "scenario": self.scenario, "name": self.name, "value": self.value,
                "writer": self.writer, "writer_kind": self.writer_kind.value, "written_at": self.written_at,
                "write_id": self.write_id, "target": self.target, "signature": self.signature}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> SignedValue:
        """Raises ProtocolError BAD_FIELD for anything but a well-formed statement."""
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a signed value is a map")
        kinds: dict[str, type] = {"kind": str, "scenario": str, "name": str, "value": bytes, "writer": str,
                                  "writer_kind": str, "write_id": str, "target": str, "signature": bytes}  # fmt: skip
        for field_name, kind in kinds.items():
            if not isinstance(raw.get(field_name), kind):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"signed value field {field_name!r} is missing or wrong")
        written_at = raw.get("written_at")
        if not isinstance(written_at, int | float) or isinstance(written_at, bool):
            raise ProtocolError(ErrorCode.BAD_FIELD, "signed value field 'written_at' is missing or wrong")
        try:
            kind_value, writer_kind = ValueKind(raw["kind"]), WriterKind(raw["writer_kind"])
        except ValueError:
            raise ProtocolError(ErrorCode.BAD_FIELD, "a signed value's kind or writer kind is unknown") from None
        return cls(kind_value, raw["scenario"], raw["name"], raw["value"], raw["writer"], writer_kind,
                   float(written_at), raw["write_id"], raw["target"], raw["signature"])  # fmt: skip


@dataclass(frozen=True)
class VerifiedValue:
    """A value its reader may act on: ``writer_name`` is the certified machine name, or "" for the master."""

    statement: SignedValue
    writer_name: str

    @property
    def value(self) -> bytes:
        return self.statement.value


def _may_name(target: str, reader_name: str) -> bool:
    """Whether ``target`` may select the machine called ``reader_name`` (role and label selectors: maybe)."""
    for selector in (part.strip() for part in target.split(",")):
        if selector.startswith(("role:", "label:")) or selector == "all":
            return True
        if is_pattern(selector) and fnmatch.fnmatchcase(reader_name, selector):
            return True
        if selector == reader_name:
            return True
    return False


def verify_value(
    raw_statement: Any,
    writer_proofs: Any,
    *,
    kind: ValueKind,
    scenario: str,
    name: str,
    master_key: PublicKey,
    reader_name: str = "",
) -> VerifiedValue:
    """Check what the hub answered for ``name`` (a key, or with ``kind`` MESSAGE a topic, "" for any) of
    ``scenario`` against ``master_key``, the reader's own trust: see the module docstring for each step.

    ``writer_proofs`` is the hub's ``{"certificate", "key_proofs"}`` for a machine writer; ``reader_name`` the
    receiving machine's name, for a message's target.

    Raises:
        ProtocolError: BAD_SIGNATURE (or BAD_FIELD for a malformed statement); its message says why, briefly.
    """
    if raw_statement is None:
        raise _untrusted("it carries no writer's signature")
    statement = SignedValue.from_wire(raw_statement)
    if statement.kind is not kind:
        raise _untrusted(f"it was signed as a {statement.kind.value} value, not a {kind.value} one")
    if statement.scenario != scenario:
        raise _untrusted(f"it was signed for scenario {statement.scenario!r}", scenario=statement.scenario)
    if (name or kind is ValueKind.KV) and statement.name != name:
        raise _untrusted(f"it was signed for {statement.name!r}", name=statement.name)
    if kind is ValueKind.MESSAGE and reader_name and not _may_name(statement.target, reader_name):
        raise _untrusted(f"it was sent to {statement.target!r}", target=statement.target)
    if statement.writer_kind is WriterKind.MASTER:
        if statement.writer != master_key.id:
            raise _untrusted("it was signed by another master", writer=statement.writer)
        statement.check_signature([master_key])
        return VerifiedValue(statement, "")
    proofs = writer_proofs if isinstance(writer_proofs, dict) else {}
    if proofs.get("certificate") is None:
        raise _untrusted("the hub gave no certificate of its writer", writer=statement.writer)
    certificate = MachineCertificate.from_wire(proofs["certificate"])
    certificate.verify(master_key, scenario)
    if certificate.machine != statement.writer:
        raise _untrusted("the certificate given is another machine's", writer=statement.writer)
    rotations = proofs.get("key_proofs") or []
    keys = trusted_keys(certificate, list(rotations)[:MAX_ROTATION_PROOFS] if isinstance(rotations, list) else [])
    statement.check_signature(keys)
    if kind is ValueKind.KV and not statement.name.startswith(certificate.name + "/"):
        raise _untrusted(f"machine {certificate.name!r} may not write {statement.name!r}", writer=certificate.name)
    return VerifiedValue(statement, certificate.name)


def untrusted_message(what: str, reason: ProtocolError) -> str:
    """The one line a reader shows when it refuses what the hub answered for ``what`` (a key, or a topic)."""
    return f"the hub's value for {what} is not signed by a machine of this scenario or its master: {reason.message}"
