"""A master moving to a new key, in process (harness.HubContext)."""

from __future__ import annotations

import os

import pytest

from protocol import ErrorCode, Identity, RemoteError, Role
from protocol.messages import MasterRekey, ScenarioList, master_rekey_payload
from tests.server.features.harness import HubContext, Peer


def rekey(master: Peer, new: Identity, *, prover: Identity | None = None) -> MasterRekey:
    """What ``Master.rotate_key`` sends: the new key, and its signature proving it is held."""
    key = new.public.to_text()
    return MasterRekey(key, (prover or new).sign(master_rekey_payload(master.id, key)))


async def test_a_master_moves_to_a_new_key_and_keeps_its_name_and_scenarios(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    other_session = await ctx.connect("ana", ana.identity, Role.MASTER)
    await ctx.create_scenario(ana, "shop")
    new = Identity.generate(os.urandom)

    answer = await ctx.ok(ana, rekey(ana, new))

    assert answer == {"master": new.id, "name": "ana"}
    assert other_session.conn.closed and not ana.conn.closed  # the SDK closes and reconnects this one itself
    with pytest.raises(RemoteError) as refused:
        await ctx.connect("ana", ana.identity, Role.MASTER)
    assert refused.value.code == ErrorCode.UNKNOWN_IDENTITY.value
    moved = await ctx.connect("ana", new, Role.MASTER)
    assert [s["name"] for s in (await ctx.ok(moved, ScenarioList()))["scenarios"]] == ["shop"]


async def test_a_new_key_the_master_cannot_prove_it_holds_is_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")

    error = await ctx.refused(ana, rekey(ana, Identity.generate(os.urandom), prover=ana.identity))
    malformed = await ctx.refused(ana, MasterRekey("ed25519:nope", b""))

    assert error.code == ErrorCode.BAD_SIGNATURE.value and "proof does not hold" in error.message
    assert malformed.code == ErrorCode.BAD_FIELD.value
    await ctx.connect("ana", ana.identity, Role.MASTER)  # still enrolled under its old key


async def test_a_key_another_master_holds_is_refused(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")

    error = await ctx.refused(ana, rekey(ana, bob.identity))

    assert error.code == ErrorCode.ALREADY_EXISTS.value


async def test_a_machine_may_not_rekey_a_master(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    error = await ctx.refused(db, rekey(db, Identity.generate(os.urandom)))

    assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send master.rekey" in error.message
