"""The typed handler table (server/core/dispatch.py), in process: who may send what, and every failure answered."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest

from protocol import Envelope, ErrorCode
from protocol.messages import JobList, ScenarioList
from protocol.session import Role
from server.core.connection import Connection
from server.core.dispatch import HandlerTable, dispatch
from server.core.hub import Hub
from server.core.metrics import HubMetrics


class Peer:
    """What dispatch uses of a session: its role and its error answers."""

    def __init__(self, role: Role) -> None:
        self.role, self.id = role, "peer"
        self.errors: list[tuple[ErrorCode, str]] = []

    def reply_error(self, request: Envelope, code: ErrorCode, message: str, **details: Any) -> None:
        self.errors.append((code, message))


class FakeHub:
    metrics = HubMetrics()


def request(body: Any) -> Envelope:
    return Envelope("e1", "peer", "hub", "", 0.0, body)


async def run(table: HandlerTable, role: Role, body: Any) -> Peer:
    peer = Peer(role)
    await dispatch(cast(Hub, FakeHub()), table, cast(Connection, peer), request(body))
    return peer


async def test_a_handler_gets_its_typed_body_and_only_from_the_roles_it_names() -> None:
    table, seen = HandlerTable(), []

    @table.on(ScenarioList)
    async def listing(hub: Hub, conn: Connection, env: Envelope, body: ScenarioList) -> None:
        seen.append(body)

    assert (await run(table, Role.MASTER, ScenarioList())).errors == [] and seen == [ScenarioList()]
    [(code, message)] = (await run(table, Role.DAEMON, ScenarioList())).errors
    assert code is ErrorCode.INVALID_REQUEST and "a daemon may not send scenario.list" in message


async def test_a_bug_in_a_handler_is_answered_internal_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    table = HandlerTable()

    @table.on(JobList)
    async def broken(hub: Hub, conn: Connection, env: Envelope, body: JobList) -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR):
        [(code, message)] = (await run(table, Role.MASTER, JobList())).errors
    assert code is ErrorCode.INTERNAL and "job.list" in message and "a bug" not in message
    assert "RuntimeError: a bug" in caplog.text


def test_two_handlers_for_one_message_and_role_are_refused() -> None:
    first, second = HandlerTable(), HandlerTable()

    async def handler(hub: Hub, conn: Connection, env: Envelope, body: JobList) -> None:
        return None

    first.on(JobList)(handler)
    second.on(JobList)(handler)
    with pytest.raises(ValueError, match=r"two handlers for job\.list from a master"):
        first.merged(second)
