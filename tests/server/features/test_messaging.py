"""Scenario messages in process: sent by masters and machines to targets, received in order from mailboxes
(harness.HubContext)."""

from __future__ import annotations

import asyncio

from protocol import ErrorCode
from protocol.events import MessageSent
from protocol.messages import MsgRecv, MsgSend, Response
from protocol.signed_values import SignedValue, ValueKind
from server.features.kv import MAX_VALUE
from tests.server.features.harness import HubContext, Peer, signed_value


def send(writer: Peer, target: str, topic: str, data: bytes, *, scenario: str = "shop") -> MsgSend:
    statement = signed_value(writer, ValueKind.MESSAGE, scenario, topic, data, target)
    return MsgSend(scenario, target, topic, data, statement)


async def test_a_message_to_a_role_reaches_that_machines_mailbox_in_order(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    web = await ctx.daemon(machines["web"])

    sent = [await ctx.ok(ana, send(ana, "role:web", "deploy", version)) for version in (b"v1", b"v2")]
    first = await ctx.ok(web, MsgRecv("shop", "deploy", after=0, timeout=1))
    second = await ctx.ok(web, MsgRecv("shop", "deploy", after=first["seq"], timeout=1))

    assert sent == [{"to": ["web"]}, {"to": ["web"]}]
    assert (first["data"], second["data"]) == (b"v1", b"v2")
    SignedValue.from_wire(first["statement"]).check_signature([ana.identity.public])
    assert await ctx.payloads(ana, "shop", MessageSent) == [MessageSent(topic="deploy", to=["web"], size=2)] * 2


async def test_a_machine_sends_to_another_which_learns_who_sent_it(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db, web = await ctx.daemon(machines["db"]), await ctx.daemon(machines["web"])

    await ctx.ok(db, send(db, "web", "ready", b"db is up"))
    got = await ctx.ok(web, MsgRecv("shop", "", after=0, timeout=1))

    assert got["data"] == b"db is up" and got["sender"] == "db"
    assert got["writer"]["certificate"]["name"] == "db"
    assert [(p, m) for p, m in await ctx.events(ana, "shop") if isinstance(p, MessageSent)] == [
        (MessageSent(topic="ready", to=["web"], size=8), "db")
    ]


async def test_a_receive_waits_for_the_next_message_or_times_out(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    web = await ctx.daemon(machines["web"])

    waiting = asyncio.create_task(ctx.request(web, MsgRecv("shop", "deploy", after=0, timeout=5)))
    await ctx.settle()
    assert not waiting.done()
    await ctx.ok(ana, send(ana, "all", "deploy", b"v3"))
    answer = await asyncio.wait_for(waiting, 1)
    timed_out = await ctx.refused(web, MsgRecv("shop", "other", after=0, timeout=0.05))

    assert isinstance(answer, Response) and answer.data["data"] == b"v3"
    assert timed_out.code == ErrorCode.TIMEOUT.value


async def test_unknown_targets_bad_topics_oversized_and_unsigned_messages_are_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")
    unsigned = MsgSend("shop", "all", "deploy", b"v1")
    cases = {
        ErrorCode.NOT_FOUND: [send(ana, "cache", "deploy", b"v1")],
        ErrorCode.INVALID_REQUEST: [
            send(ana, "role:nope", "deploy", b"v1"),
            send(ana, "all", "", b"v1"),
            send(ana, "all", "bad\ntopic", b"v1"),
            send(ana, "all", "deploy", b"x" * (MAX_VALUE + 1)),
            unsigned,
        ],
    }
    for code, bodies in cases.items():
        for body in bodies:
            assert (await ctx.refused(ana, body)).code == code.value, body
    assert await ctx.payloads(ana, "shop", MessageSent) == []


async def test_only_machines_have_mailboxes(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")

    error = await ctx.refused(ana, MsgRecv("shop", "", after=0, timeout=0))

    assert error.code == ErrorCode.INVALID_REQUEST.value and "a master may not send msg.recv" in error.message


async def test_another_master_cannot_send_into_a_scenario(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    machines = await ctx.create_scenario(ana, "shop")
    web = await ctx.daemon(machines["web"])

    error = await ctx.refused(bob, send(bob, "all", "deploy", b"evil"))

    assert error.code == ErrorCode.NOT_FOUND.value
    assert (await ctx.refused(web, MsgRecv("shop", "", after=0, timeout=0.01))).code == ErrorCode.TIMEOUT.value
