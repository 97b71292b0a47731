"""Machine certificates, key chains and signed facts: what a reader accepts without believing the hub."""

from __future__ import annotations

import secrets

import pytest

from protocol import Identity, OrderState, ProtocolError, SignedResult
from protocol.certificates import MachineCertificate, ReadyStatement, addresses_from_facts, trusted_keys


def _identity() -> Identity:
    return Identity.generate(secrets.token_bytes)


def _certificate(master: Identity, machine: Identity, scenario: str = "shop") -> MachineCertificate:
    key = machine.public
    return MachineCertificate(scenario, "web", key.id, key.to_text(), "linux", "web", {"tier": "a"}).endorsed(master)


def _rotation(old: Identity, new: Identity, machine_id: str, scenario: str = "shop") -> dict[str, object]:
    return SignedResult("o1", scenario, machine_id, OrderState.SUCCEEDED, 0, 1.0, 2.0,
                        extra={"public_key": new.public.to_text()}).signed(old).to_wire()  # fmt: skip


def test_a_certificate_verifies_for_its_master_and_scenario_and_survives_the_wire() -> None:
    master, machine = _identity(), _identity()
    cert = MachineCertificate.from_wire(_certificate(master, machine).to_wire())
    cert.verify(master.public, "shop")
    with pytest.raises(ProtocolError, match="not certified by this master"):
        cert.verify(_identity().public, "shop")
    with pytest.raises(ProtocolError, match="certified for scenario 'shop', not 'prod'"):
        cert.verify(master.public, "prod")


def test_a_changed_field_or_a_foreign_id_breaks_the_certificate() -> None:
    master, machine = _identity(), _identity()
    wire = _certificate(master, machine).to_wire()
    for field, value in (("name", "db"), ("role", "db"), ("os", "windows"), ("labels", {"tier": "b"})):
        with pytest.raises(ProtocolError):
            MachineCertificate.from_wire({**wire, field: value}).verify(master.public, "shop")
    other = _identity().public
    forged = MachineCertificate("shop", "web", other.id, machine.public.to_text(), "linux", "web").endorsed(master)
    with pytest.raises(ProtocolError, match="fingerprint"):
        forged.verify(master.public, "shop")


def test_a_second_master_key_endorses_without_dropping_the_first() -> None:
    old, new, machine = _identity(), _identity(), _identity()
    cert = _certificate(old, machine).endorsed(new)
    cert.verify(old.public, "shop")
    cert.verify(new.public, "shop")


@pytest.mark.parametrize("raw", [None, [], {"name": "web"}, {"scenario": 1}])
def test_a_malformed_certificate_is_a_bad_field(raw: object) -> None:
    with pytest.raises(ProtocolError):
        MachineCertificate.from_wire(raw)


def test_the_key_chain_follows_only_rotations_signed_by_the_key_before() -> None:
    master, first, second, third, stranger = (_identity() for _ in range(5))
    cert = _certificate(master, first)
    chain = [_rotation(first, second, first.id), _rotation(second, third, first.id)]
    assert trusted_keys(cert, chain) == [first.public, second.public, third.public]
    # a "rotation" the hub signed with a key of its own ends the chain there
    assert trusted_keys(cert, [_rotation(stranger, third, first.id)]) == [first.public]
    assert trusted_keys(cert, [chain[0], _rotation(stranger, third, first.id), chain[1]]) == [
        first.public,
        second.public,
    ]
    # another machine's or another scenario's rotation does not count
    assert trusted_keys(cert, [_rotation(first, second, stranger.id)]) == [first.public]
    assert trusted_keys(cert, [_rotation(first, second, first.id, "prod")]) == [first.public]
    assert trusted_keys(cert, [{"junk": True}]) == [first.public]


def test_signed_facts_verify_only_unchanged_and_for_their_machine() -> None:
    machine = _identity()
    facts = {"ips": ["10.0.0.5", "127.0.0.1"], "hostname": "web"}
    statement = ReadyStatement("shop", machine.id, facts, 100.0).signed(machine)
    statement.verify(machine.public, "shop", machine.id)
    changed = ReadyStatement("shop", machine.id, {**facts, "ips": ["203.0.113.9"]}, 100.0, statement.signature)
    with pytest.raises(ProtocolError):
        changed.verify(machine.public, "shop", machine.id)
    with pytest.raises(ProtocolError):
        statement.verify(machine.public, "shop", _identity().id)
    assert addresses_from_facts(facts) == ["10.0.0.5"]
