"""The typed body of each order kind (protocol/order_bodies.py): what a master builds survives the wire as it was
signed, and a daemon refuses every body it does not fully understand with BAD_FIELD naming the field."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from protocol.envelope import pack, unpack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity
from protocol.order_bodies import (
    PARSERS,
    EmptyBody,
    ExecBody,
    HostsBody,
    OrderBody,
    PutFileBody,
    TrustMasterBody,
    UpdateBody,
    parse_body,
)
from protocol.orders import OrderKind, file_chunks

KEY = Identity.generate(lambda n: b"\x07" * n).public
LOCK = "crc-runtime-0123456789abcdef.lock"

EXAMPLES: dict[OrderKind, OrderBody] = {
    OrderKind.EXEC: ExecBody(
        "make", shell="sh", cwd="/srv", env={"A": "1"}, timeout=30.0, job="build", job_version=3, plan_step="s1"
    ),
    OrderKind.PUT_FILE: PutFileBody.for_content("/etc/motd", b"hello", 0o600),
    OrderKind.HOSTS: HostsBody(({"ip": "10.0.0.1", "names": ["db"]},)),
    OrderKind.UPDATE: UpdateBody("cloudremotecontrol-1.2.0-py3-none-any.whl", "ab" * 32, LOCK, "cd" * 32),
    OrderKind.TRUST_MASTER: TrustMasterBody(KEY, 100),
    OrderKind.ROTATE_KEY: EmptyBody(),
    OrderKind.PING: EmptyBody(),
}


def through_the_wire(wire: dict[str, Any]) -> Any:
    return unpack(pack(wire))


def test_every_order_kind_has_a_body_parser() -> None:
    assert set(PARSERS) == set(OrderKind) == set(EXAMPLES)


@pytest.mark.parametrize("kind", list(OrderKind), ids=lambda kind: kind.value)
def test_a_body_survives_the_wire(kind: OrderKind) -> None:
    body = EXAMPLES[kind]
    assert parse_body(kind, through_the_wire(body.to_wire())) == body


def test_a_plain_command_is_sent_without_the_fields_it_leaves_unset() -> None:
    assert ExecBody("true").to_wire() == {"command": "true", "env": {}}
    assert parse_body(OrderKind.EXEC, {"command": "true"}) == ExecBody("true")


def test_what_earlier_masters_signed_still_parses() -> None:
    """The bodies the SDK, REST and plans built before the types: explicit nulls, empty strings, no timeout."""
    old = {"command": "uptime", "cwd": None, "env": {"N": 5}, "timeout": 0, "shell": None}
    assert parse_body(OrderKind.EXEC, old) == ExecBody("uptime", env={"N": "5"})
    assert parse_body(OrderKind.EXEC, {"command": "x", "shell": "", "cwd": "", "job": ""}) == ExecBody("x")


@pytest.mark.parametrize(("size", "chunks"), [(0, 1), (10, 1), (30, 3), (31, 4)])
def test_a_file_body_binds_the_content_and_counts_its_chunks(size: int, chunks: int) -> None:
    data = b"x" * size
    body = PutFileBody.for_content("/etc/motd", data, 0o644, chunk_size=10)
    assert body.to_wire() == {
        "path": "/etc/motd", "mode": 0o644, "size": size, "sha256": hashlib.sha256(data).hexdigest(), "chunks": chunks,
    }  # fmt: skip
    assert body.chunks == len(file_chunks(data, 10))


@pytest.mark.parametrize(
    ("kind", "raw", "field"),
    [
        (OrderKind.EXEC, {}, "command"),
        (OrderKind.EXEC, {"command": 5}, "command"),
        (OrderKind.EXEC, {"command": "x", "shell": "bash"}, "shell"),
        (OrderKind.EXEC, {"command": "x", "env": ["A=1"]}, "env"),
        (OrderKind.EXEC, {"command": "x", "env": {"A": ["1"]}}, "env"),
        (OrderKind.EXEC, {"command": "x", "timeout": "5"}, "timeout"),
        (OrderKind.EXEC, {"command": "x", "timeout": True}, "timeout"),
        (OrderKind.EXEC, {"command": "x", "job_version": "3"}, "job_version"),
        (OrderKind.EXEC, {"command": "x", "run_as": "root"}, "run_as"),  # a field this version does not know
        (OrderKind.PUT_FILE, {"path": "/x", "sha256": "ab" * 32, "size": 1}, "chunks"),
        (OrderKind.PUT_FILE, {"path": "/x", "sha256": "AB" * 32, "size": 1, "chunks": 1}, "sha256"),
        (OrderKind.PUT_FILE, {"path": "/x", "sha256": "ab" * 32, "size": -1, "chunks": 1}, "size"),
        (OrderKind.PUT_FILE, {"path": "/x", "sha256": "ab" * 32, "size": 1, "chunks": 0}, "chunks"),
        (OrderKind.PUT_FILE, {"path": "/x", "sha256": "ab" * 32, "size": 1, "chunks": 1, "mode": 0o10000}, "mode"),
        (OrderKind.PUT_FILE, {"path": "", "sha256": "ab" * 32, "size": 1, "chunks": 1}, "path"),
        (OrderKind.HOSTS, {"entries": "10.0.0.1 db"}, "entries"),
        (OrderKind.HOSTS, {"entries": ["10.0.0.1 db"]}, "entries"),
        (OrderKind.UPDATE, {"wheel": "../x.whl", "sha256": "ab" * 32, "lock": LOCK, "lock_sha256": "cd" * 32}, "wheel"),
        (
            OrderKind.UPDATE,
            {"wheel": "x.whl", "sha256": "ab" * 32, "lock": "../r.txt", "lock_sha256": "cd" * 32},
            "lock",
        ),
        (OrderKind.UPDATE, {"wheel": "x.whl", "sha256": "ab" * 32, "lock": LOCK, "lock_sha256": "no"}, "lock_sha256"),
        (OrderKind.UPDATE, {"wheel": "x.whl", "sha256": "ab" * 32, "lock": LOCK}, "lock_sha256"),
        (OrderKind.TRUST_MASTER, {"master_public_key": KEY.to_text()}, "epoch"),  # a master from before epochs
        (OrderKind.TRUST_MASTER, {"master_public_key": KEY.to_text(), "epoch": 0}, "epoch"),
        (OrderKind.TRUST_MASTER, {"master_public_key": KEY.to_text(), "epoch": True}, "epoch"),
        (OrderKind.PING, {"command": "rm -rf /"}, "command"),
        (OrderKind.ROTATE_KEY, {"key": "mine"}, "key"),
    ],
)
def test_a_body_it_does_not_fully_understand_is_refused_naming_the_field(
    kind: OrderKind, raw: dict[str, Any], field: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_body(kind, raw)
    assert caught.value.code is ErrorCode.BAD_FIELD
    assert caught.value.details.get("field") == field and field in caught.value.message


def test_a_body_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_body(OrderKind.EXEC, ["command", "true"])  # type: ignore[arg-type]
    assert caught.value.code is ErrorCode.BAD_FIELD


def test_a_master_cannot_build_a_body_a_daemon_would_refuse() -> None:
    with pytest.raises(ProtocolError):
        TrustMasterBody(KEY, 0)
    with pytest.raises(ProtocolError):
        UpdateBody("x.tar.gz", "ab" * 32, LOCK, "cd" * 32)
