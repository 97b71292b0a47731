"""Scenario messages: a master or a machine sends a named message to one machine, a role, or the whole scenario
(any target, ``protocol.targeting``); each receiving machine gets its messages in order, and one that was
offline finds them in its mailbox when it returns (``crc-daemon recv``). The daemon keeps its read position.

A message is its sender's signed statement (``protocol.signed_values``), stored packed as the mailbox entry's data
and handed to the receiver with the sender's certificate, which the receiving daemon checks against its master.
"""

from __future__ import annotations

import time

from protocol import Envelope, ErrorCode, Role
from protocol.envelope import pack
from protocol.events import MessageSent
from protocol.messages import MsgRecv, MsgSend, Response
from protocol.signed_values import ValueKind
from protocol.targeting import UnknownMachine, select
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import requester_scenario
from server.features.kv import MAX_VALUE, MAX_WAIT, accepted_statement, signed_answer
from server.store import MessageRecord

handlers = HandlerTable()


TOPIC_MAX = 128


@handlers.on(MsgSend, roles=(Role.MASTER, Role.DAEMON))
async def msg_send(hub: Hub, conn: Connection, env: Envelope, body: MsgSend) -> None:
    if not body.topic or len(body.topic) > TOPIC_MAX or not body.topic.isprintable():
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a topic is 1-{TOPIC_MAX} printable characters")
    if len(body.data) > MAX_VALUE:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a message carries at most {MAX_VALUE // 1024} KiB")
    scenario = await requester_scenario(hub, conn, body.scenario)
    statement = accepted_statement(
        conn, body.statement, ValueKind.MESSAGE, scenario.name, body.topic, body.data, body.target
    )
    machines = await stores.machines(hub).machines(scenario.id)
    try:
        targets = select(machines, body.target)
    except UnknownMachine as exc:
        raise RequestError(ErrorCode.NOT_FOUND, str(exc.args[0])) from None
    if not targets:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"target {body.target!r} matches no machine")
    sender = conn.machine_name if conn.role is Role.DAEMON else ""
    signed = pack(statement.to_wire())
    await stores.messages(hub).post_message(
        scenario.id, [m.id for m in targets], body.topic, sender, signed, time.time()
    )
    hub.notify_mail(scenario.id, [m.id for m in targets])
    names = [m.name for m in targets]
    await hub.emit(scenario.id, MessageSent(topic=body.topic, to=names, size=len(body.data)), sender)
    conn.send(Response({"to": names}), reply_to=env.id)


@handlers.on(MsgRecv, roles=(Role.DAEMON,))
async def msg_recv(hub: Hub, conn: Connection, env: Envelope, body: MsgRecv) -> None:
    """A machine's next message (answered later, from a task: the session goes on meanwhile)."""
    if conn.role is not Role.DAEMON:
        raise RequestError(ErrorCode.INVALID_REQUEST, "only machines have mailboxes")
    if not 0 <= body.timeout <= MAX_WAIT:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"timeout is 0 to {MAX_WAIT:.0f} seconds")

    async def check() -> MessageRecord | None:
        found = await stores.messages(hub).messages_after(conn.id, body.after, body.topic, 1)
        return found[0] if found else None

    async def answer() -> None:
        message = await hub.wait_until(conn.scenario_id, check, body.timeout, mailbox=conn.id)
        if message is None:
            conn.reply_error(env, ErrorCode.TIMEOUT, f"no message{' on ' + body.topic if body.topic else ''} in time")
        else:
            signed = await signed_answer(hub, conn.scenario_id, message.data)
            signed["data"] = signed.pop("value")
            conn.send(Response({**message.to_wire(), **signed}), reply_to=env.id)

    hub.spawn(answer(), name=f"msg-recv-{conn.id}")


FEATURE = Feature("messaging", handlers)
