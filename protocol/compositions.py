"""Compositions: a stored job assigned to an ensemble (a target such as ``role:web``), which every member plays
once, members that join later included (BigBand's "compositions", AWS SSM State Manager associations).

An ordinary order is signed for one machine, so a master would have to be there whenever a member joins. A
composition is instead the master's signed statement "every machine of scenario S that ``target`` selects runs
this EXEC body once". The hub hands each member a ``MemberOrder``: the composition, the machine it is for, and
that machine's certificate. The daemon checks all three itself:

- the composition verifies against its own master key and names its scenario;
- the order's id is the composition's id joined to the machine's own id (``member_order_id``), so the journal
  that refuses a second order with one id refuses a second play of one composition, across reconnects, hub
  restarts and replicas, and a crash mid-play is reported ``interrupted`` and never played again;
- the machine is a member: its certificate (the master's signed word on its name, role and labels) or, for a
  machine that joined with an enrollment token without approval, the role and labels that token gave it, is
  selected by ``target``. A hub cannot deliver a composition to a machine it was not meant for.

What a hub *can* do is withhold one, or keep handing out one the master unassigned to members that have not
played it yet: unassigning is the hub's bookkeeping. ``expires`` bounds that (0: never expires).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.certificates import MachineCertificate
from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey
from protocol.orders import Order, OrderKind, canonical
from protocol.targeting import selects

# A member order of a composition that never expires is valid until this time (9999-12-31), a finite number so
# every order keeps a numeric expiry (JSON has no infinity) and the daemon's journal never forgets its id.
NEVER = 253402300799.0


@dataclass(frozen=True)
class Member:
    """A machine as a composition's target sees it: the facts the master vouched for."""

    name: str
    role: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Composition:
    id: str
    master: str  # the signing master's id
    scenario: str  # the scenario's name
    target: str  # a ``protocol.targeting`` target
    body: dict[str, Any]  # the EXEC body every member runs (``protocol.order_bodies.ExecBody``, job marks included)
    created: float
    expires: float = 0.0  # unix time after which no member starts it; 0: never
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        return pack(["crc-composition-v1", self.id, self.master, self.scenario, self.target, canonical(self.body),
                     float(self.created), float(self.expires)])  # fmt: skip

    def signed(self, master: Identity) -> Composition:
        unsigned = replace(self, master=master.id, signature=b"")
        return replace(unsigned, signature=master.sign(unsigned.signing_payload()))

    @property
    def job(self) -> str:
        return str(self.body.get("job") or "")

    @property
    def job_version(self) -> int | None:
        version = self.body.get("job_version")
        return version if isinstance(version, int) else None

    @property
    def valid_until(self) -> float:
        return self.expires if self.expires else NEVER

    def verify(self, master_key: PublicKey, scenario: str) -> None:
        """Raises ProtocolError BAD_SIGNATURE unless ``master_key`` signed it, WRONG_TARGET for another scenario."""
        if self.master != master_key.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "the composition is not signed by this master")
        master_key.verify(self.signature, self.signing_payload())
        if self.scenario != scenario:
            raise ProtocolError(ErrorCode.WRONG_TARGET, f"the composition is for scenario {self.scenario!r}")

    def admits(self, member: Member) -> bool:
        """Whether ``target`` selects this machine (a plain name that is not its name selects nothing)."""
        return selects(self.target, member)

    def member_order_id(self, machine_id: str) -> str:
        return member_order_id(self.id, machine_id)

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "master": self.master, "scenario": self.scenario, "target": self.target,
                "body": self.body, "created": self.created, "expires": self.expires,
                "signature": self.signature}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> Composition:
        """Raises ProtocolError BAD_FIELD for a malformed composition."""
        if not isinstance(raw, Mapping):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a composition is a map")
        texts: dict[str, str] = {}
        for name in ("id", "master", "scenario", "target"):
            value = raw.get(name)
            if not isinstance(value, str) or not value:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"composition field {name!r} is missing", field=name)
            texts[name] = value
        body, signature = raw.get("body"), raw.get("signature", b"")
        if not isinstance(body, Mapping):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a composition's body is a map", field="body")
        if not isinstance(signature, bytes):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a composition's signature is bytes", field="signature")
        return cls(**texts, body=dict(body), created=_number(raw, "created"), expires=_number(raw, "expires", 0.0),
                   signature=signature)  # fmt: skip


def _number(raw: Mapping[str, Any], name: str, default: float | None = None) -> float:
    value = raw.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"a composition's {name} is a number", field=name)
    return float(value)


def member_order_id(composition_id: str, machine_id: str) -> str:
    """The one order id a composition's play on a machine has: a second play would reuse it, and is refused."""
    return f"{composition_id}.{machine_id}"


@dataclass(frozen=True)
class MemberOrder:
    """What the hub delivers to each member: the composition, the machine it is for, and that machine's
    certificate (None for a joiner its master has not certified yet)."""

    composition: Composition
    machine: str
    certificate: dict[str, Any] | None = None

    def as_order(self) -> Order:
        """The EXEC order this play is, every field taken from the signed composition (and the machine id)."""
        c = self.composition
        return Order(self.composition.member_order_id(self.machine), c.scenario, self.machine, OrderKind.EXEC,
                     dict(c.body), c.valid_until, c.master, c.signature)  # fmt: skip

    def to_wire(self) -> dict[str, Any]:
        """The order's own fields (what the hub files and lists it by) with the composition beside them: a daemon
        reads only the composition, the machine and the certificate (``from_wire``)."""
        return {**self.as_order().to_wire(), "composition": self.composition.to_wire(),
                "certificate": self.certificate}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> MemberOrder:
        """Raises ProtocolError BAD_FIELD for a malformed member order."""
        if not isinstance(raw, Mapping):
            raise ProtocolError(ErrorCode.BAD_FIELD, "an order is a map")
        machine, certificate = raw.get("machine"), raw.get("certificate")
        if not isinstance(machine, str):
            raise ProtocolError(ErrorCode.BAD_FIELD, "order field 'machine' is missing", field="machine")
        if certificate is not None and not isinstance(certificate, Mapping):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a member order's certificate is a map", field="certificate")
        return cls(Composition.from_wire(raw.get("composition")), machine,
                   None if certificate is None else dict(certificate))  # fmt: skip


def is_member_order(raw: Any) -> bool:
    """Whether a delivered order is a composition's play (checked by ``MemberOrder``, not ``Order.verify``)."""
    return isinstance(raw, Mapping) and "composition" in raw


def certified_member(raw: Any, master_key: PublicKey, scenario: str, machine_id: str) -> Member | None:
    """The machine as the certificate delivered with a member order describes it, if that certificate is its
    master's word on this very machine; else None."""
    if raw is None:
        return None
    try:
        certificate = MachineCertificate.from_wire(raw)
        certificate.verify(master_key, scenario)
    except ProtocolError:
        return None
    if certificate.machine != machine_id:
        return None
    return Member(certificate.name, certificate.role, dict(certificate.labels))


def check_member_order(
    delivered: MemberOrder,
    master_key: PublicKey,
    machine_id: str,
    scenario: str,
    now: float,
    *,
    certified: Member | None,
    enrolled: Member | None,
) -> Order:
    """What a daemon checks before playing a composition; the order to journal and run.

    ``certified``: this machine as its certificate describes it, once the caller verified the certificate
    delivered with it against its master key (None: none was, or it did not verify). ``enrolled``: this machine
    as the enrollment token it joined with (without approval) describes it, from its own config.

    Raises:
        ProtocolError: BAD_SIGNATURE (not its master's), WRONG_TARGET (another machine or scenario, or a target
            that does not select this machine), EXPIRED.
    """
    composition = delivered.composition
    composition.verify(master_key, scenario)
    if delivered.machine != machine_id:
        raise ProtocolError(ErrorCode.WRONG_TARGET, "the composition was delivered for another machine")
    if not now <= composition.valid_until:  # "not <=": a NaN expiry counts as expired
        raise ProtocolError(ErrorCode.EXPIRED, "the composition expired", expires=composition.expires)
    member = certified or enrolled
    if member is None:
        raise ProtocolError(
            ErrorCode.WRONG_TARGET,
            "this machine has no certificate from its master yet, so it cannot show it is a member",
        )
    if not composition.admits(member):
        raise ProtocolError(
            ErrorCode.WRONG_TARGET,
            f"target {composition.target!r} does not select this machine ({member.name}, role {member.role!r})",
        )
    return delivered.as_order()
