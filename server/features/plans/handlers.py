"""Plans run by the hub, so they go on when their master disconnects (``crc plan run``).

The master resolves each step's target and signs one order per machine up front (the hub cannot sign: daemons
obey only their master's key); the hub keeps the plan with those orders and queues a step's orders once the steps
it depends on are done (``protocol.plans.PlanRun`` decides). A step succeeds when all its orders succeed; it is
timed out (and its orders cancelled) past its ``timeout``. Step states are stored after every change, and a hub
that restarts resumes every open plan (queueing an order twice is harmless: order ids are fixed). Every step
change is a ``plan_step`` event; the end is ``plan_finished``.

A step may wait for futures (``waits_for``): once its dependencies are done it is ``waiting`` until all its keys
are set, and only then are its orders queued; its ``timeout`` counts from when it became ready, waiting included.
A plan waiting for a key that no step sets, no machine may set and that is not set is refused before it is stored.

Among replicas, one replica at a time runs a plan: its runner holds a lease on it in the store (``claim_plan``),
renewed every ``LEASE_RENEW`` seconds and lasting ``LEASE_TTL``; a runner that finds its lease taken stops without
touching the plan. Every replica looks for open plans with no live lease every ``ADOPT_EVERY`` seconds, so the
plans of a replica that died go on elsewhere within about ``LEASE_TTL + ADOPT_EVERY``. A plan is cancelled by the
replica running it, which any replica asks over the backplane; a plan nobody runs is cancelled by the asking one.
A single hub takes no leases: it owns its store, and a lease left by its previous run (under another random
replica id) would only hold its plans back after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from typing import Any

from protocol import Envelope, ErrorCode, Order, OrderKind, OrderState, ProtocolError
from protocol.events import PlanFinished, PlanStep
from protocol.messages import PlanCancel, PlanList, PlanShow, PlanSubmit, Response
from protocol.plans import (
    GORCH_STATES,
    Plan,
    PlanError,
    PlanRun,
    StepEvent,
    StepState,
    parse_plan,
    plan_to_wire,
    unproducible_keys,
)
from server.backplane import LocalBackplane
from server.backplane.base import BROADCAST_CHANNEL, BackplaneUnavailable
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.peers import CancelPlan, PeerTable
from server.core.scope import owned_scenario, plan_in
from server.core.state import StateKey
from server.features.orders import cancel_order, order_summary, refuse_long_lived
from server.store import OrderRecord, PlanRecord, ScenarioRecord, StoreConflict, StoreError

handlers = HandlerTable()

log = logging.getLogger(__name__)

POLL = 0.5  # a running step's orders (and a waiting step's keys) are looked at this often
KEY_WATCH = 3600.0  # how long one watch for scenario news lasts before it is renewed (while steps still wait)
LEASE_TTL = 15.0  # a plan whose runner has not renewed its lease for this long is adopted by another replica
LEASE_RENEW = 5.0  # a runner renews its lease this often: a few renewals may fail (a slow store) before it expires
ADOPT_EVERY = 5.0  # among replicas, each looks for plans whose lease expired (their replica died) this often
CANCEL_WAIT = 5.0  # how long a cancel waits for the replica running the plan to end it
CANCEL_POLL = 0.2


def _shared(hub: Hub) -> bool:
    """Whether other replicas may run plans of this store (only then are leases taken)."""
    return not isinstance(hub.backplane, LocalBackplane)


async def _claim(hub: Hub, plan_id: str) -> bool:
    if not _shared(hub):
        return True
    return await stores.plans(hub).claim_plan(plan_id, hub.replica_id, time.time(), LEASE_TTL)


class PlanRunner:
    """Drives one plan on this hub until it is done or cancelled."""

    def __init__(self, hub: Hub, record: PlanRecord, scenario: ScenarioRecord) -> None:
        self.hub = hub
        self.record = record
        self.scenario = scenario
        self.plan = parse_plan({k: v for k, v in record.spec.items() if k != "gorch"})
        self.run = PlanRun(self.plan, {sid: StepState(state) for sid, state in record.states.items()})
        self.started = dict(record.started)
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[None] | None = None  # wakes the loop on scenario news while steps wait for keys
        self.renew_at = time.monotonic() + LEASE_RENEW  # the lease was claimed just before the runner was made

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"plan-{self.record.id}")

    async def _still_ours(self) -> bool:
        """Renew the lease when due; False once another replica holds it (ours expired: a pause, a slow store)."""
        if time.monotonic() < self.renew_at:
            return True
        if not await _claim(self.hub, self.record.id):
            return False
        self.renew_at = time.monotonic() + LEASE_RENEW
        return True

    async def _release(self) -> None:
        if not _shared(self.hub):
            return
        try:
            await stores.plans(self.hub).release_plan(self.record.id, self.hub.replica_id)
        except StoreError as exc:  # it expires on its own
            log.warning("plan %s: could not release its lease: %s", self.record.id, exc)

    async def _loop(self) -> None:
        try:
            if StepState.WAITING in self.run.states.values():  # waiting before a restart: wait on
                self._watch_keys()
            await self._ready(self.run.start())
            await self._save()
            while not self.run.done:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL)
                self.wake.clear()
                if not await self._still_ours():
                    # Whoever took the lease runs the plan from its stored states: writing ours would undo theirs.
                    log.warning("plan %s: another replica took it over; stopping here", self.record.id)
                    return
                if await self._advance():
                    await self._save()
            await self._save(done=True)
            outcome = "succeeded" if self.run.succeeded else "failed"
            await self.hub.emit(self.scenario.id, PlanFinished(plan=self.record.id, outcome=outcome), "")
            await self._release()
        except asyncio.CancelledError:  # the hub is shutting down: let another replica adopt the plan at once
            await self._release()
            raise
        except (StoreError, ProtocolError) as exc:
            # Its lease stays: among replicas this one's adoption loop renews it and starts a new runner.
            log.error("plan %s stopped (it resumes when adopted again or the hub restarts): %s", self.record.id, exc)
        finally:
            if self.watcher is not None:
                self.watcher.cancel()
            if self.hub.state[PLAN_RUNNERS].get(self.record.id) is self:
                del self.hub.state[PLAN_RUNNERS][self.record.id]

    async def _advance(self) -> bool:
        changed = False
        for sid, state in list(self.run.states.items()):
            if state is StepState.WAITING:
                missing = await self._missing_keys(sid)
                if self.run.states[sid] is not StepState.WAITING:  # cancelled meanwhile
                    continue
                if not missing:
                    changed = True
                    self.run.move(sid, StepEvent.KEYS_SET)
                    await self._dispatch(sid)
                    continue
                if not self._timed_out(sid):
                    continue
                outcome: StepState | None = StepState.TIMED_OUT
            elif state is StepState.RUNNING:
                outcome = await self._outcome(sid)
            else:
                continue
            if outcome is not None:
                changed = True
                await self._step_event(sid, outcome)
                await self._ready(self.run.finished(sid, outcome))
        return changed

    def _timed_out(self, step_id: str) -> bool:
        timeout = self.plan.step(step_id).timeout
        return timeout is not None and time.time() - self.started.get(step_id, time.time()) > timeout

    async def _missing_keys(self, step_id: str) -> list[str]:
        now = time.time()
        return [
            key for key in self.plan.step(step_id).waits_for
            if await stores.keys(self.hub).kv_get(self.scenario.id, key, now) is None
        ]  # fmt: skip

    async def _outcome(self, step_id: str) -> StepState | None:
        ids = [str(o["id"]) for o in self.record.orders.get(step_id, [])]
        records = await stores.orders(self.hub).orders(self.scenario.id, ids)
        states = [r.state for r in records]
        if len(records) == len(ids) and all(s.final for s in states):
            if all(s is OrderState.SUCCEEDED for s in states):
                return StepState.SUCCEEDED
            return StepState.TIMED_OUT if OrderState.TIMED_OUT in states else StepState.FAILED
        if self._timed_out(step_id):
            await self._cancel_orders(records)
            return StepState.TIMED_OUT
        return None

    async def _ready(self, step_ids: list[str]) -> None:
        """The engine's ready steps: dispatched now, or waiting while some of their keys are not set."""
        for sid in step_ids:
            # Only a step not dispatched yet gets here (started is saved with the states), so the clock starts now:
            # the step's timeout covers its wait for keys too.
            self.started.setdefault(sid, time.time())
            missing = await self._missing_keys(sid)
            if self.run.states[sid] is not StepState.RUNNING:  # cancelled meanwhile
                continue
            if not missing:
                await self._dispatch(sid)
                continue
            waiting = self.run.move(sid, StepEvent.KEYS_MISSING)  # the engine has it RUNNING: no orders are out yet
            await self._step_event(sid, waiting, keys=list(self.plan.step(sid).waits_for), missing=missing)
            self._watch_keys()

    async def _dispatch(self, sid: str) -> None:
        """Queue a RUNNING step's orders (again, after a restart: those queued already are left as they are)."""
        self.started.setdefault(sid, time.time())
        await self._step_event(sid, StepState.RUNNING)
        for wire in self.record.orders.get(sid, []):
            order = Order.from_wire(wire)
            now = time.time()
            record = OrderRecord(
                order.id, self.scenario.id, order.machine, order.kind.value, wire, OrderState.QUEUED, now, now
            )
            with contextlib.suppress(StoreConflict):  # queued before a restart: it is there already
                await stores.orders(self.hub).add_order(record, [])
                machine = await stores.machines(self.hub).machine(order.machine)
                summary = replace(order_summary(order), plan=self.record.id, step=sid)
                await self.hub.emit(self.scenario.id, summary, machine.name if machine else "")
            await self.hub.deliver_queued(order.machine)

    def _watch_keys(self) -> None:
        if self.watcher is None or self.watcher.done():
            self.watcher = asyncio.create_task(self._key_news(), name=f"plan-keys-{self.record.id}")

    async def _key_news(self) -> None:
        """Wake the loop whenever the scenario has news (a key set here or on another replica wakes the futures'
        waiters), so a waiting step is dispatched at once rather than at the next poll; ends when no step waits."""

        async def news() -> bool | None:
            self.wake.set()
            return None if StepState.WAITING in self.run.states.values() else True

        try:
            while StepState.WAITING in self.run.states.values():
                await self.hub.wait_until(self.scenario.id, news, KEY_WATCH)
        except (StoreError, BackplaneUnavailable) as exc:  # the loop's polling finds the keys anyway
            log.warning("plan %s: not watching for keys (polling only): %s", self.record.id, exc)

    async def _cancel_orders(self, records: list[OrderRecord]) -> None:
        for record in records:
            if not record.state.final:
                await cancel_order(self.hub, self.scenario, record)

    async def cancel(self, *, orphaned: bool = False) -> None:
        """Cancel the steps not done and their orders. ``orphaned``: the plan's runner died, maybe between queueing
        a step's orders and saving its state, so every open step's orders are looked for, not just running ones."""
        open_steps = [sid for sid, state in self.run.states.items() if not state.final]
        running = self.run.cancel()
        for sid in open_steps if orphaned else running:
            ids = [str(o["id"]) for o in self.record.orders.get(sid, [])]
            await self._cancel_orders(await stores.orders(self.hub).orders(self.scenario.id, ids))
        self.wake.set()

    async def _step_event(
        self, step_id: str, state: StepState, *, keys: list[str] | None = None, missing: list[str] | None = None
    ) -> None:
        step = self.plan.step(step_id)
        event = PlanStep(self.record.id, step_id, step.name or step_id, state.value, keys=keys, missing=missing)
        await self.hub.emit(self.scenario.id, event, "")

    async def _save(self, done: bool = False) -> None:
        states = {sid: state.value for sid, state in self.run.states.items()}
        self.record = replace(self.record, states=states, started=self.started, updated=time.time(), done=done)
        await stores.plans(self.hub).put_plan(self.record)


def plan_wire(record: PlanRecord) -> dict[str, Any]:
    """What masters (and gorchestrator's clients) see of a plan."""
    steps = []
    for raw in record.spec.get("steps", []):
        state = StepState(record.states.get(raw["id"], StepState.PENDING.value))
        steps.append({
            "id": raw["id"], "name": raw.get("name") or raw["id"], "target": raw["target"],
            "depends_on": raw.get("depends_on", []), "state": state.value, "gorch_state": int(GORCH_STATES[state]),
            "orders": [o["id"] for o in record.orders.get(raw["id"], [])],
            **({"waits_for": raw["waits_for"]} if raw.get("waits_for") else {}),
        })  # fmt: skip
    return {"id": record.id, "name": record.name, "done": record.done, "created": record.created,
            "updated": record.updated, "steps": steps}  # fmt: skip


async def resume_plans(hub: Hub) -> int:
    """Go on with every plan that is not done (of scenarios that still exist) and that no other replica runs: at
    start-up, and among replicas every ``ADOPT_EVERY`` seconds (``adopt_plans``)."""
    resumed = 0
    for record in await stores.plans(hub).open_plans():
        runner = await _adopt(hub, record)
        if runner is not None:
            runner.start()
            resumed += 1
    return resumed


async def _adopt(hub: Hub, record: PlanRecord) -> PlanRunner | None:
    """A runner (not started yet) for an open plan whose lease this replica could claim, else None."""
    if record.id in hub.state[PLAN_RUNNERS] or await stores.scenarios(hub).scenario(record.scenario_id) is None:
        return None
    if not await _claim(hub, record.id):
        return None
    # Read again under the lease: the replica that held it may have saved states (or finished) since the listing.
    current = await stores.plans(hub).plan(record.id)
    scenario = await stores.scenarios(hub).scenario(record.scenario_id)
    if record.id in hub.state[PLAN_RUNNERS]:  # made here meanwhile (a cancel, an adoption): that runner has the lease
        return None
    if current is None or current.done or scenario is None:
        if _shared(hub):
            await stores.plans(hub).release_plan(record.id, hub.replica_id)
        return None
    runner = PlanRunner(hub, current, scenario)
    hub.state[PLAN_RUNNERS][record.id] = runner
    return runner


async def adopt_plans(hub: Hub) -> None:
    """Among replicas: take over the plans of replicas that died (their leases expired)."""
    while True:
        await asyncio.sleep(ADOPT_EVERY)
        try:
            adopted = await resume_plans(hub)
        except (StoreError, BackplaneUnavailable) as exc:
            log.warning("looking for plans to adopt failed (trying again in %s s): %s", ADOPT_EVERY, exc)
            continue
        if adopted:
            log.info("adopted %d plans that no replica was running", adopted)


# requests
@handlers.on(PlanSubmit)
async def plan_submit(hub: Hub, conn: Connection, env: Envelope, body: PlanSubmit) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
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
            machine = await stores.machines(hub).machine(order.machine)
            if order.master != conn.id or order.scenario != scenario.name or order.kind is not OrderKind.EXEC:
                raise RequestError(ErrorCode.FORBIDDEN, f"step {step.id!r}: orders must be EXEC orders you signed")
            if machine is None or machine.scenario_id != scenario.id:
                raise RequestError(ErrorCode.NOT_FOUND, f"step {step.id!r}: no machine {order.machine!r} here")
        orders[step.id] = list(wires)
    record = await start_plan(hub, scenario, body.plan_id, plan, orders)
    conn.send(Response(plan_wire(record)), scenario=scenario.name, reply_to=env.id)


async def start_plan(
    hub: Hub,
    scenario: ScenarioRecord,
    plan_id: str,
    plan: Plan,
    orders: dict[str, list[dict[str, Any]]],
    *,
    source: dict[str, Any] | None = None,
) -> PlanRecord:
    """Store a checked plan with its signed orders (``orders``: step id -> order wires) and start running it.

    ``source``: the gorchestrator task it was read from, kept to show it back in that form (``/v1/tasks``).
    """
    if await stores.plans(hub).plan(plan_id) is not None:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"plan id {plan_id} was used before")
    # Here, not only where masters submit plans: REST tasks build (delegate-signed) orders of their own.
    for step_id, wires in orders.items():
        for wire in wires:
            refuse_long_lived(hub, Order.from_wire(wire), f"step {step_id!r}: ")
    await _check_keys(hub, scenario, plan)
    now = time.time()
    states = {s.id: StepState.PENDING.value for s in plan.steps}
    spec = plan_to_wire(plan) if source is None else {**plan_to_wire(plan), "gorch": source}
    record = PlanRecord(plan_id, scenario.id, plan.name, spec, orders, states, now, now)
    # Before it is stored: once it is an open plan, another replica's adoption loop could take it first.
    if not await _claim(hub, plan_id):
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"plan id {plan_id} is in use")
    await stores.plans(hub).put_plan(record)
    runner = PlanRunner(hub, record, scenario)
    hub.state[PLAN_RUNNERS][record.id] = runner
    runner.start()
    return record


async def _check_keys(hub: Hub, scenario: ScenarioRecord, plan: Plan) -> None:
    """Refuse a plan that waits for a key nothing can set: it would only ever time out (or wait forever)."""
    waited = sorted({key for step in plan.steps for key in step.waits_for})
    if not waited:
        return
    now = time.time()
    existing = [key for key in waited if await stores.keys(hub).kv_get(scenario.id, key, now) is not None]
    machines = [m.name for m in await stores.machines(hub).machines(scenario.id)]
    missing = unproducible_keys(plan, machines, existing)
    if missing:
        problems = [
            f"step {sid!r} waits for key {key!r}, which no step sets (before it), no machine can set and is not set"
            for sid, key in missing
        ]
        raise RequestError(ErrorCode.INVALID_REQUEST, "; ".join(problems))


async def _owned_plan(hub: Hub, conn: Connection, scenario_name: str, plan_id: str) -> PlanRecord:
    return await plan_in(hub, await owned_scenario(hub, conn.id, scenario_name), plan_id)


@handlers.on(PlanShow)
async def plan_show(hub: Hub, conn: Connection, env: Envelope, body: PlanShow) -> None:
    record = await _owned_plan(hub, conn, body.scenario, body.plan_id)
    conn.send(Response(plan_wire(record)), scenario=body.scenario, reply_to=env.id)


@handlers.on(PlanList)
async def plan_list(hub: Hub, conn: Connection, env: Envelope, body: PlanList) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    plans = [plan_wire(p) for p in await stores.plans(hub).plans(scenario.id)]
    conn.send(Response({"plans": plans}), scenario=body.scenario, reply_to=env.id)


@handlers.on(PlanCancel)
async def plan_cancel(hub: Hub, conn: Connection, env: Envelope, body: PlanCancel) -> None:
    """Answered from a task of its own: waiting for another replica to end the plan may take seconds, and the
    connection goes on serving (and answering heartbeats) meanwhile."""
    owned = await _owned_plan(hub, conn, body.scenario, body.plan_id)

    async def answer() -> None:
        try:
            record = await cancel_plan(hub, owned)
        except (StoreError, BackplaneUnavailable) as exc:
            log.error("could not cancel plan %s: %s", owned.id, exc)
            conn.reply_error(env, ErrorCode.UNAVAILABLE, f"the hub cannot store or route this right now: {exc}")
            return
        conn.send(Response(plan_wire(record)), scenario=body.scenario, reply_to=env.id)

    hub.spawn(answer(), name=f"plan-cancel-{owned.id}")


async def cancel_plan(hub: Hub, record: PlanRecord) -> PlanRecord:
    """Cancel a running plan (its waiting steps never run, running ones are cancelled); the plan as it ends.

    The replica running it cancels it: this one if the runner is here, else the one holding its lease, asked over
    the backplane; a plan whose lease nobody holds (its replica died) is cancelled here.
    """
    runner: PlanRunner | None = hub.state[PLAN_RUNNERS].get(record.id)
    if runner is not None:
        await runner.cancel()
    else:
        runner = await _cancel_elsewhere(hub, record)
    if runner is not None and runner.task is not None:
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.shield(runner.task), CANCEL_WAIT)
    return await stores.plans(hub).plan(record.id) or record


async def _cancel_elsewhere(hub: Hub, record: PlanRecord) -> PlanRunner | None:
    """Ask the replica running the plan to cancel it and wait until it is done; if no replica runs it (or the one
    that did dies meanwhile and its lease expires), take it and cancel it here: that runner is returned."""
    deadline = time.monotonic() + CANCEL_WAIT
    asked = False
    while True:
        current = await stores.plans(hub).plan(record.id)
        if current is None or current.done:
            return None
        local: PlanRunner | None = hub.state[PLAN_RUNNERS].get(record.id)
        if local is not None:  # adopted here meanwhile
            await local.cancel()
            return local
        runner = await _adopt(hub, current)
        if runner is not None:
            await runner.cancel(orphaned=True)
            runner.start()  # to save the cancelled states, say the plan finished and release the lease
            return runner
        if not asked:
            hub.backplane.publish(BROADCAST_CHANNEL, CancelPlan(record.id))
            asked = True
        if time.monotonic() >= deadline:
            log.warning("plan %s: the replica running it did not end it within %s s", record.id, CANCEL_WAIT)
            return None
        await asyncio.sleep(CANCEL_POLL)


async def cancel_here(hub: Hub, plan_id: str) -> None:
    """Another replica was asked to cancel the plan: cancel it if it runs here."""
    runner = hub.state[PLAN_RUNNERS].get(plan_id)
    if runner is not None:
        await runner.cancel()


# The runners of the plans this replica runs, by plan id.
PLAN_RUNNERS: StateKey[dict[str, PlanRunner]] = StateKey("plan_runners", dict)


async def _start(hub: Hub) -> None:
    resumed = await resume_plans(hub)
    if resumed:
        log.info("resumed %d plans that were running", resumed)
    runners = hub.state[PLAN_RUNNERS]
    hub.metrics.gauge("crc_plans_running", "Plans this replica is running", lambda: len(runners))
    if not isinstance(hub.backplane, LocalBackplane):
        hub.loop(adopt_plans(hub), "plan-adoption")


async def _stop(hub: Hub) -> None:
    """Stopped here (after the adoption loop, which would start them again); resumed from the store next start."""
    for runner in list(hub.state[PLAN_RUNNERS].values()):
        if runner.task is not None:
            runner.task.cancel()


peers: PeerTable[Hub] = PeerTable()


@peers.on(CancelPlan)
async def _peer_cancel_plan(hub: Hub, message: CancelPlan) -> None:
    await cancel_here(hub, message.plan)


FEATURE = Feature("plans", handlers, peers, on_start=_start, on_stop=_stop)
