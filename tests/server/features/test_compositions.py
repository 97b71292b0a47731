"""The compositions feature in process: a master's signed composition is kept and one play queued per member
(certified machines the target selects), again when a member connects, never twice; only one's own signature on
one's own scenario is taken, and another tenant sees nothing (daemons playing them: tests/e2e/test_compositions.py)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from protocol import ErrorCode, Identity
from protocol.compositions import Composition, MemberOrder
from protocol.events import CompositionAssigned, CompositionUnassigned
from protocol.messages import (
    CompositionAssign,
    CompositionList,
    CompositionPerformances,
    CompositionUnassign,
    Deliver,
)
from tests.server.features.harness import HubContext, Peer

BODY = {"command": "tune", "env": {}, "job": "tune", "job_version": 1}


def signed(master: Peer, target: str = "role:web", scenario: str = "shop", **changes: Any) -> Composition:
    made = Composition("c1", master.id, scenario, target, dict(BODY), time.time())
    return replace(made, **changes).signed(master.identity)


def assign(composition: Composition, scenario: str = "shop") -> CompositionAssign:
    return CompositionAssign(scenario, composition.to_wire())


async def test_a_composition_is_queued_once_for_each_member_now_and_on_connecting(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop", [("web1", "web"), ("web2", "web"), ("db", "db")])
    online = await ctx.daemon(machines["web1"])

    answer = await ctx.ok(ana, assign(signed(ana)))

    assert sorted(answer["queued"]) == ["web1", "web2"] and answer["waiting"] == {}
    delivered = await ctx.wait_for(online, Deliver)
    play = MemberOrder.from_wire(delivered.order)
    assert (play.machine, play.composition.id, delivered.order["id"]) == (online.id, "c1", f"c1.{online.id}")
    assert play.certificate is not None and play.certificate["role"] == "web"
    assert (await ctx.ok(ana, assign(signed(ana))))["queued"] == []  # its plays exist: nothing queued again
    await ctx.disconnect(online)
    again = await ctx.daemon(machines["web1"])
    later = await ctx.daemon(machines["web2"])
    await ctx.wait_for(later, Deliver)
    await ctx.wait_for(again, Deliver)
    await ctx.settle()
    assert len(ctx.bodies(again, Deliver)) == len(ctx.bodies(later, Deliver)) == 1  # web1's unacknowledged play
    [listed] = (await ctx.ok(ana, CompositionList("shop")))["compositions"]
    assert Composition.from_wire(listed).id == "c1"
    [event, *_] = await ctx.payloads(ana, "shop", CompositionAssigned)
    assert isinstance(event, CompositionAssigned) and sorted(event.members) == ["web1", "web2"]


async def test_performances_list_every_selected_machine_with_its_play(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop", [("web1", "web"), ("db", "db")])
    await ctx.ok(ana, assign(signed(ana)))
    answer = await ctx.ok(ana, CompositionPerformances("shop", "c1"))
    [only] = answer["performances"]
    assert (only["machine"], only["member"], only["play"]["state"]) == ("web1", True, "queued")
    assert Composition.from_wire(answer["composition"]).id == "c1"


async def test_unassigning_cancels_the_plays_not_delivered_and_stops_new_ones(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop", [("web1", "web")])
    await ctx.ok(ana, assign(signed(ana)))
    assert (await ctx.ok(ana, CompositionUnassign("shop", "c1")))["cancelled"] == ["web1"]
    [event] = await ctx.payloads(ana, "shop", CompositionUnassigned)
    assert isinstance(event, CompositionUnassigned) and event.job == "tune"
    daemon = await ctx.daemon(machines["web1"])
    await ctx.settle()
    assert ctx.bodies(daemon, Deliver) == []
    assert (await ctx.ok(ana, CompositionList("shop")))["compositions"] == []
    assert (await ctx.refused(ana, CompositionUnassign("shop", "c1"))).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.refused(ana, CompositionPerformances("shop", "c1"))).code == ErrorCode.NOT_FOUND.value


async def test_only_ones_own_signature_on_ones_own_scenario_and_a_valid_body_is_taken(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "lab")
    stranger = Identity.generate(lambda n: b"\x07" * n)
    forged = replace(signed(ana), target="all")  # widened after signing
    cases = {
        "widened": forged,
        "other scenario": signed(ana, scenario="lab"),
        "bad body": signed(ana, body={"command": 7}),
        "expired": signed(ana, expires=time.time() - 1),
        "someone else's": Composition("c1", stranger.id, "shop", "all", BODY, time.time()).signed(stranger),
    }
    for what, made in cases.items():
        refusal = await ctx.refused(ana, assign(made))
        assert refusal.code == ErrorCode.INVALID_REQUEST.value, (what, refusal.message)
    assert (await ctx.refused(bob, assign(signed(bob)))).code == ErrorCode.NOT_FOUND.value  # ana's scenario
    await ctx.ok(ana, assign(signed(ana)))
    for body in (CompositionList("shop"), CompositionUnassign("shop", "c1"), CompositionPerformances("shop", "c1")):
        assert (await ctx.refused(bob, body)).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.ok(ana, CompositionList("shop")))["compositions"] != []
