"""Plans run by the hub, in process: steps dispatched once the steps they depend on (and the keys they wait for)
are done, failures skipping dependents, cancelling, and refusals (harness.HubContext)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from protocol import ErrorCode, Order, OrderKind, OrderState
from protocol.events import PlanFinished, PlanStep
from protocol.messages import (
    Cancel,
    Deliver,
    KvSet,
    PlanCancel,
    PlanList,
    PlanShow,
    PlanSubmit,
    Result,
)
from protocol.signed_values import ValueKind
from server.features.plans import handlers as plans
from tests.server.features.harness import HubContext, Peer, signed_order, signed_result, signed_value


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner looks at its running steps' orders every POLL seconds (nothing wakes it when a result comes):
    polled faster here, so that a test of several steps takes milliseconds."""
    monkeypatch.setattr(plans, "POLL", 0.005)


def step(step_id: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "target": target, "command": f"./{step_id}.sh", **extra}


def submit(master: Peer, machines: dict[str, str], *steps: dict[str, Any], plan_id: str = "") -> PlanSubmit:
    """What ``Master.run_plan`` sends: the spec and, per step, an EXEC order the master signed for its target
    (``machines``: name -> id; targets here are single machine names)."""
    orders = {
        s["id"]: [signed_order(master, "shop", machines[s["target"]], {"command": s["command"]}).to_wire()]
        for s in steps
    }
    return PlanSubmit("shop", plan_id or uuid.uuid4().hex, {"name": "deploy", "steps": list(steps)}, orders)


def order_id(delivered: Deliver) -> str:
    return Order.from_wire(delivered.order).id


async def shop(ctx: HubContext) -> tuple[Peer, Peer, Peer, dict[str, str]]:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db, web = await ctx.daemon(machines["db"]), await ctx.daemon(machines["web"])
    return ana, db, web, {name: m.id for name, m in machines.items()}


async def finish(ctx: HubContext, daemon: Peer, status: OrderState = OrderState.SUCCEEDED) -> None:
    """The daemon reports its last delivered order finished."""
    delivered = ctx.bodies(daemon, Deliver)[-1]
    await ctx.tell(daemon, Result(signed_result(daemon, order_id(delivered), status, exit_code=0).to_wire()))


async def shown_when(
    ctx: HubContext, master: Peer, plan_id: str, ready: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The plan as PLAN_SHOW shows it once ``ready`` holds (its runner saves states as it goes)."""
    for _ in range(400):
        shown = await ctx.ok(master, PlanShow("shop", plan_id))
        if ready(shown):
            return shown
        await asyncio.sleep(0.005)
    raise AssertionError(f"plan {plan_id} never got there: {shown}")


async def wait_done(ctx: HubContext, master: Peer, plan_id: str) -> dict[str, Any]:
    return await shown_when(ctx, master, plan_id, lambda shown: bool(shown["done"]))


async def test_a_second_step_waits_until_the_first_succeeded(ctx: HubContext) -> None:
    ana, db, web, ids = await shop(ctx)
    body = submit(ana, ids, step("schema", "db"), step("app", "web", depends_on=["schema"]))

    answer = await ctx.ok(ana, body)
    first = await ctx.wait_for(db, Deliver)
    assert ctx.bodies(web, Deliver) == []  # not before the first step is done
    await finish(ctx, db)
    second = await ctx.wait_for(web, Deliver)
    await finish(ctx, web)

    assert [s["id"] for s in answer["steps"]] == ["schema", "app"]
    assert (order_id(first), order_id(second)) == (body.orders["schema"][0]["id"], body.orders["app"][0]["id"])
    shown = await wait_done(ctx, ana, body.plan_id)
    assert [s["state"] for s in shown["steps"]] == ["succeeded", "succeeded"]
    events = await ctx.events(ana, "shop")
    steps = [(p.step, p.state) for p, _ in events if isinstance(p, PlanStep)]
    assert steps == [("schema", "running"), ("schema", "succeeded"), ("app", "running"), ("app", "succeeded")]
    assert [p for p, _ in events if isinstance(p, PlanFinished)] == [PlanFinished(body.plan_id, "succeeded")]


async def test_a_failed_step_skips_its_dependents_and_fails_the_plan(ctx: HubContext) -> None:
    ana, db, web, ids = await shop(ctx)
    body = submit(ana, ids, step("schema", "db"), step("app", "web", depends_on=["schema"]))
    await ctx.ok(ana, body)

    await ctx.wait_for(db, Deliver)
    await finish(ctx, db, OrderState.FAILED)
    shown = await wait_done(ctx, ana, body.plan_id)

    assert [s["state"] for s in shown["steps"]] == ["failed", "skipped"]
    assert ctx.bodies(web, Deliver) == []
    assert await ctx.payloads(ana, "shop", PlanFinished) == [PlanFinished(body.plan_id, "failed")]


async def test_a_step_waiting_for_a_key_is_dispatched_once_a_machine_sets_it(ctx: HubContext) -> None:
    ana, db, web, ids = await shop(ctx)
    body = submit(ana, ids, step("app", "web", waits_for=["db/ready"]))
    await ctx.ok(ana, body)

    await shown_when(ctx, ana, body.plan_id, lambda shown: shown["steps"][0]["state"] == "waiting")
    assert ctx.bodies(web, Deliver) == []
    value = signed_value(db, ValueKind.KV, "shop", "db/ready", b"yes")
    await ctx.ok(db, KvSet("shop", "db/ready", b"yes", 0.0, value))

    assert order_id(await ctx.wait_for(web, Deliver)) == body.orders["app"][0]["id"]
    [waited, *_] = await ctx.payloads(ana, "shop", PlanStep)
    assert isinstance(waited, PlanStep) and (waited.state, waited.missing) == ("waiting", ["db/ready"])


async def test_cancelling_a_plan_cancels_its_running_orders_and_never_runs_the_rest(ctx: HubContext) -> None:
    ana, db, web, ids = await shop(ctx)
    body = submit(ana, ids, step("schema", "db"), step("app", "web", depends_on=["schema"]))
    await ctx.ok(ana, body)
    await ctx.wait_for(db, Deliver)

    shown = await ctx.ok(ana, PlanCancel("shop", body.plan_id))

    assert shown["done"] is True
    assert [s["state"] for s in shown["steps"]] == ["cancelled", "cancelled"]
    assert ctx.bodies(db, Cancel) == [Cancel(body.orders["schema"][0]["id"])]
    assert ctx.bodies(web, Deliver) == []


async def test_malformed_plans_and_orders_not_the_masters_own_are_refused(ctx: HubContext) -> None:
    ana, _, _, ids = await shop(ctx)
    bob = await ctx.master("bob")
    good = submit(ana, ids, step("schema", "db"))
    put_file = signed_order(ana, "shop", ids["db"], {"path": "/x"}, kind=OrderKind.PUT_FILE).to_wire()
    elsewhere = signed_order(ana, "shop", "m-nobody").to_wire()
    cases = {
        ErrorCode.INVALID_REQUEST: [
            PlanSubmit("shop", "p1", {"name": "deploy", "steps": []}, {}),
            PlanSubmit("shop", "p2", good.spec, {}),
            submit(ana, ids, step("app", "web", waits_for=["config/never"])),  # nothing can set it
        ],
        ErrorCode.FORBIDDEN: [
            PlanSubmit("shop", "p3", good.spec, {"schema": [put_file]}),
            PlanSubmit("shop", "p4", good.spec, {"schema": [signed_order(bob, "shop", ids["db"]).to_wire()]}),
        ],
        ErrorCode.NOT_FOUND: [PlanSubmit("shop", "p5", good.spec, {"schema": [elsewhere]})],
    }
    for code, bodies in cases.items():
        for refused in bodies:
            assert (await ctx.refused(ana, refused)).code == code.value, refused
    assert (await ctx.ok(ana, PlanList("shop")))["plans"] == []
    await ctx.ok(ana, good)
    assert (await ctx.refused(ana, good)).code == ErrorCode.ALREADY_EXISTS.value


async def test_another_master_never_sees_nor_cancels_a_plan(ctx: HubContext) -> None:
    ana, db, _, ids = await shop(ctx)
    bob = await ctx.master("bob")
    body = submit(ana, ids, step("schema", "db"))
    await ctx.ok(ana, body)

    for other in (PlanShow("shop", body.plan_id), PlanList("shop"), PlanCancel("shop", body.plan_id),
                  submit(bob, ids, step("schema", "db"))):  # fmt: skip
        assert (await ctx.refused(bob, other)).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.ok(ana, PlanShow("shop", body.plan_id)))["done"] is False
    assert len(ctx.bodies(db, Deliver)) == 1


async def test_a_machine_may_not_submit_plans(ctx: HubContext) -> None:
    ana, db, _, ids = await shop(ctx)

    error = await ctx.refused(db, submit(ana, ids, step("schema", "db")))

    assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send plan.submit" in error.message
