"""Sealed orders, results and output: each opens only for its machine (or master), order, kind and stream; the
certificate and the enrollment token say a scenario is sealed under the master's signature."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import ErrorCode, Identity, OrderKind, ProtocolError
from protocol.certificates import MachineCertificate
from protocol.enrollment import EnrollmentClaims
from protocol.sealed_orders import (
    is_sealed_body,
    open_body,
    open_output,
    open_result,
    reply_key_of,
    seal_body,
    seal_output,
    seal_result,
)
from protocol.sealing import SealingPrivateKey, sealing_key

MASTER = Identity.from_seed(b"\x01" * 32)
WEB = Identity.from_seed(b"\x02" * 32)
DB = Identity.from_seed(b"\x03" * 32)
BODY = {"command": "echo hidden", "env": {"A": "1"}}


def sealed(**changes: object) -> dict[str, object]:
    where: dict[str, object] = {"kind": OrderKind.EXEC, "scenario": "vault", "machine": WEB.id, "order_id": "o1"}
    where.update(changes)
    return seal_body(BODY, to=sealing_key(WEB), reply_key=sealing_key(MASTER), **where)  # type: ignore[arg-type]


def test_a_sealed_body_opens_for_its_machine_order_and_kind_only() -> None:
    body = sealed()
    assert is_sealed_body(body) and b"hidden" not in repr(body).encode()
    assert reply_key_of(body) == sealing_key(MASTER)
    opened = open_body(body, [WEB], kind=OrderKind.EXEC, scenario="vault", machine=WEB.id, order_id="o1")
    assert opened.body == BODY
    for keys, where in (
        ([DB], {}),
        ([WEB], {"order_id": "o2"}),
        ([WEB], {"machine": DB.id}),
        ([WEB], {"scenario": "other"}),
        ([WEB], {"kind": OrderKind.HOSTS}),
    ):
        place = {"kind": OrderKind.EXEC, "scenario": "vault", "machine": WEB.id, "order_id": "o1", **where}
        with pytest.raises(ProtocolError) as caught:
            open_body(body, keys, **place)  # type: ignore[arg-type]
        assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_the_first_key_that_opens_is_used_and_malformed_bodies_are_refused() -> None:
    old = SealingPrivateKey.of(Identity.from_seed(b"\x09" * 32))
    assert open_body(sealed(), [old, WEB], kind=OrderKind.EXEC, scenario="vault", machine=WEB.id,
                     order_id="o1").body == BODY  # fmt: skip
    for broken in ({"sealed": b"x"}, {**sealed(), "command": "extra"}, {"sealed": "text", "reply_key": "x"}):
        with pytest.raises(ProtocolError) as caught:
            open_body(broken, [WEB], kind=OrderKind.EXEC, scenario="vault", machine=WEB.id, order_id="o1")
        assert caught.value.code is ErrorCode.BAD_FIELD
    with pytest.raises(ProtocolError, match="never sealed"):
        open_body(sealed(), [WEB], kind=OrderKind.PING, scenario="vault", machine=WEB.id, order_id="o1")


def test_a_sealed_result_and_output_open_for_the_master_and_that_order_only() -> None:
    master = SealingPrivateKey.of(MASTER)
    fields = {"stdout": b"out", "stderr": b"err", "error": "why", "stdout_truncated": False, "exit_code": 3}
    result = seal_result(fields, to=master.public, scenario="vault", machine=WEB.id, order_id="o1")
    assert open_result(result, [master], scenario="vault", machine=WEB.id, order_id="o1") == {
        "stdout": b"out", "stderr": b"err", "error": "why", "stdout_truncated": False,
    }  # fmt: skip
    with pytest.raises(ProtocolError):
        open_result(result, [master], scenario="vault", machine=DB.id, order_id="o1")
    chunk = seal_output(b"live", to=master.public, scenario="vault", order_id="o1", stream="stdout")
    assert open_output(chunk, [master], scenario="vault", order_id="o1", stream="stdout") == b"live"
    assert open_output(chunk, [SealingPrivateKey.of(WEB), master], scenario="vault", order_id="o1",
                       stream="stdout") == b"live"  # fmt: skip
    with pytest.raises(ProtocolError):
        open_output(chunk, [master], scenario="vault", order_id="o1", stream="stderr")
    with pytest.raises(ProtocolError):
        open_output(chunk, [SealingPrivateKey.of(WEB)], scenario="vault", order_id="o1", stream="stdout")


def test_sealed_is_bound_by_the_certificate_and_token_signatures() -> None:
    key = WEB.public
    cert = MachineCertificate("vault", "web", key.id, key.to_text(), "linux", "web", {},
                              sealing_key=sealing_key(WEB).to_text(), sealed=True).endorsed(MASTER)  # fmt: skip
    cert.verify(MASTER.public, "vault")
    assert MachineCertificate.from_wire(cert.to_wire()) == cert
    with pytest.raises(ProtocolError):
        replace(cert, sealed=False).verify(MASTER.public, "vault")
    with pytest.raises(ProtocolError, match="names its sealing key"):
        MachineCertificate.from_wire({**cert.to_wire(), "sealing_key": ""})
    claims = EnrollmentClaims("0123456789abcdef", "vault", MASTER.public, "workers", {}, 3, 2e9, sealed=True)
    assert claims.signing_payload() != replace(claims, sealed=False).signing_payload()
    assert EnrollmentClaims.from_wire(claims.to_wire()) == claims
    unsealed = replace(claims, sealed=False)
    assert b"crc-enroll-claims-v1" in unsealed.signing_payload()  # tokens issued before keep verifying
