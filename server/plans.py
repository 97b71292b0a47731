"""Plans run by the hub, so they go on when their master disconnects (``crc plan run``).

The master resolves each step's target and signs one order per machine up front (the hub cannot sign: daemons
obey only their master's key); the hub keeps the plan with those orders and queues a step's orders once the steps
it depends on are done (``protocol.plans.PlanRun`` decides). A step succeeds when all its orders succeed; it is
timed out (and its orders cancelled) past its ``timeout``. Step states are stored after every change, and a hub
that restarts resumes every open plan (queueing an order twice is harmless: order ids are fixed). Every step
change is a ``plan_step`` event; the end is ``plan_finished``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from protocol import Envelope, ErrorCode, Order, OrderKind, OrderState, ProtocolError
from protocol.messages import PlanCancel, PlanList, PlanShow, PlanSubmit, Response
from protocol.plans import GORCH_STATES, PlanError, PlanRun, StepState, parse_plan
from server.connection import Connection
from server.errors import RequestError
from server.store import OrderRecord, PlanRecord, ScenarioRecord, StoreConflict, StoreError

if TYPE_CHECKING:
    from server.hub import Hub

log = logging.getLogger(__name__)

POLL = 0.5  # a running step's orders are looked at this often (results may land on any replica)


class PlanRunner:
    """Drives one plan on this hub until it is done or cancelled."""

    def __init__(self, hub: Hub, record: PlanRecord, scenario: ScenarioRecord) -> None:
        self.hub = hub
        self.record = record
        self.scenario = scenario
        self.plan = parse_plan(record.spec)
        self.run = PlanRun(self.plan, {sid: StepState(state) for sid, state in record.states.items()})
        self.started = dict(record.started)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"plan-{self.record.id}")

    async def _loop(self) -> None:
        try:
            await self._dispatch(self.run.start())
            await self._save()
            while not self.run.done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL)
                self.wake.clear()
                if await self._advance():
                    await self._save()
            await self._save(done=True)
            outcome = "succeeded" if self.run.succeeded else "failed"
            await self.hub.emit(self.scenario.id, "plan_finished", "", {"plan": self.record.id, "outcome": outcome})
        except asyncio.CancelledError:
            raise
        except (StoreError, ProtocolError) as exc:
            log.error("plan %s stopped (it resumes when the hub restarts): %s", self.record.id, exc)
        finally:
            self.hub.plan_runners.pop(self.record.id, None)

    async def _advance(self) -> bool:
        changed = False
        for sid, state in list(self.run.states.items()):
            if state is not StepState.RUNNING:
                continue
            outcome = await self._outcome(sid)
            if outcome is not None:
                changed = True
                await self._step_event(sid, outcome)
                await self._dispatch(self.run.finished(sid, outcome))
        return changed

    async def _outcome(self, step_id: str) -> StepState | None:
        ids = [str(o["id"]) for o in self.record.orders.get(step_id, [])]
        records = await self.hub.store.orders(self.scenario.id, ids)
        states = [r.state for r in records]
        if len(records) == len(ids) and all(s.final for s in states):
            if all(s is OrderState.SUCCEEDED for s in states):
                return StepState.SUCCEEDED
            return StepState.TIMED_OUT if OrderState.TIMED_OUT in states else StepState.FAILED
        timeout = self.plan.step(step_id).timeout
        if timeout is not None and time.time() - self.started.get(step_id, time.time()) > timeout:
            await self._cancel_orders(records)
            return StepState.TIMED_OUT
        return None

    async def _dispatch(self, step_ids: list[str]) -> None:
        from server.masters import _order_summary

        for sid in step_ids:
            self.started[sid] = time.time()
            await self._step_event(sid, StepState.RUNNING)
            for wire in self.record.orders.get(sid, []):
                order = Order.from_wire(wire)
                now = time.time()
                record = OrderRecord(
                    order.id, self.scenario.id, order.machine, order.kind.value, wire, OrderState.QUEUED, now, now
                )
                with contextlib.suppress(StoreConflict):  # queued before a restart: it is there already
                    await self.hub.store.add_order(record, [])
                    machine = await self.hub.store.machine(order.machine)
                    summary = {**_order_summary(order), "plan": self.record.id, "step": sid}
                    await self.hub.emit(self.scenario.id, "command_queued", machine.name if machine else "", summary)
                await self.hub.deliver_queued(order.machine)

    async def _cancel_orders(self, records: list[OrderRecord]) -> None:
        from server.masters import cancel_order

        for record in records:
            if not record.state.final:
                await cancel_order(self.hub, self.scenario, record)

    async def cancel(self) -> None:
        running = self.run.cancel()
        for sid in running:
            ids = [str(o["id"]) for o in self.record.orders.get(sid, [])]
            await self._cancel_orders(await self.hub.store.orders(self.scenario.id, ids))
        self.wake.set()

    async def _step_event(self, step_id: str, state: StepState) -> None:
        step = self.plan.step(step_id)
        data = {"plan": self.record.id, "step": step_id, "name": step.name or step_id, "state": state.value}
        await self.hub.emit(self.scenario.id, "plan_step", "", data)

    async def _save(self, done: bool = False) -> None:
        states = {sid: state.value for sid, state in self.run.states.items()}
        self.record = replace(self.record, states=states, started=self.started, updated=time.time(), done=done)
        await self.hub.store.put_plan(self.record)


def plan_wire(record: PlanRecord) -> dict[str, Any]:
    """What masters (and gorchestrator's clients) see of a plan."""
    steps = []
    for raw in record.spec.get("steps", []):
        state = StepState(record.states.get(raw["id"], StepState.PENDING.value))
        steps.append({
            "id": raw["id"], "name": raw.get("name") or raw["id"], "target": raw["target"],
            "depends_on": raw.get("depends_on", []), "state": state.value, "gorch_state": int(GORCH_STATES[state]),
            "orders": [o["id"] for o in record.orders.get(raw["id"], [])],
        })  # fmt: skip
    return {"id": record.id, "name": record.name, "done": record.done, "created": record.created,
            "updated": record.updated, "steps": steps}  # fmt: skip


async def resume_plans(hub: Hub) -> int:
    """At start-up: go on with every plan that was not done (of scenarios that still exist)."""
    resumed = 0
    for record in await hub.store.open_plans():
        scenario = await hub.store.scenario(record.scenario_id)
        if scenario is None or record.id in hub.plan_runners:
            continue
        runner = PlanRunner(hub, record, scenario)
        hub.plan_runners[record.id] = runner
        runner.start()
        resumed += 1
    return resumed


# requests
async def _scenario(hub: Hub, conn: Connection, name: str) -> ScenarioRecord:
    from server.masters import owned_scenario

    return await owned_scenario(hub, conn, name)


async def plan_submit(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, PlanSubmit)
    scenario = await _scenario(hub, conn, body.scenario)
    try:
        plan = parse_plan(body.spec)
    except PlanError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, exc.message) from None
    orders: dict[str, list[dict[str, Any]]] = {}
    for step in plan.steps:
        wires = body.orders.get(step.id)
        if not isinstance(wires, list) or not wires:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"step {step.id!r} has no orders (its target is empty?)")
        for wire in wires:
            order = Order.from_wire(wire)
            machine = await hub.store.machine(order.machine)
            if order.master != conn.id or order.scenario != scenario.name or order.kind is not OrderKind.EXEC:
                raise RequestError(ErrorCode.FORBIDDEN, f"step {step.id!r}: orders must be EXEC orders you signed")
            if machine is None or machine.scenario_id != scenario.id:
                raise RequestError(ErrorCode.NOT_FOUND, f"step {step.id!r}: no machine {order.machine!r} here")
        orders[step.id] = list(wires)
    if await hub.store.plan(body.plan_id) is not None:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"plan id {body.plan_id} was used before")
    now = time.time()
    states = {s.id: StepState.PENDING.value for s in plan.steps}
    record = PlanRecord(body.plan_id, scenario.id, plan.name, dict(body.spec), orders, states, now, now)
    await hub.store.put_plan(record)
    runner = PlanRunner(hub, record, scenario)
    hub.plan_runners[record.id] = runner
    runner.start()
    conn.send(Response(plan_wire(record)), scenario=scenario.name, reply_to=env.id)


async def _owned_plan(hub: Hub, conn: Connection, scenario_name: str, plan_id: str) -> PlanRecord:
    scenario = await _scenario(hub, conn, scenario_name)
    record = await hub.store.plan(plan_id)
    if record is None or record.scenario_id != scenario.id:
        raise RequestError(ErrorCode.NOT_FOUND, f"no plan {plan_id} in scenario {scenario_name!r}")
    return record


async def plan_show(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, PlanShow)
    record = await _owned_plan(hub, conn, body.scenario, body.plan_id)
    conn.send(Response(plan_wire(record)), scenario=body.scenario, reply_to=env.id)


async def plan_list(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, PlanList)
    scenario = await _scenario(hub, conn, body.scenario)
    plans = [plan_wire(p) for p in await hub.store.plans(scenario.id)]
    conn.send(Response({"plans": plans}), scenario=body.scenario, reply_to=env.id)


async def plan_cancel(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, PlanCancel)
    record = await _owned_plan(hub, conn, body.scenario, body.plan_id)
    runner = hub.plan_runners.get(record.id)
    if runner is not None:
        await runner.cancel()
        if runner.task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(runner.task), 5)
    record = await hub.store.plan(record.id) or record
    conn.send(Response(plan_wire(record)), scenario=body.scenario, reply_to=env.id)
