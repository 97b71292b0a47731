"""Sealing (protocol/sealing.py) and what carries sealing keys: a value sealed to one machine for one order and
name opens only there; certificates, registrations and rotation results bind the sealing key so a hub cannot
swap in one of its own; an ExecBody's secrets are checked like every other field."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from protocol import Identity, OrderState, ProtocolError, SignedResult
from protocol.certificates import MachineCertificate, key_chain, trusted_keys
from protocol.enrollment import EnrollmentClaims, EnrollmentToken, Registration
from protocol.errors import ErrorCode
from protocol.order_bodies import MAX_SECRETS, ExecBody, parse_body, secret_context
from protocol.orders import OrderKind
from protocol.sealing import OVERHEAD, SealContext, SealingKey, SealingPrivateKey, seal, sealing_key, unseal

MACHINE, OTHER, MASTER = (Identity.generate(secrets.token_bytes) for _ in range(3))
CONTEXT = secret_context("shop", MACHINE.id, "order-1", "DB_PASSWORD")


def test_a_sealed_value_opens_with_its_machines_identity_for_its_context() -> None:
    sealed = seal(sealing_key(MACHINE), b"correct horse", CONTEXT)
    assert len(sealed) == len(b"correct horse") + OVERHEAD and b"correct horse" not in sealed
    assert unseal(MACHINE, sealed, CONTEXT) == b"correct horse"
    # The sealing key is derived from the identity: the same seed gives the same key, nothing else to keep.
    assert sealing_key(Identity.from_private_text(MACHINE.private_text())) == sealing_key(MACHINE)
    assert sealing_key(MACHINE) != sealing_key(OTHER)
    assert SealingKey.from_text(sealing_key(MACHINE).to_text()) == sealing_key(MACHINE)


@pytest.mark.parametrize(
    "moved",
    [
        replace(CONTEXT, machine=OTHER.id),
        replace(CONTEXT, order="order-2"),
        replace(CONTEXT, name="API_TOKEN"),
        replace(CONTEXT, scenario="prod"),
        replace(CONTEXT, purpose="file"),
    ],
    ids=["machine", "order", "name", "scenario", "purpose"],
)
def test_a_value_moved_to_another_context_does_not_open(moved: SealContext) -> None:
    sealed = seal(sealing_key(MACHINE), b"correct horse", CONTEXT)
    with pytest.raises(ProtocolError) as caught:
        unseal(MACHINE, sealed, moved)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    assert "does not open on this machine" in caught.value.message and moved.name in caught.value.message


def test_a_value_sealed_to_another_machine_or_altered_does_not_open() -> None:
    sealed = seal(sealing_key(OTHER), b"correct horse", CONTEXT)
    with pytest.raises(ProtocolError, match="sealed for another machine"):
        unseal(MACHINE, sealed, CONTEXT)
    mine = seal(sealing_key(MACHINE), b"correct horse", CONTEXT)
    for index in (0, 31, 32, len(mine) - 1):  # the encapsulated key, the ciphertext, the tag
        altered = bytearray(mine)
        altered[index] ^= 1
        with pytest.raises(ProtocolError, match="altered"):
            unseal(MACHINE, bytes(altered), CONTEXT)
    for short in (b"", mine[: OVERHEAD - 1]):
        with pytest.raises(ProtocolError):
            unseal(MACHINE, short, CONTEXT)


@pytest.mark.parametrize("text", ["", "ed25519:AAAA", "x25519:not base64!", "x25519:AAAA"])
def test_a_malformed_sealing_key_is_a_bad_field(text: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        SealingKey.from_text(text)
    assert caught.value.code is ErrorCode.BAD_FIELD


def _certificate(sealing: str = "") -> MachineCertificate:
    key = MACHINE.public
    return MachineCertificate("shop", "web", key.id, key.to_text(), "linux", "web", {"tier": "a"},
                              sealing_key=sealing).endorsed(MASTER)  # fmt: skip


def test_a_certificate_without_a_sealing_key_keeps_the_v1_form_every_older_certificate_has() -> None:
    v1 = _certificate()
    assert v1.signing_payload()[:40].find(b"crc-machine-cert-v1") >= 0
    wire = v1.to_wire()
    assert "sealing_key" not in wire
    MachineCertificate.from_wire(wire).verify(MASTER.public, "shop")


def test_a_v2_certificate_binds_the_sealing_key() -> None:
    mine, theirs = sealing_key(MACHINE).to_text(), sealing_key(OTHER).to_text()
    wire = _certificate(mine).to_wire()
    certificate = MachineCertificate.from_wire(wire)
    certificate.verify(MASTER.public, "shop")
    assert certificate.sealing_key == mine
    for tampered in ({**wire, "sealing_key": theirs}, {k: v for k, v in wire.items() if k != "sealing_key"}):
        with pytest.raises(ProtocolError) as caught:
            MachineCertificate.from_wire(tampered).verify(MASTER.public, "shop")
        assert caught.value.code is ErrorCode.BAD_SIGNATURE
    with pytest.raises(ProtocolError):
        MachineCertificate.from_wire({**wire, "sealing_key": "x25519:junk"})


def _rotation(old: Identity, new: Identity, sealing: str | None) -> dict[str, object]:
    extra = {"public_key": new.public.to_text(), **({} if sealing is None else {"sealing_key": sealing})}
    return SignedResult("o1", "shop", MACHINE.id, OrderState.SUCCEEDED, 0, 1.0, 2.0, extra=extra).signed(old).to_wire()


def test_the_sealing_key_is_the_one_the_end_of_the_verified_key_chain_names() -> None:
    second, third, stranger = (Identity.generate(secrets.token_bytes) for _ in range(3))
    certificate = _certificate(sealing_key(MACHINE).to_text())
    assert key_chain(certificate, []).sealing_key == sealing_key(MACHINE).to_text()
    rotations = [_rotation(MACHINE, second, sealing_key(second).to_text()),
                 _rotation(second, third, sealing_key(third).to_text())]  # fmt: skip
    chain = key_chain(certificate, rotations)
    assert chain.keys == trusted_keys(certificate, rotations) == [MACHINE.public, second.public, third.public]
    assert chain.sealing_key == sealing_key(third).to_text()
    # A rotation the hub signed with a key of its own, naming its own sealing key, is not followed.
    forged = _rotation(stranger, third, sealing_key(stranger).to_text())
    assert key_chain(certificate, [forged]).sealing_key == sealing_key(MACHINE).to_text()
    # A rotation by a daemon from before sealing keys leaves the machine with none (the old one went with the
    # old identity): secrets are refused until it rotates again.
    assert key_chain(certificate, [_rotation(MACHINE, second, None)]).sealing_key == ""
    assert key_chain(certificate, [_rotation(MACHINE, second, "x25519:junk")]).keys[-1] == second.public


def _token() -> EnrollmentToken:
    claims = EnrollmentClaims("0123456789abcdef", "shop", MASTER.public, "web", {}, 3, 1e12)
    return EnrollmentToken.issue(MASTER, claims)


def test_a_registration_carries_the_joiners_sealing_key_under_its_mac() -> None:
    registration = _token().register("web-1", "linux", MACHINE, "ab" * 32)
    assert registration.sealing_key == sealing_key(MACHINE).to_text()
    wire = registration.to_wire()
    Registration.from_wire(wire).verify(MASTER, "shop")
    for tampered in ({**wire, "sealing_key": sealing_key(OTHER).to_text()},
                     {k: v for k, v in wire.items() if k != "sealing_key"}):  # fmt: skip
        with pytest.raises(ProtocolError) as caught:
            Registration.from_wire(tampered).verify(MASTER, "shop")
        assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_registration_from_a_daemon_before_sealing_keys_still_verifies() -> None:
    token = _token()
    older = Registration(token.claims.id, "web-1", "linux", MACHINE.public.to_text(), "ab" * 32)
    wire = older.proven("shop", token.secret).to_wire()
    assert "sealing_key" not in wire
    Registration.from_wire(wire).verify(MASTER, "shop")


def test_an_exec_body_carries_secrets_only_when_it_has_some_and_checks_them() -> None:
    plain = ExecBody("echo hi")
    assert "secrets" not in plain.to_wire()  # so a daemon from before secrets still runs every other command
    sealed = seal(sealing_key(MACHINE), b"correct horse", CONTEXT)
    body = ExecBody("echo hi", secrets={"DB_PASSWORD": sealed})
    assert parse_body(OrderKind.EXEC, body.to_wire()) == body
    bad: list[object] = [
        {"1BAD": sealed}, {"BAD-NAME": sealed}, {"A" * 65: sealed}, {"DB": "not bytes"}, {"DB": b"short"},
        {"DB": b"x" * 9000}, {f"S{i}": sealed for i in range(MAX_SECRETS + 1)}, ["DB"],
    ]  # fmt: skip
    for secrets_ in bad:
        with pytest.raises(ProtocolError) as caught:
            parse_body(OrderKind.EXEC, {**plain.to_wire(), "secrets": secrets_})
        assert caught.value.details.get("field") == "secrets"
    with pytest.raises(ProtocolError, match="both a plain and a secret variable"):
        parse_body(OrderKind.EXEC, {**body.to_wire(), "env": {"DB_PASSWORD": "x"}})


def test_a_sealing_private_key_kept_as_text_opens_what_was_sealed_to_it_and_never_prints() -> None:
    private = SealingPrivateKey.of(MACHINE)
    kept = SealingPrivateKey.from_private_text(private.private_text())
    assert kept.public == sealing_key(MACHINE)
    assert unseal(kept, seal(sealing_key(MACHINE), b"correct horse", CONTEXT), CONTEXT) == b"correct horse"
    assert private.private_text() not in repr(private) and MACHINE.private_text() not in private.private_text()
    for text in ("", "x25519-private:AAAA", "ed25519-private:" + "A" * 44):
        with pytest.raises(ProtocolError):
            SealingPrivateKey.from_private_text(text)
