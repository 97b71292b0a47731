"""Delegations: a master's signed statement that another key may sign orders on its behalf.

REST clients and the dashboard hold bearer tokens, not the master's key, yet daemons obey only orders signed by
their master. An operator token therefore carries a *delegate* key pair made by the master when the token was
created, and a ``Delegation`` (like an SSH certificate) signed by the master: "until ``expires``, key K may sign
orders for scenario S (or every scenario of mine) under token T". An order signed by K carries the delegation;
the daemon checks the delegation against its master's key, then the order against K. Nothing needs to be sent to
machines beforehand, and machines added later accept it too.

Only everyday kinds can be delegated (see ``protocol.orders.DELEGABLE_KINDS``): a token can never rotate keys,
change which master a machine trusts, or install another daemon build.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey


@dataclass(frozen=True)
class Delegation:
    token: str  # the access token's public id (what revocation names)
    master: str  # the delegating master's id
    key: str  # the delegate public key (``ed25519:...``)
    scenario: str  # the scenario name it is limited to; "" = every scenario of the master
    expires: float  # unix time; 0 = no expiry (revoking the token is then the only way to end it)
    signature: bytes = b""

    def signing_payload(self) -> bytes:
        return pack(["crc-delegation-v1", self.token, self.master, self.key, self.scenario, float(self.expires)])

    def signed(self, master: Identity) -> Delegation:
        unsigned = Delegation(self.token, master.id, self.key, self.scenario, self.expires)
        return Delegation(**{**unsigned.__dict__, "signature": master.sign(unsigned.signing_payload())})

    def verify(self, master_key: PublicKey, scenario: str, now: float) -> PublicKey:
        """The delegate key, once the delegation is found signed by ``master_key``, valid for ``scenario`` and
        not expired.

        Raises:
            ProtocolError: BAD_SIGNATURE (not this master's), WRONG_TARGET (another scenario) or EXPIRED.
        """
        if self.master != master_key.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "delegation is not from this daemon's master")
        master_key.verify(self.signature, self.signing_payload())
        if self.scenario and self.scenario != scenario:
            raise ProtocolError(ErrorCode.WRONG_TARGET, "delegation is for another scenario", scenario=self.scenario)
        if self.expires and now > self.expires:
            raise ProtocolError(ErrorCode.EXPIRED, "the token that signed this order has expired", token=self.token)
        return PublicKey.from_text(self.key)

    def to_wire(self) -> dict[str, Any]:
        return {"token": self.token, "master": self.master, "key": self.key, "scenario": self.scenario,
                "expires": self.expires, "signature": self.signature}  # fmt: skip

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
        return cls(raw["token"], raw["master"], raw["key"], raw["scenario"], float(raw["expires"]), raw["signature"])
