"""Enrollment tokens (protocol/enrollment.py): the hub can check a token's claims but not mint, widen or forge one,
nor make up a registration; the master that issued it recognises every registration made with it."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from protocol.enrollment import (
    TOKEN_PREFIX,
    EnrollmentClaims,
    EnrollmentToken,
    Registration,
    enrollment_secret,
    verify_claims,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity

NOW = 1_700_000_000.0
MASTER = Identity.generate(os.urandom)
OTHER = Identity.generate(os.urandom)


def claims(**changes: object) -> EnrollmentClaims:
    base = EnrollmentClaims("0123456789abcdef", "shop", MASTER.public, "web", {"tier": "front"}, 15, NOW + 3600)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_a_token_survives_its_text_and_its_claims_verify() -> None:
    token = EnrollmentToken.issue(MASTER, claims())
    text = token.text()
    assert text.startswith(TOKEN_PREFIX) and "\n" not in text
    parsed = EnrollmentToken.parse(f"  {text}\n")
    assert parsed == token
    verify_claims(parsed.claims, parsed.signature, MASTER.public, NOW)
    assert EnrollmentClaims.from_wire(token.claims.to_wire()) == token.claims


@pytest.mark.parametrize(
    "widened",
    [
        claims(uses=16),
        claims(role="db"),
        claims(labels={"tier": "back"}),
        claims(expires=NOW + 7200),
        claims(scenario="other"),
        claims(approve=True),
        claims(id="fedcba9876543210"),
    ],
    ids=["uses", "role", "labels", "expires", "scenario", "approve", "id"],
)
def test_claims_changed_after_signing_are_refused(widened: EnrollmentClaims) -> None:
    token = EnrollmentToken.issue(MASTER, claims())
    with pytest.raises(ProtocolError) as caught:
        verify_claims(widened, token.signature, MASTER.public, NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_token_signed_by_another_key_or_expired_is_refused() -> None:
    forged = EnrollmentToken(claims(), OTHER.sign(claims().signing_payload()), b"x" * 32)
    with pytest.raises(ProtocolError) as caught:
        verify_claims(forged.claims, forged.signature, MASTER.public, NOW)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    other_master = EnrollmentToken.issue(OTHER, claims(master_key=OTHER.public))
    with pytest.raises(ProtocolError):
        verify_claims(other_master.claims, other_master.signature, MASTER.public, NOW)
    token = EnrollmentToken.issue(MASTER, claims())
    with pytest.raises(ProtocolError) as caught:
        verify_claims(token.claims, token.signature, MASTER.public, NOW + 3600)
    assert caught.value.code is ErrorCode.EXPIRED
    with pytest.raises(ProtocolError):
        EnrollmentToken.issue(MASTER, claims(master_key=OTHER.public))


def test_the_master_recognises_a_registration_made_with_its_token() -> None:
    token = EnrollmentToken.parse(EnrollmentToken.issue(MASTER, claims()).text())
    machine = Identity.generate(os.urandom)
    registration = token.register("web-7", "linux", machine, "ab" * 32)

    Registration.from_wire(registration.to_wire()).verify(MASTER, "shop")
    assert registration.public_key == machine.public.to_text()


def test_a_registration_the_hub_makes_up_or_moves_is_refused() -> None:
    """The hub holds the claims and their signature, never the secret: nothing it changes or makes verifies."""
    token = EnrollmentToken.issue(MASTER, claims())
    genuine = token.register("web-7", "linux", Identity.generate(os.urandom), "ab" * 32)
    hub_key = Identity.generate(os.urandom).public.to_text()
    made_up = [
        replace(genuine, public_key=hub_key),  # its own key in the machine's place
        replace(genuine, name="db"),
        replace(genuine, os="windows"),
        replace(genuine, token="fedcba9876543210"),
        Registration(genuine.token, "web-8", "linux", hub_key, "cd" * 32).proven("shop", os.urandom(32)),
    ]
    for registration in made_up:
        with pytest.raises(ProtocolError) as caught:
            registration.verify(MASTER, "shop")
        assert caught.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ProtocolError):
        genuine.verify(MASTER, "another-scenario")
    with pytest.raises(ProtocolError):
        genuine.verify(OTHER, "shop")  # only the issuing master's key derives the secret


def test_the_secret_is_the_masters_alone_and_one_per_token() -> None:
    assert enrollment_secret(MASTER, "0123456789abcdef") == EnrollmentToken.issue(MASTER, claims()).secret
    assert enrollment_secret(MASTER, "0123456789abcdef") != enrollment_secret(MASTER, "fedcba9876543210")
    assert enrollment_secret(MASTER, "0123456789abcdef") != enrollment_secret(OTHER, "0123456789abcdef")


@pytest.mark.parametrize(
    "text",
    ["", "crc_0123.abc", TOKEN_PREFIX, TOKEN_PREFIX + "!!!", TOKEN_PREFIX + "a" * 9000],
)
def test_text_that_is_not_a_token_is_refused_clearly(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        EnrollmentToken.parse(text)
    assert caught.value.code is ErrorCode.BAD_FIELD and "enrollment token" in caught.value.message


def test_a_truncated_token_is_refused_clearly() -> None:
    text = EnrollmentToken.issue(MASTER, claims()).text()
    with pytest.raises(ProtocolError) as caught:
        EnrollmentToken.parse(text[:-20])
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "short"},
        {**claims().to_wire(), "uses": 0},
        {**claims().to_wire(), "uses": True},
        {**claims().to_wire(), "expires": None},
        {**claims().to_wire(), "labels": {"a": 1}},
        {**claims().to_wire(), "role": ""},
        {**claims().to_wire(), "approve": "no"},
    ],
)
def test_malformed_claims_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as caught:
        EnrollmentClaims.from_wire(raw)
    assert caught.value.code is ErrorCode.BAD_FIELD
