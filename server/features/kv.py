"""Futures: per-scenario keys that masters and machines set, read, and wait on (``KvSet``, ``KvGet``, ``KvWait``).

A wait is answered the moment the key is set, on whichever replica: setting a key appends a ``kv_set`` event,
and event notifications (local, or over the backplane's scenario channel, which a replica with waiters listens
to) wake the waiters, who re-read the store. A machine may set only keys under its own name (``web/...``); a
master may set any key of its scenarios. Everyone in the scenario may read and wait.

Values are signed by their writer (``protocol.signed_values``): the store keeps the writer's statement, packed, as
the key's value, and readers get it back with the writer's certificate and key-rotation proofs, so that they can
check it against their own master key instead of believing this hub. The hub checks a statement on the way in
only to turn a client's mistake into a clear error early; readers check it again whatever the hub says.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from protocol import Envelope, ErrorCode, ProtocolError, Role
from protocol.envelope import pack, unpack
from protocol.events import KvSet as KvSetEvent
from protocol.messages import KvGet, KvSet, KvWait, Response
from protocol.plans import key_problem
from protocol.signed_values import SignedValue, ValueKind, WriterKind
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import requester_scenario

handlers = HandlerTable()


T = TypeVar("T")
MAX_VALUE = 64 * 1024
MAX_TTL = 7 * 24 * 3600.0
MAX_WAIT = 3600.0
RECHECK = 5.0  # a waiter re-reads the store this often anyway, in case a wake-up was lost


def _check_key(key: str) -> None:
    problem = key_problem(key)  # the same rule plans' waits_for and sets are checked against
    if problem is not None:
        raise RequestError(ErrorCode.INVALID_REQUEST, problem)


@handlers.on(KvSet, roles=(Role.MASTER, Role.DAEMON))
async def kv_set(hub: Hub, conn: Connection, env: Envelope, body: KvSet) -> None:
    _check_key(body.key)
    if conn.role is Role.DAEMON and not body.key.startswith(conn.machine_name + "/"):
        raise RequestError(
            ErrorCode.FORBIDDEN, f"machine {conn.machine_name!r} may only set keys under {conn.machine_name + '/'!r}"
        )
    if len(body.value) > MAX_VALUE:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a value is at most {MAX_VALUE // 1024} KiB")
    if not 0 <= body.ttl <= MAX_TTL:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"ttl is 0 (none) to {MAX_TTL:.0f} seconds")
    scenario = await requester_scenario(hub, conn, body.scenario)
    statement = accepted_statement(conn, body.statement, ValueKind.KV, scenario.name, body.key, body.value)
    now = time.time()
    expires = now + body.ttl if body.ttl else None
    await stores.keys(hub).kv_set(scenario.id, body.key, pack(statement.to_wire()), body.ttl or None, now)
    who = conn.machine_name if conn.role is Role.DAEMON else ""
    await hub.emit(scenario.id, KvSetEvent(key=body.key, ttl=body.ttl, size=len(body.value)), who)
    conn.send(Response({"key": body.key, "expires": expires}), reply_to=env.id)


@handlers.on(KvGet, roles=(Role.MASTER, Role.DAEMON))
async def kv_get(hub: Hub, conn: Connection, env: Envelope, body: KvGet) -> None:
    _check_key(body.key)
    scenario = await requester_scenario(hub, conn, body.scenario)
    value = await stores.keys(hub).kv_get(scenario.id, body.key, time.time())
    if value is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"key {body.key!r} is not set (or expired)", key=body.key)
    conn.send(Response({"key": body.key, **await signed_answer(hub, scenario.id, value)}), reply_to=env.id)


@handlers.on(KvWait, roles=(Role.MASTER, Role.DAEMON))
async def kv_wait(hub: Hub, conn: Connection, env: Envelope, body: KvWait) -> None:
    """Answered later, from a task of its own: the connection goes on serving meanwhile."""
    _check_key(body.key)
    if not 0 < body.timeout <= MAX_WAIT:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"timeout is 0 to {MAX_WAIT:.0f} seconds")
    scenario = await requester_scenario(hub, conn, body.scenario)

    async def answer() -> None:
        value = await hub.wait_until(
            scenario.id, lambda: stores.keys(hub).kv_get(scenario.id, body.key, time.time()), body.timeout
        )
        if value is None:
            conn.reply_error(env, ErrorCode.TIMEOUT, f"key {body.key!r} was not set within {body.timeout:g} s")
        else:
            conn.send(Response({"key": body.key, **await signed_answer(hub, scenario.id, value)}), reply_to=env.id)

    hub.spawn(answer(), name=f"kv-wait-{body.key}")


# signed values (protocol.signed_values): shared with server.features.messaging
def accepted_statement(
    conn: Connection, raw: dict[str, Any], kind: ValueKind, scenario: str, name: str, value: bytes, target: str = ""
) -> SignedValue:
    """The requester's signed statement of what it writes, once it is found to be exactly that and its own.

    Raises:
        RequestError: INVALID_REQUEST, saying what does not match.
    """
    try:
        statement = SignedValue.from_wire(raw)
        writer_kind = WriterKind.MACHINE if conn.role is Role.DAEMON else WriterKind.MASTER
        written = (statement.kind, statement.scenario, statement.name, statement.value, statement.target)
        writer = (statement.writer, statement.writer_kind)
        if written != (kind, scenario, name, value, target) or writer != (conn.id, writer_kind):
            raise ProtocolError(ErrorCode.BAD_FIELD, "the statement is not of this write, or not the writer's")
        statement.check_signature([conn.peer.public_key])
    except ProtocolError as exc:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"a value must be signed by its writer (protocol.signed_values): {exc.message}"
        ) from None
    return statement


async def signed_answer(hub: Hub, scenario_id: str, stored: bytes) -> dict[str, Any]:
    """``value``, the writer's ``statement`` and, for a machine writer, what vouches for its key (``writer``).

    A stored value that is no statement (written before values were signed) is handed out as it is, with no
    statement: readers refuse it.
    """
    try:
        statement = SignedValue.from_wire(unpack(stored))
    except ProtocolError:
        return {"value": stored, "statement": None, "writer": None}
    proofs = None
    if statement.writer_kind is WriterKind.MACHINE:
        machine = await stores.machines(hub).machine(statement.writer)
        if machine is not None and machine.scenario_id == scenario_id:
            proofs = {"certificate": machine.certificate, "key_proofs": machine.key_proofs}
    return {"value": statement.value, "statement": statement.to_wire(), "writer": proofs}


FEATURE = Feature("kv", handlers)
