"""What a master vouches for about its machines, so that nobody needs to believe the hub about them.

The hub stores and routes, but a hostile hub could swap two machines' names, hand back another scenario, or
claim a key of its own for a machine. So the master keeps its own truth, *on* the hub but signed:

- a ``MachineCertificate`` says "machine NAME of scenario S is the one whose first key is K (id = fingerprint of
  K), with this os, role and labels". The master signs it when it creates the machine; the hub stores it and
  hands it back with every scenario answer. A master on a second computer with the same key checks it just as
  well, which an inventory file kept on the first computer could not offer. After ``crc rotate-key`` the new
  master key endorses every certificate too (``endorsements`` holds one signature per master key).
- a key rotation is a ``SignedResult`` of the machine's ROTATE_KEY order, signed with the key it replaces and
  naming the new one: ``trusted_keys`` walks that chain from the certified key, so a key is accepted only through
  a statement signed by the previous one.
- a machine's *sealing key* (``protocol.sealing``: what secrets are encrypted to) is part of the same statements:
  the certificate names the first one (a v2 certificate; one without it keeps the v1 form, so certificates
  signed before sealing still verify), and each rotation's signed result names the next, so ``key_chain`` ends
  at the sealing key of the machine's current identity, or at none if a rotation did not report one.
- a ``ReadyStatement`` is the machine's own signed report of its facts (addresses among them), so hosts entries
  use addresses the machine itself gave.

Readers (the master SDK, and daemons checking another machine's values) verify all three against a master key
they hold themselves; whatever does not verify is not used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey
from protocol.orders import OrderState, SignedResult, canonical
from protocol.sealing import SealingKey

MAX_ROTATIONS = 256  # more key rotations than any machine will see; bounds the chain a hub can hand over


def _untrusted(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_SIGNATURE, message, **details)


@dataclass(frozen=True)
class MachineCertificate:
    scenario: str
    name: str
    machine: str  # the machine's id: fingerprint of its first key
    public_key: str  # its first key (``ed25519:...``)
    os: str
    role: str
    labels: dict[str, str] = field(default_factory=dict)
    endorsements: dict[str, bytes] = field(default_factory=dict)  # master id -> that master key's signature
    sealing_key: str = ""  # ``x25519:...`` of its first key (protocol.sealing); "" for machines made before it
    sealed: bool = False  # its scenario is sealed (protocol.sealed_orders): orders to it and its results are sealed

    def signing_payload(self) -> bytes:
        fields = [self.scenario, self.name, self.machine, self.public_key, self.os, self.role, canonical(self.labels)]
        if self.sealed:  # its own version too: a hub cannot make a sealed machine's certificate read as unsealed
            return pack(["crc-machine-cert-v3", *fields, self.sealing_key, True])
        if not self.sealing_key:  # as every certificate was signed before sealing keys: those still verify
            return pack(["crc-machine-cert-v1", *fields])
        # Its own version, so a hub cannot strip the sealing key off a certificate that has one and keep it valid.
        return pack(["crc-machine-cert-v2", *fields, self.sealing_key])

    def endorsed(self, master: Identity) -> MachineCertificate:
        """This certificate with ``master``'s signature added (the others kept)."""
        signatures = {**self.endorsements, master.id: master.sign(self.signing_payload())}
        return MachineCertificate(**{**self.__dict__, "endorsements": signatures})

    def verify(self, master_key: PublicKey, scenario: str) -> None:
        """Raises ProtocolError BAD_SIGNATURE unless ``master_key`` signed it for a machine of ``scenario`` whose
        id is its key's fingerprint."""
        signature = self.endorsements.get(master_key.id)
        if signature is None:
            raise _untrusted(f"machine {self.name!r} is not certified by this master", machine=self.name)
        master_key.verify(signature, self.signing_payload())
        if self.scenario != scenario:
            raise _untrusted(
                f"machine {self.name!r} is certified for scenario {self.scenario!r}, not {scenario!r}",
                machine=self.name,
            )
        if PublicKey.from_text(self.public_key).id != self.machine:
            raise _untrusted(f"machine {self.name!r}: its id is not its key's fingerprint", machine=self.name)

    def to_wire(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "name": self.name, "machine": self.machine, "public_key": self.public_key,
            "os": self.os, "role": self.role, "labels": dict(self.labels), "endorsements": dict(self.endorsements),
            **({"sealing_key": self.sealing_key} if self.sealing_key else {}),
            **({"sealed": True} if self.sealed else {}),
        }  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> MachineCertificate:
        """Raises ProtocolError BAD_FIELD for a malformed certificate."""
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a machine certificate is a map")
        texts = {}
        for name in ("scenario", "name", "machine", "public_key", "os", "role"):
            value = raw.get(name)
            if not isinstance(value, str):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"certificate field {name!r} is missing", field=name)
            texts[name] = value
        labels, endorsements = raw.get("labels") or {}, raw.get("endorsements") or {}
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ProtocolError(ErrorCode.BAD_FIELD, "certificate labels are a map of strings")
        if not isinstance(endorsements, dict) or not all(
            isinstance(k, str) and isinstance(v, bytes) for k, v in endorsements.items()
        ):
            raise ProtocolError(ErrorCode.BAD_FIELD, "certificate endorsements map master ids to signatures")
        sealing = raw.get("sealing_key") or ""
        if not isinstance(sealing, str):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a certificate's sealing key is x25519:<base64>")
        if sealing:
            SealingKey.from_text(sealing)
        sealed = raw.get("sealed", False)
        if not isinstance(sealed, bool) or (sealed and not sealing):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a sealed machine's certificate names its sealing key")
        return cls(**texts, labels=dict(labels), endorsements=dict(endorsements), sealing_key=sealing, sealed=sealed)


@dataclass(frozen=True)
class KeyChain:
    """A machine's keys as its master can trust them: first (certified) to current, and the sealing key of the
    current one ("" when unknown: a certificate from before sealing keys, or a rotation that reported none)."""

    keys: list[PublicKey]
    sealing_key: str


def key_chain(certificate: MachineCertificate, rotations: list[Any]) -> KeyChain:
    """The machine's keys, first (certified) to current, following only rotations each signed by the key before.

    ``rotations`` are wire forms of the SignedResults of its ROTATE_KEY orders, in the order the hub recorded them;
    one that does not verify against the current end of the chain ends it there (so a hub can withhold a rotation,
    which only makes newer results unverifiable, but never slip in a key of its own). The sealing key is the one
    the certificate or the last rotation followed names, signed with it: a hub cannot choose whom a master seals to.
    """
    keys = [PublicKey.from_text(certificate.public_key)]
    sealing = certificate.sealing_key
    for raw in rotations[:MAX_ROTATIONS]:
        try:
            result = SignedResult.from_wire(raw)
            result.verify(keys[-1])
            new_key = PublicKey.from_text(str(result.extra.get("public_key", "")))
        except ProtocolError:
            break
        if (
            result.machine != certificate.machine
            or result.scenario != certificate.scenario
            or result.status is not OrderState.SUCCEEDED
            or new_key in keys
        ):
            break
        keys.append(new_key)
        sealing = _sealing_text(result.extra.get("sealing_key"))  # the previous one went with the previous key
    return KeyChain(keys, sealing)


def _sealing_text(raw: Any) -> str:
    """A sealing key as a rotation reported it, or "" if it reported none (an older daemon) or not a valid one."""
    try:
        return SealingKey.from_text(raw).to_text() if raw else ""
    except ProtocolError:
        return ""


def trusted_keys(certificate: MachineCertificate, rotations: list[Any]) -> list[PublicKey]:
    """The keys of ``key_chain``: first (certified) to current."""
    return key_chain(certificate, rotations).keys


@dataclass(frozen=True)
class ReadyStatement:
    """A machine's signed facts (addresses, OS, versions) as it reported them when its session began."""

    scenario: str
    machine: str
    facts: dict[str, Any]
    at: float
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        return pack(["crc-ready-v1", self.scenario, self.machine, canonical(self.facts), float(self.at)])

    def signed(self, machine: Identity) -> ReadyStatement:
        return ReadyStatement(self.scenario, self.machine, self.facts, self.at, machine.sign(self.signing_payload()))

    def verify(self, machine_key: PublicKey, scenario: str, machine: str) -> None:
        """Raises ProtocolError BAD_SIGNATURE unless the machine signed these facts about itself."""
        if self.scenario != scenario or self.machine != machine:
            raise _untrusted("the facts are another machine's", machine=self.machine)
        machine_key.verify(self.signature, self.signing_payload())


def addresses_from_facts(facts: dict[str, Any]) -> list[str]:
    """Routable addresses first (IPv4 before IPv6, private before public), as reported; junk is ignored."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for raw in facts.get("ips") or []:
        try:
            ip = ipaddress.ip_address(str(raw).split("%")[0])
        except ValueError:
            continue
        if not ip.is_loopback and not ip.is_link_local and ip not in found:
            found.append(ip)
    return [str(ip) for ip in sorted(found, key=lambda ip: (ip.version, ip.is_private is False))]
