"""A master's view of its enrollment tokens and of the machines that joined with them (``protocol.enrollment``).

The hub lists the tokens with each joiner's registration; nothing of that is believed as such. A token counts
only if its claims carry this master's signature; a joiner only if its registration's MAC checks out under the
token's secret (which this master derives again), and only the first ``uses`` of them (a hub letting more join
than the token allows gains nothing). Such a joiner is certified: this master signs its certificate with the
role and labels of the signed claims, after which it is a machine like any other. With ``approve`` tokens it
waits for ``crc machine approve`` first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from clients.master.models import MachineInfo
from protocol import ErrorCode, Identity, ProtocolError, PublicKey
from protocol.certificates import MachineCertificate
from protocol.enrollment import EnrollmentClaims, Registration, verify_claims


class JoinState(StrEnum):
    CERTIFIED = "certified"  # a machine of the scenario now
    TO_CERTIFY = "to_certify"  # genuine: certified at the next look
    PENDING = "pending"  # genuine, waits for approval (the token was made with approve)
    REFUSED = "refused"  # not genuine, beyond the token's uses, or no longer in the scenario


@dataclass(frozen=True)
class Joiner:
    name: str
    os: str
    public_key: str
    joined: float
    state: JoinState
    problem: str = ""
    sealing_key: str = ""  # as its registration named it (MAC'd with the rest); "" from a daemon before sealing

    @property
    def id(self) -> str:
        return PublicKey.from_text(self.public_key).id


@dataclass(frozen=True)
class TokenInfo:
    """A token as this master checked it; ``problem`` is why it is not this master's (then it is ignored)."""

    id: str
    claims: EnrollmentClaims | None
    used: int
    revoked: bool
    created: float
    joiners: list[Joiner] = field(default_factory=list)
    problem: str = ""


def read_tokens(
    master: Identity, scenario: str, raw_tokens: list[dict[str, Any]], machines: list[MachineInfo]
) -> list[TokenInfo]:
    """The hub's list of the scenario's tokens, checked (see the module doc) against the scenario's machines."""
    present = {m.id: m for m in machines}  # a machine's id is its first key's fingerprint
    tokens = []
    for raw in raw_tokens:
        token_id = str(raw.get("id", ""))
        try:
            claims = EnrollmentClaims.from_wire(raw.get("claims"))
            signature = raw.get("signature")
            if not isinstance(signature, bytes) or claims.id != token_id or claims.scenario != scenario:
                raise ProtocolError(ErrorCode.BAD_SIGNATURE, "the hub's record of this token is not the one issued")
            verify_claims(claims, signature, master.public, None)  # an expired token still lists who joined
        except ProtocolError as exc:
            tokens.append(TokenInfo(token_id, None, 0, bool(raw.get("revoked")), 0.0, problem=exc.message))
            continue
        joiners = [
            _joiner(master, scenario, claims, index, item, present)
            for index, item in enumerate(raw.get("registrations") or [])
        ]
        tokens.append(TokenInfo(token_id, claims, len(joiners), bool(raw.get("revoked")),
                                float(raw.get("created", 0.0)), joiners))  # fmt: skip
    return tokens


def _joiner(master: Identity, scenario: str, claims: EnrollmentClaims, index: int, raw: Any,
            present: dict[str, MachineInfo]) -> Joiner:  # fmt: skip
    joined = float(raw.get("joined", 0.0)) if isinstance(raw, dict) else 0.0
    try:
        registration = Registration.from_wire(raw)
    except ProtocolError as exc:
        return Joiner("?", "", "", joined, JoinState.REFUSED, exc.message)
    name, os_name, key = registration.name, registration.os, registration.public_key
    try:
        if registration.token != claims.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "it names another token")
        registration.verify(master, scenario)
        machine_id = PublicKey.from_text(key).id
    except ProtocolError as exc:
        return Joiner(name, os_name, key, joined, JoinState.REFUSED, exc.message)
    if index >= claims.uses:
        return Joiner(name, os_name, key, joined, JoinState.REFUSED, f"beyond the token's {claims.uses} uses")
    machine = present.get(machine_id)
    if machine is None:
        return Joiner(name, os_name, key, joined, JoinState.REFUSED, "no longer in the scenario (removed?)")
    sealing = registration.sealing_key
    if machine.trusted:
        return Joiner(name, os_name, key, joined, JoinState.CERTIFIED, sealing_key=sealing)
    state = JoinState.PENDING if claims.approve else JoinState.TO_CERTIFY
    return Joiner(name, os_name, key, joined, state, sealing_key=sealing)


def certificates(
    master: Identity, scenario: str, tokens: list[TokenInfo], approved: set[str]
) -> list[MachineCertificate]:
    """This master's certificates for the genuine joiners not certified yet: all of them, except that those of
    ``approve`` tokens need their name in ``approved``."""
    issued = []
    for token in tokens:
        if token.claims is None:
            continue
        for joiner in token.joiners:
            wanted = joiner.state is JoinState.TO_CERTIFY or (
                joiner.state is JoinState.PENDING and joiner.name in approved
            )
            if wanted:
                certificate = MachineCertificate(scenario, joiner.name, joiner.id, joiner.public_key, joiner.os,
                                                 token.claims.role, dict(token.claims.labels),
                                                 sealing_key=joiner.sealing_key,
                                                 sealed=token.claims.sealed and bool(joiner.sealing_key))  # fmt: skip
                issued.append(certificate.endorsed(master))
    return issued
