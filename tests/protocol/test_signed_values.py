"""Signed futures and messages: a reader accepts a value only from a writer its own master key vouches for, for the
scenario and key (or topic) it asked about."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest

from protocol import ErrorCode, Identity, OrderState, ProtocolError, SignedResult
from protocol.certificates import MachineCertificate
from protocol.signed_values import SignedValue, ValueKind, WriterKind, untrusted_message, verify_value


def _identity() -> Identity:
    return Identity.generate(secrets.token_bytes)


MASTER, DB = _identity(), _identity()


def _proofs(machine: Identity = DB, name: str = "db", master: Identity = MASTER, scenario: str = "shop",
            rotations: list[Any] | None = None) -> dict[str, Any]:  # fmt: skip
    key = machine.public
    cert = MachineCertificate(scenario, name, key.id, key.to_text(), "linux", "db").endorsed(master)
    return {"certificate": cert.to_wire(), "key_proofs": rotations or []}


def _kv(key: str = "db/ready", value: bytes = b"yes", scenario: str = "shop", writer: Identity = DB,
        writer_id: str = "", kind: WriterKind = WriterKind.MACHINE) -> SignedValue:  # fmt: skip
    return SignedValue(ValueKind.KV, scenario, key, value, writer_id or writer.id, kind, 1000.0,
                       secrets.token_hex(16)).signed(writer)  # fmt: skip


def _message(target: str = "web", topic: str = "deploy", writer: Identity = MASTER) -> SignedValue:
    kind = WriterKind.MASTER if writer is MASTER else WriterKind.MACHINE
    return SignedValue(ValueKind.MESSAGE, "shop", topic, b"v1", writer.id, kind, 1000.0, "m1", target).signed(writer)


def _read_kv(statement: Any, proofs: Any, key: str = "db/ready", scenario: str = "shop") -> bytes:
    return verify_value(statement, proofs, kind=ValueKind.KV, scenario=scenario, name=key,
                        master_key=MASTER.public).value  # fmt: skip


def test_a_machine_value_verifies_through_its_certificate_and_survives_the_wire() -> None:
    statement = _kv()
    wire = statement.to_wire()
    assert SignedValue.from_wire(wire) == statement
    verified = verify_value(wire, _proofs(), kind=ValueKind.KV, scenario="shop", name="db/ready",
                            master_key=MASTER.public)  # fmt: skip
    assert verified.value == b"yes" and verified.writer_name == "db"


def test_a_master_value_verifies_by_the_master_key_alone() -> None:
    statement = _kv("config/port", b"8080", writer=MASTER, kind=WriterKind.MASTER)
    assert _read_kv(statement.to_wire(), None, "config/port") == b"8080"
    other = _identity()
    foreign = _kv("config/port", writer=other, kind=WriterKind.MASTER)
    with pytest.raises(ProtocolError, match="another master"):
        _read_kv(foreign.to_wire(), None, "config/port")


def test_no_statement_or_a_malformed_one_is_refused() -> None:
    with pytest.raises(ProtocolError, match="no writer's signature"):
        _read_kv(None, _proofs())
    for raw in ({}, [], {**_kv().to_wire(), "written_at": "x"}, {**_kv().to_wire(), "kind": "other"}):
        with pytest.raises(ProtocolError):
            _read_kv(raw, _proofs())


@pytest.mark.parametrize(
    "field, value", [("value", b"no"), ("name", "db/other"), ("written_at", 2.0), ("write_id", "x"), ("target", "x")]
)
def test_a_changed_field_breaks_the_signature(field: str, value: object) -> None:
    tampered = {**_kv().to_wire(), field: value}
    asked = tampered["name"]
    with pytest.raises(ProtocolError):
        _read_kv(tampered, _proofs(), key=str(asked))


def test_a_value_signed_for_another_key_or_scenario_is_refused() -> None:
    with pytest.raises(ProtocolError, match="signed for 'db/ip'"):
        _read_kv(_kv("db/ip").to_wire(), _proofs())
    with pytest.raises(ProtocolError, match="scenario 'prod'"):
        _read_kv(_kv(scenario="prod").to_wire(), _proofs(scenario="prod"))


def test_a_message_is_not_a_kv_value() -> None:
    message = SignedValue(ValueKind.MESSAGE, "shop", "db/ready", b"yes", DB.id, WriterKind.MACHINE, 1.0, "m").signed(DB)
    with pytest.raises(ProtocolError, match="msg value, not a kv one"):
        _read_kv(message.to_wire(), _proofs())
    as_kv = SignedValue.from_wire({**message.to_wire(), "kind": "kv"})
    assert as_kv.signing_payload() != message.signing_payload()  # domain-separated: one never verifies as the other


def test_a_machine_may_only_sign_keys_under_its_certified_name() -> None:
    with pytest.raises(ProtocolError, match="machine 'web' may not write 'db/ready'"):
        _read_kv(_kv().to_wire(), _proofs(name="web"))


def test_a_certificate_of_another_master_another_machine_or_none_is_refused() -> None:
    with pytest.raises(ProtocolError, match="no certificate"):
        _read_kv(_kv().to_wire(), None)
    with pytest.raises(ProtocolError, match="not certified by this master"):
        _read_kv(_kv().to_wire(), _proofs(master=_identity()))
    with pytest.raises(ProtocolError, match="another machine's"):
        _read_kv(_kv().to_wire(), _proofs(machine=_identity()))
    forger = _identity()
    with pytest.raises(ProtocolError, match="not its writer's"):  # the hub's own key, under db's id and certificate
        _read_kv(_kv(writer=forger, writer_id=DB.id).to_wire(), _proofs())


def test_a_rotated_key_is_trusted_only_through_the_chain() -> None:
    new = _identity()
    rotation = SignedResult("o1", "shop", DB.id, OrderState.SUCCEEDED, 0, 1.0, 2.0,
                            extra={"public_key": new.public.to_text()}).signed(DB).to_wire()  # fmt: skip
    after = _kv(writer=new, writer_id=DB.id)
    assert _read_kv(after.to_wire(), _proofs(rotations=[rotation])) == b"yes"
    with pytest.raises(ProtocolError, match="not its writer's"):
        _read_kv(after.to_wire(), _proofs())
    self_made = SignedResult("o1", "shop", DB.id, OrderState.SUCCEEDED, 0, 1.0, 2.0,
                             extra={"public_key": new.public.to_text()}).signed(new).to_wire()  # fmt: skip
    with pytest.raises(ProtocolError, match="not its writer's"):
        _read_kv(after.to_wire(), _proofs(rotations=[self_made]))


@pytest.mark.parametrize(
    "target, reader, accepted",
    [("web", "web", True), ("db", "web", False), ("db,web", "web", True), ("all", "web", True),
     ("web-*", "web-1", True), ("db-*", "web-1", False), ("role:db", "web", True), ("label:x=y", "web", True)],
)  # fmt: skip
def test_a_message_must_name_its_reader_where_the_reader_can_tell(target: str, reader: str, accepted: bool) -> None:
    def read() -> bytes:
        return verify_value(_message(target).to_wire(), None, kind=ValueKind.MESSAGE, scenario="shop", name="",
                            master_key=MASTER.public, reader_name=reader).value  # fmt: skip

    if accepted:
        assert read() == b"v1"
    else:
        with pytest.raises(ProtocolError, match=re.escape(f"sent to '{target}'")):
            read()


def test_a_message_of_another_topic_is_refused_when_a_topic_was_asked() -> None:
    with pytest.raises(ProtocolError, match="signed for 'deploy'"):
        verify_value(_message().to_wire(), None, kind=ValueKind.MESSAGE, scenario="shop", name="config",
                     master_key=MASTER.public)  # fmt: skip


def test_the_refusal_is_one_clear_line() -> None:
    error = ProtocolError(ErrorCode.BAD_SIGNATURE, "it was signed for 'db/ip'")
    line = untrusted_message("db/ready", error)
    assert "\n" not in line and line.startswith("the hub's value for db/ready is not signed by a machine")
