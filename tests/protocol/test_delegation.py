"""Access tokens and delegations: an operator token's delegate key signs orders a daemon accepts exactly as far
as the master's delegation allows, and nothing else."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from protocol.delegation import DELEGATION_LIFETIME, Delegation
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity
from protocol.orders import Order, OrderKind
from protocol.tokens import AccessToken
from tests.protocol.support import DAEMON, MASTER, NOW, OTHER_MASTER

DELEGATE = Identity.from_seed(b"\x07" * 32)


def delegation(**changes: object) -> Delegation:
    fields = {"token": "0123456789abcdef", "master": "", "key": DELEGATE.public.to_text(), "scenario": "demo",
              "expires": NOW + 3600, "issued": NOW - 60}  # fmt: skip
    fields.update(changes)
    return Delegation(**fields).signed(MASTER)  # type: ignore[arg-type]


def order(kind: OrderKind = OrderKind.EXEC, scenario: str = "demo", expires: float = NOW + 300) -> Order:
    return Order("o-1", scenario, DAEMON.id, kind, {"command": "true"}, expires, "")


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
    foreign = Delegation.issue(OTHER_MASTER, "0123456789abcdef", DELEGATE.public.to_text(), "demo", 0.0, NOW)
    with pytest.raises(ProtocolError) as caught:
        order().signed_by_delegate(DELEGATE, foreign).verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    # a hub that swaps in its own key, keeping the master's signature, breaks the delegation's signature
    other = Identity.from_seed(b"\x09" * 32)
    swapped = dataclasses.replace(delegation(), key=other.public.to_text())
    with pytest.raises(ProtocolError) as caught:
        order().signed_by_delegate(other, swapped).verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_delegation_is_issued_for_at_most_its_lifetime_and_never_past_its_token() -> None:
    short = Delegation.issue(MASTER, "0123456789abcdef", DELEGATE.public.to_text(), "demo", 0.0, NOW)
    assert (short.issued, short.expires, short.token_expires) == (NOW, NOW + DELEGATION_LIFETIME, 0.0)
    ending = Delegation.issue(MASTER, "0123456789abcdef", DELEGATE.public.to_text(), "demo", NOW + 600, NOW)
    assert ending.expires == NOW + 600
    assert Delegation.from_wire(short.to_wire()) == short
    lasting = order(expires=NOW + 2 * DELEGATION_LIFETIME)
    lasting.signed_by_delegate(DELEGATE, short).verify(MASTER.public, DAEMON.id, "demo", NOW + 3600)
    with pytest.raises(ProtocolError) as caught:  # the token has not ended, but the delegation has
        lasting.signed_by_delegate(DELEGATE, short).verify(
            MASTER.public, DAEMON.id, "demo", NOW + DELEGATION_LIFETIME + 1
        )
    assert caught.value.code is ErrorCode.EXPIRED


@pytest.mark.parametrize(
    "changes",
    [
        {"issued": 0.0, "expires": NOW + 60},  # made before lifetimes (the v1 form): it never ends by itself
        {"issued": NOW, "expires": NOW + DELEGATION_LIFETIME + 3600},  # claims a longer life than allowed
        {"issued": NOW, "expires": 0.0},  # claims no end at all
    ],
)
def test_a_delegation_not_bounded_in_time_is_refused_by_daemons(changes: dict[str, object]) -> None:
    unbounded = delegation(**changes)
    unbounded.check_signed(MASTER.public)  # it is the master's...
    with pytest.raises(ProtocolError) as caught:  # ...but no daemon obeys it
        order().signed_by_delegate(DELEGATE, unbounded).verify(MASTER.public, DAEMON.id, "demo", NOW)
    assert caught.value.code is ErrorCode.EXPIRED
    assert "crc token renew" in caught.value.message


def test_renewing_keeps_token_key_and_scope_and_only_the_master_can_renew() -> None:
    first = Delegation.issue(MASTER, "0123456789abcdef", DELEGATE.public.to_text(), "demo", NOW + 86400, NOW)
    later = NOW + DELEGATION_LIFETIME - 60
    renewed = first.renewed(MASTER, later)
    assert (renewed.token, renewed.key, renewed.scenario, renewed.token_expires) == (
        first.token, first.key, first.scenario, first.token_expires,
    )  # fmt: skip
    assert (renewed.issued, renewed.expires) == (later, later + DELEGATION_LIFETIME)
    lasting = order(expires=NOW + 2 * DELEGATION_LIFETIME)
    lasting.signed_by_delegate(DELEGATE, renewed).verify(MASTER.public, DAEMON.id, "demo", NOW + DELEGATION_LIFETIME)
    # never past the token's own end
    assert first.renewed(MASTER, NOW + 86400 - 10).expires == NOW + 86400
    with pytest.raises(ProtocolError) as caught:
        first.renewed(MASTER, NOW + 86400)
    assert caught.value.code is ErrorCode.EXPIRED
    # a delegation for a key the hub chose (with the master's old signature) is not renewed
    hubs_key = dataclasses.replace(first, key=Identity.from_seed(b"\x0b" * 32).public.to_text())
    with pytest.raises(ProtocolError) as caught:
        hubs_key.renewed(MASTER, later)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    # a delegation made before lifetimes is renewed into a bounded one, ending with its token
    legacy = dataclasses.replace(delegation(issued=0.0, expires=NOW + 86400), signature=b"")
    legacy = legacy.signed(MASTER)
    assert legacy.renewed(MASTER, NOW).expires == NOW + DELEGATION_LIFETIME
    assert legacy.renewed(MASTER, NOW).token_expires == NOW + 86400


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
