"""Futures (per-scenario keys) in process: set, get, wait, who may write where, and signed values
(harness.HubContext)."""

from __future__ import annotations

import asyncio

from protocol import ErrorCode
from protocol.events import KvSet as KvSetEvent
from protocol.messages import KvGet, KvSet, KvWait, Response
from protocol.signed_values import SignedValue, ValueKind
from server.features.kv import MAX_VALUE
from tests.server.features.harness import HubContext, Peer, signed_value


def kv_set(writer: Peer, key: str, value: bytes, *, scenario: str = "shop", ttl: float = 0.0) -> KvSet:
    return KvSet(scenario, key, value, ttl, signed_value(writer, ValueKind.KV, scenario, key, value))


async def test_a_master_sets_a_key_that_readers_get_with_its_signed_statement(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")

    answer = await ctx.ok(ana, kv_set(ana, "config/port", b"8080", ttl=60))
    got = await ctx.ok(ana, KvGet("shop", "config/port"))

    assert answer["key"] == "config/port" and answer["expires"] is not None
    assert got["value"] == b"8080" and got["writer"] is None  # a master's value needs no certificate
    statement = SignedValue.from_wire(got["statement"])
    statement.check_signature([ana.identity.public])
    assert (statement.name, statement.value) == ("config/port", b"8080")
    assert await ctx.payloads(ana, "shop", KvSetEvent) == [KvSetEvent(key="config/port", ttl=60.0, size=4)]


async def test_a_machine_sets_keys_under_its_own_name_only(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db = await ctx.daemon(machines["db"])

    # A machine's keys are those of its own scenario, whatever scenario its request names.
    await ctx.ok(db, KvSet("", "db/ready", b"yes", 0.0, signed_value(db, ValueKind.KV, "shop", "db/ready", b"yes")))
    other = await ctx.refused(db, kv_set(db, "web/ready", b"yes"))

    assert other.code == ErrorCode.FORBIDDEN.value and "'db/'" in other.message
    got = await ctx.ok(ana, KvGet("shop", "db/ready"))
    assert got["value"] == b"yes" and got["writer"]["certificate"]["name"] == "db"  # what vouches for db's key
    assert [(p, m) for p, m in await ctx.events(ana, "shop") if isinstance(p, KvSetEvent)] == [
        (KvSetEvent(key="db/ready", ttl=0.0, size=3), "db")
    ]


async def test_a_wait_is_answered_when_the_key_is_set(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    web = await ctx.daemon(machines["web"])

    waiting = asyncio.create_task(ctx.request(web, KvWait("shop", "config/port", timeout=5)))
    await ctx.settle()
    assert not waiting.done()
    await ctx.ok(ana, kv_set(ana, "config/port", b"8080"))

    answer = await asyncio.wait_for(waiting, 1)
    assert isinstance(answer, Response) and answer.data["value"] == b"8080"


async def test_a_wait_for_a_key_never_set_times_out(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")

    error = await ctx.refused(ana, KvWait("shop", "db/ready", timeout=0.05))

    assert error.code == ErrorCode.TIMEOUT.value and "was not set within 0.05 s" in error.message


async def test_malformed_oversized_and_unsigned_values_are_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")
    wrong_value = KvSet("shop", "a/b", b"2", 0.0, signed_value(ana, ValueKind.KV, "shop", "a/b", b"1"))
    cases = [
        kv_set(ana, "", b"x"),
        kv_set(ana, "a/" + "k" * 300, b"x"),
        kv_set(ana, "a/b", b"x" * (MAX_VALUE + 1)),
        kv_set(ana, "a/b", b"x", ttl=-1),
        KvSet("shop", "a/b", b"x"),  # no statement
        wrong_value,
        KvWait("shop", "a/b", timeout=0),
    ]
    for body in cases:
        assert (await ctx.refused(ana, body)).code == ErrorCode.INVALID_REQUEST.value, body
    assert (await ctx.refused(ana, KvGet("shop", "a/b"))).code == ErrorCode.NOT_FOUND.value


async def test_another_master_can_neither_read_nor_write_a_scenarios_keys(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")
    await ctx.ok(ana, kv_set(ana, "config/port", b"8080"))

    for body in (KvGet("shop", "config/port"), kv_set(bob, "config/port", b"1"), KvWait("shop", "config/port", 1)):
        assert (await ctx.refused(bob, body)).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.ok(ana, KvGet("shop", "config/port")))["value"] == b"8080"
