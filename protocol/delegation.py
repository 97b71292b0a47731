"""Delegations: a master's signed statement that another key may sign orders on its behalf.

REST clients and the dashboard hold bearer tokens, not the master's key, yet daemons obey only orders signed by
their master. An operator token therefore carries a *delegate* key pair made by the master when the token was
created, and a ``Delegation`` (like an SSH certificate) signed by the master: "until ``expires``, key K may sign
orders for scenario S (or every scenario of mine) under token T". An order signed by K carries the delegation;
the daemon checks the delegation against its master's key, then the order against K. Nothing needs to be sent to
machines beforehand, and machines added later accept it too.

A delegation is short-lived whatever the token's own lifetime: it ends at most ``DELEGATION_LIFETIME`` after the
master signed it (``issued``), and daemons refuse one that claims longer. The master renews the delegations of its
live tokens (``renewed``: same token, key and scope, a fresh lifetime, never past the token's own end), so a hub
that kept a revoked token's delegate key can sign with it only until the last delegation it was given runs out.
A delegation made before lifetimes existed (``issued`` 0) still verifies as the master's, so its master can renew
it, but no daemon obeys it.

Only everyday kinds can be delegated (see ``protocol.orders.DELEGABLE_KINDS``): a token can never rotate keys,
change which master a machine trusts, or install another daemon build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey

DELEGATION_LIFETIME = 12 * 3600.0  # the longest a delegation may sign for; its master renews it before then
_ROUNDING = 1.0  # issued + lifetime, read back as floats, may come out a hair longer


@dataclass(frozen=True)
class Delegation:
    token: str  # the access token's public id (what revocation names)
    master: str  # the delegating master's id
    key: str  # the delegate public key (``ed25519:...``)
    scenario: str  # the scenario name it is limited to; "" = every scenario of the master
    expires: float  # unix time this delegation ends: at most DELEGATION_LIFETIME after ``issued``
    signature: bytes = b""
    issued: float = 0.0  # unix time the master signed it; 0 = made before lifetimes (verifiable, never obeyed)
    token_expires: float = 0.0  # the token's own end (0 = never): renewals never reach past it

    @classmethod
    def issue(
        cls, master: Identity, token: str, key: str, scenario: str, token_expires: float, now: float
    ) -> Delegation:
        """A delegation signed by ``master`` now, for at most ``DELEGATION_LIFETIME`` (less if the token ends
        sooner)."""
        expires = now + DELEGATION_LIFETIME
        if token_expires:
            expires = min(expires, token_expires)
        unsigned = cls(token, master.id, key, scenario, expires, issued=now, token_expires=token_expires)
        return unsigned.signed(master)

    @property
    def token_end(self) -> float:
        """When the token itself ends (0: never); before lifetimes, a delegation ended with its token."""
        return self.token_expires if self.issued else self.expires

    def signing_payload(self) -> bytes:
        if not self.issued:  # the form masters signed before lifetimes: kept so they can check and renew it
            return pack(["crc-delegation-v1", self.token, self.master, self.key, self.scenario, float(self.expires)])
        return pack(["crc-delegation-v2", self.token, self.master, self.key, self.scenario, float(self.expires),
                     float(self.issued), float(self.token_expires)])  # fmt: skip

    def signed(self, master: Identity) -> Delegation:
        unsigned = Delegation(self.token, master.id, self.key, self.scenario, self.expires, issued=self.issued,
                              token_expires=self.token_expires)  # fmt: skip
        return Delegation(**{**unsigned.__dict__, "signature": master.sign(unsigned.signing_payload())})

    def check_signed(self, master_key: PublicKey) -> None:
        """Raises ProtocolError BAD_SIGNATURE unless ``master_key`` signed this delegation (whatever its times)."""
        if self.master != master_key.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "delegation is not from this daemon's master")
        master_key.verify(self.signature, self.signing_payload())

    def renewed(self, master: Identity, now: float) -> Delegation:
        """The same delegation (token, delegate key, scope, token end) with a fresh lifetime, signed by ``master``.

        Only a delegation ``master`` signed itself is renewed, so whoever hands it over (the hub) cannot get a
        delegation for a key of its own.

        Raises:
            ProtocolError: BAD_SIGNATURE (not signed by ``master``) or EXPIRED (the token itself has ended).
        """
        self.check_signed(master.public)
        if self.token_end and now >= self.token_end:
            raise ProtocolError(ErrorCode.EXPIRED, "the token has expired: it cannot be renewed", token=self.token)
        return Delegation.issue(master, self.token, self.key, self.scenario, self.token_end, now)

    def verify(self, master_key: PublicKey, scenario: str, now: float) -> PublicKey:
        """The delegate key, once the delegation is found signed by ``master_key``, valid for ``scenario``,
        no longer than ``DELEGATION_LIFETIME`` and not expired.

        Raises:
            ProtocolError: BAD_SIGNATURE (not this master's), WRONG_TARGET (another scenario) or EXPIRED (past
                its end, or claiming a longer life than a delegation may have).
        """
        self.check_signed(master_key)
        if self.scenario and self.scenario != scenario:
            raise ProtocolError(ErrorCode.WRONG_TARGET, "delegation is for another scenario", scenario=self.scenario)
        if not self.issued or not self.expires or self.expires - self.issued > DELEGATION_LIFETIME + _ROUNDING:
            raise ProtocolError(
                ErrorCode.EXPIRED,
                f"the token's delegation is not limited to {DELEGATION_LIFETIME / 3600:.0f} h: its master must renew "
                "it (crc token renew)",
                token=self.token,
            )
        if now > self.expires:
            raise ProtocolError(
                ErrorCode.EXPIRED, "the delegation of the token that signed this order has expired", token=self.token
            )
        return PublicKey.from_text(self.key)

    def to_wire(self) -> dict[str, Any]:
        return {"token": self.token, "master": self.master, "key": self.key, "scenario": self.scenario,
                "expires": self.expires, "signature": self.signature, "issued": self.issued,
                "token_expires": self.token_expires}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> Delegation:
        """Raises ProtocolError BAD_FIELD for a malformed delegation."""
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a delegation is a map")
        kinds: dict[str, type | tuple[type, ...]] = {
            "token": str, "master": str, "key": str, "scenario": str, "expires": (int, float), "signature": bytes,
        }  # fmt: skip
        for name, kind in kinds.items():
            if not isinstance(raw.get(name), kind) or isinstance(raw.get(name), bool):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"delegation field {name!r} is missing or of the wrong type")
        times = {}
        for name in ("issued", "token_expires"):  # absent from delegations made before lifetimes
            value = raw.get(name, 0.0)
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"delegation field {name!r} is of the wrong type")
            times[name] = float(value)
        return cls(raw["token"], raw["master"], raw["key"], raw["scenario"], float(raw["expires"]), raw["signature"],
                   **times)  # fmt: skip
