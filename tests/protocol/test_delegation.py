"""Access tokens and delegations: an operator token's delegate key signs orders a daemon accepts exactly as far
as the master's delegation allows, and nothing else."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from protocol.delegation import Delegation
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity
from protocol.orders import Order, OrderKind
from protocol.tokens import AccessToken
from tests.protocol.support import DAEMON, MASTER, NOW, OTHER_MASTER

DELEGATE = Identity.from_seed(b"\x07" * 32)


def delegation(**changes: object) -> Delegation:
    fields = {"token": "0123456789abcdef", "master": "", "key": DELEGATE.public.to_text(), "scenario": "demo",
              "expires": NOW + 3600}  # fmt: skip
    fields.update(changes)
    return Delegation(**fields).signed(MASTER)  # type: ignore[arg-type]


def order(kind: OrderKind = OrderKind.EXEC, scenario: str = "demo") -> Order:
    return Order("o-1", scenario, DAEMON.id, kind, {"command": "true"}, NOW + 300, "")


def test_a_delegated_order_verifies_against_the_master_key() -> None:
    signed = order().signed_by_delegate(DELEGATE, delegation())
    assert signed.master == MASTER.id
    signed.verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert Order.from_wire(signed.to_wire()) == signed  # the delegation travels with the order


def test_an_unscoped_delegation_covers_every_scenario() -> None:
    order(scenario="other").signed_by_delegate(DELEGATE, delegation(scenario="")).verify(
        MASTER.public, DAEMON.id, "other", NOW
    )


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"scenario": "other"}, ErrorCode.WRONG_TARGET),
        ({"expires": NOW - 1}, ErrorCode.EXPIRED),
    ],
)
def test_a_delegation_is_held_to_its_scope_and_expiry(change: dict[str, object], code: ErrorCode) -> None:
    signed = order().signed_by_delegate(DELEGATE, delegation(**change))
    with pytest.raises(ProtocolError) as caught:
        signed.verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is code


def test_a_delegation_from_another_master_or_a_forged_one_is_refused() -> None:
    foreign = Delegation("0123456789abcdef", "", DELEGATE.public.to_text(), "demo", NOW + 60).signed(OTHER_MASTER)
    with pytest.raises(ProtocolError) as caught:
        order().signed_by_delegate(DELEGATE, foreign).verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    # a hub that swaps in its own key, keeping the master's signature, breaks the delegation's signature
    other = Identity.from_seed(b"\x09" * 32)
    swapped = dataclasses.replace(delegation(), key=other.public.to_text())
    with pytest.raises(ProtocolError) as caught:
        order().signed_by_delegate(other, swapped).verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_an_order_signed_by_another_key_than_the_delegate_is_refused() -> None:
    signed = order().signed_by_delegate(Identity.from_seed(b"\x0a" * 32), delegation())
    with pytest.raises(ProtocolError) as caught:
        signed.verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize("kind", [OrderKind.ROTATE_KEY, OrderKind.TRUST_MASTER, OrderKind.UPDATE])
def test_tokens_cannot_sign_key_trust_or_update_orders(kind: OrderKind) -> None:
    with pytest.raises(ProtocolError):
        order(kind).signed_by_delegate(DELEGATE, delegation())
    # nor can a hub get round that by building the order itself
    forged = dataclasses.replace(order(kind), master=MASTER.id, delegation=delegation())
    forged = dataclasses.replace(forged, signature=DELEGATE.sign(forged.signing_payload()))
    with pytest.raises(ProtocolError) as caught:
        forged.verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_master_signature_does_not_stand_for_a_delegated_payload() -> None:
    plain = order().signed(MASTER)
    relabelled = dataclasses.replace(plain, delegation=delegation())
    with pytest.raises(ProtocolError):
        relabelled.verify(MASTER.public, DAEMON.id, "demo", NOW)


def test_token_text_round_trips_and_bad_text_is_refused() -> None:
    token = AccessToken.generate(secrets.token_bytes)
    parsed = AccessToken.parse(token.text())
    assert parsed == token and parsed.matches(token.secret_hash)
    assert not AccessToken.generate(secrets.token_bytes).matches(token.secret_hash)
    for bad in ("", "crc_", "crc_0123.abc", "bearer xyz", token.text()[:-5], "crc_0123456789abcdef.!!!"):
        with pytest.raises(ProtocolError):
            AccessToken.parse(bad)


def test_the_delegate_key_opens_only_with_its_token() -> None:
    token = AccessToken.generate(secrets.token_bytes)
    sealed = token.seal(DELEGATE, secrets.token_bytes)
    assert DELEGATE.private_text().encode() not in sealed
    assert token.open(sealed).id == DELEGATE.id
    with pytest.raises(ProtocolError):
        AccessToken.generate(secrets.token_bytes).open(sealed)
    with pytest.raises(ProtocolError):
        AccessToken(token.id, token.secret).open(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    with pytest.raises(ProtocolError):
        token.open(b"short")
