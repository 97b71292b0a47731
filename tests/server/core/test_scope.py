"""What a master may reach (server/core/scope.py), on the app's hub in process: another tenant's scenario, order
or plan is answered exactly as one that does not exist, and a machine only ever reaches its own scenario."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import ErrorCode, OrderState
from server.core import scope
from server.core.errors import RequestError
from server.store import OrderRecord, PlanRecord, ScenarioRecord
from tests.server.features.harness import HubContext, Peer, signed_order


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[HubContext]:
    context = await HubContext.start(tmp_path)
    yield context
    await context.stop()


async def refusal(call: object) -> RequestError:
    with pytest.raises(RequestError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code is ErrorCode.NOT_FOUND
    return caught.value


async def shop_of(ctx: HubContext, master: Peer) -> ScenarioRecord:
    return await scope.owned_scenario(ctx.hub, master.id, "shop")


async def test_another_tenants_scenario_is_refused_as_a_missing_one(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")

    assert (await shop_of(ctx, ana)).name == "shop"
    theirs = await refusal(scope.owned_scenario(ctx.hub, bob.id, "shop"))
    nowhere = await refusal(scope.owned_scenario(ctx.hub, bob.id, "shop2"))
    assert str(theirs).replace("shop", "X") == str(nowhere).replace("shop2", "X")


async def test_an_order_or_plan_of_another_scenario_is_not_found_in_this_one(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    ana_machines = await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "shop")
    ana_shop, bob_shop = await shop_of(ctx, ana), await shop_of(ctx, bob)
    order = signed_order(ana, "shop", ana_machines["db"].id)
    now = time.time()
    record = OrderRecord(order.id, ana_shop.id, order.machine, order.kind.value, order.to_wire(),
                         OrderState.QUEUED, now, now)  # fmt: skip
    await ctx.hub.store.add_order(record, [])
    plan = PlanRecord("p1", ana_shop.id, "deploy", {"steps": []}, {}, {}, now, now)
    await ctx.hub.store.put_plan(plan)

    assert (await scope.order_in(ctx.hub, ana_shop, order.id)).id == order.id
    assert (await scope.plan_in(ctx.hub, ana_shop, "p1")).id == "p1"
    await refusal(scope.order_in(ctx.hub, bob_shop, order.id))
    await refusal(scope.order_in(ctx.hub, ana_shop, "no-such-order"))
    await refusal(scope.plan_in(ctx.hub, bob_shop, "p1"))

    found, scenario = await scope.owned_plan(ctx.hub, ana.id, "p1")
    assert (found.id, scenario.id) == ("p1", ana_shop.id)
    await refusal(scope.owned_plan(ctx.hub, bob.id, "p1"))
    await refusal(scope.owned_plan(ctx.hub, ana.id, "p1", only_scenario="other"))  # a token limited elsewhere


async def test_a_machine_reaches_its_own_scenario_whatever_it_names(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    machines = await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "other")
    db = await ctx.daemon(machines["db"])

    assert (await scope.requester_scenario(ctx.hub, db.conn, "other")).id == (await shop_of(ctx, ana)).id
    assert (await scope.requester_scenario(ctx.hub, ana.conn, "shop")).owner == ana.id
    await refusal(scope.requester_scenario(ctx.hub, ana.conn, "other"))
