"""Enrollment tokens: how a machine nobody declared joins a scenario's ensemble (a role) by itself.

A master issues a token: *claims* (token id, scenario, role, labels, how many machines may use it, until when,
whether each join waits for approval, the master's public key) signed with the master's key, plus a *secret*
only the master can compute again (``Identity.derive``, one per token id). The token's text carries all three;
an admin pastes it on the machine, or a software-distribution tool does.

A joining machine makes its own key pair and sends the hub the claims, their signature, and a *registration*: its
name, os, public key, report key and sealing key (``protocol.sealing``), MAC'd (HMAC-SHA256) under the token's
secret. The secret itself never reaches the hub. So the hub can check the claims (it knows the master's key), count
uses and refuse an expired or revoked token, but cannot mint a token, widen one (the claims are signed) or invent a
registration (it cannot MAC one): the master checks each registration's MAC with the secret it derives again, and
only then signs the machine's certificate (``protocol.certificates``), the same statement that vouches for a
declared machine. The machine takes the master's key from the token, so from its first connection it obeys that
master only.

A master key rotation ends the tokens it issued (their secrets came from the old key); issue new ones.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field, replace
from typing import Any

from protocol.envelope import pack, unpack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey
from protocol.orders import canonical
from protocol.sealing import SealingKey, sealing_key

TOKEN_PREFIX = "crcjoin_"
TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")
MAX_TOKEN_TEXT = 8192
MAX_USES = 100_000


def _bad(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, message, **details)


def enrollment_secret(master: Identity, token_id: str) -> bytes:
    """The secret of ``master``'s token ``token_id``: only that master's private key computes it."""
    return master.derive(b"crc-enroll-v1:" + token_id.encode())


@dataclass(frozen=True)
class EnrollmentClaims:
    """What a token allows, as its master signed it."""

    id: str
    scenario: str
    master_key: PublicKey
    role: str
    labels: dict[str, str] = field(default_factory=dict)
    uses: int = 1
    expires: float = 0.0
    approve: bool = False  # each joining machine waits until the master approves it
    sealed: bool = False  # the scenario is sealed: joiners refuse plain orders, and are certified sealed

    @property
    def master(self) -> str:
        return self.master_key.id

    def signing_payload(self) -> bytes:
        fields = [self.id, self.scenario, self.master_key.to_text(), self.role, canonical(self.labels), self.uses,
                  float(self.expires), self.approve]  # fmt: skip
        if self.sealed:  # its own version: a hub cannot unseal a token's joiners by dropping the flag
            return pack(["crc-enroll-claims-v2", *fields, True])
        return pack(["crc-enroll-claims-v1", *fields])

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "scenario": self.scenario, "master_public_key": self.master_key.to_text(),
                "role": self.role, "labels": dict(self.labels), "uses": self.uses, "expires": self.expires,
                "approve": self.approve, **({"sealed": True} if self.sealed else {})}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> EnrollmentClaims:
        if not isinstance(raw, dict):
            raise _bad("an enrollment token's claims must be a map")
        token_id, scenario, role = raw.get("id"), raw.get("scenario"), raw.get("role")
        labels, uses, expires, approve = raw.get("labels", {}), raw.get("uses"), raw.get("expires"), raw.get("approve")
        if not isinstance(token_id, str) or not TOKEN_ID.match(token_id):
            raise _bad("an enrollment token's id is 16 hex digits", field="id")
        if not isinstance(scenario, str) or not scenario or not isinstance(role, str) or not role:
            raise _bad("an enrollment token names its scenario and role", field="scenario")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise _bad("an enrollment token's labels are a map of strings", field="labels")
        if isinstance(uses, bool) or not isinstance(uses, int) or not 1 <= uses <= MAX_USES:
            raise _bad(f"an enrollment token's uses are 1 to {MAX_USES}", field="uses")
        if isinstance(expires, bool) or not isinstance(expires, int | float) or not expires > 0:
            raise _bad("an enrollment token has an expiry", field="expires")
        if not isinstance(approve, bool):
            raise _bad("an enrollment token says whether joins wait for approval", field="approve")
        sealed = raw.get("sealed", False)
        if not isinstance(sealed, bool):
            raise _bad("an enrollment token says whether its scenario is sealed", field="sealed")
        key = PublicKey.from_text(str(raw.get("master_public_key", "")))
        return cls(token_id, scenario, key, role, dict(labels), uses, float(expires), approve, sealed)


@dataclass(frozen=True)
class Registration:
    """A machine's request to join with a token: who it is, MAC'd under the token's secret."""

    token: str  # the token's id
    name: str
    os: str
    public_key: str
    report_key: str  # hex; authenticates its startup script's boot reports (protocol.boot)
    proof: bytes = b""
    sealing_key: str = ""  # ``x25519:...``: what secrets for it are sealed to; "" from a daemon before sealing

    def _payload(self, scenario: str) -> bytes:
        fields = [scenario, self.token, self.name, self.os, self.public_key, self.report_key]
        if not self.sealing_key:  # as daemons from before sealing keys MAC'd it: their registrations still verify
            return pack(["crc-enroll-registration-v1", *fields])
        # Its own version: a hub stripping the sealing key off (or putting one in) breaks the MAC.
        return pack(["crc-enroll-registration-v2", *fields, self.sealing_key])

    def proven(self, scenario: str, secret: bytes) -> Registration:
        """This registration with its proof under the token's ``secret``."""
        proof = hmac.new(secret, self._payload(scenario), hashlib.sha256).digest()
        return replace(self, proof=proof)

    def verify(self, master: Identity, scenario: str) -> None:
        """What a master checks before it certifies the machine.

        Raises:
            ProtocolError: BAD_SIGNATURE if the proof was not made with the secret of this master's token (a
                registration the hub or anyone else made up, or one moved to another scenario or name).
        """
        expected = hmac.new(enrollment_secret(master, self.token), self._payload(scenario), hashlib.sha256).digest()
        if not hmac.compare_digest(expected, self.proof):
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"machine {self.name!r}'s registration was not made with enrollment token {self.token}",
            )

    def to_wire(self) -> dict[str, Any]:
        return {"token": self.token, "name": self.name, "os": self.os, "public_key": self.public_key,
                "report_key": self.report_key, "proof": self.proof,
                **({"sealing_key": self.sealing_key} if self.sealing_key else {})}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> Registration:
        if not isinstance(raw, dict):
            raise _bad("a registration must be a map")
        texts = [raw.get(name) for name in ("token", "name", "os", "public_key", "report_key")]
        if not all(isinstance(t, str) for t in texts) or not isinstance(raw.get("proof"), bytes):
            raise _bad("a registration has token, name, os, public_key and report_key strings and a proof")
        token, name, os_name, public_key, report_key = (str(t) for t in texts)
        sealing = raw.get("sealing_key") or ""
        if not isinstance(sealing, str):
            raise _bad("a registration's sealing key is x25519:<base64>")
        if sealing:
            SealingKey.from_text(sealing)
        return cls(token, name, os_name, public_key, report_key, bytes(raw["proof"]), sealing)


@dataclass(frozen=True)
class EnrollmentToken:
    """A token as its master issues it and a machine holds it: signed claims and the secret."""

    claims: EnrollmentClaims
    signature: bytes
    secret: bytes

    @classmethod
    def issue(cls, master: Identity, claims: EnrollmentClaims) -> EnrollmentToken:
        if claims.master_key != master.public:
            raise _bad("a token's claims must name the key of the master that signs them")
        return cls(claims, master.sign(claims.signing_payload()), enrollment_secret(master, claims.id))

    def text(self) -> str:
        packed = pack([self.claims.to_wire(), self.signature, self.secret])
        return TOKEN_PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")

    @classmethod
    def parse(cls, text: str) -> EnrollmentToken:
        """Raises ProtocolError BAD_FIELD for text that is not an enrollment token."""
        text = text.strip()
        if not text.startswith(TOKEN_PREFIX) or len(text) > MAX_TOKEN_TEXT:
            raise _bad(f"not an enrollment token (they read {TOKEN_PREFIX}...)")
        body = text.removeprefix(TOKEN_PREFIX)
        try:
            raw = unpack(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError, ProtocolError):
            raise _bad("an enrollment token's text is damaged (copied in part?)") from None
        if not isinstance(raw, list) or len(raw) != 3 or not all(isinstance(b, bytes) for b in raw[1:]):
            raise _bad("an enrollment token's text is damaged (copied in part?)")
        return cls(EnrollmentClaims.from_wire(raw[0]), raw[1], raw[2])

    def register(self, name: str, os_name: str, machine: Identity, report_key: str) -> Registration:
        """The registration of a machine with this token (its key pair made on the machine), naming the sealing
        key derived from that key pair."""
        sealing = sealing_key(machine).to_text()
        unproven = Registration(self.claims.id, name, os_name, machine.public.to_text(), report_key, b"", sealing)
        return unproven.proven(self.claims.scenario, self.secret)


def verify_claims(claims: EnrollmentClaims, signature: bytes, master_key: PublicKey, now: float | None) -> None:
    """What the hub (and a master) check of presented claims: signed by ``master_key``, not expired at ``now``
    (None: whenever; a master reading back an expired token of its own).

    Raises:
        ProtocolError: BAD_SIGNATURE for claims that key did not sign (forged or widened), EXPIRED after expiry.
    """
    if claims.master_key != master_key:
        raise ProtocolError(ErrorCode.BAD_SIGNATURE, "this enrollment token was issued by another master key")
    try:
        master_key.verify(signature, claims.signing_payload())
    except ProtocolError:
        raise ProtocolError(
            ErrorCode.BAD_SIGNATURE, "this enrollment token's claims were not signed by its master (forged or changed)"
        ) from None
    if now is not None and not now < claims.expires:
        raise ProtocolError(ErrorCode.EXPIRED, f"enrollment token {claims.id} has expired")
