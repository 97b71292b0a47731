"""Plans over REST: a scenario's plans (``GET /v1/scenarios/{name}/plans``), and gorchestrator's REST API on the hub,
so its clients work unchanged: a task is a plan in its format (nodes
and a row-major adjacency matrix ``digraph``), run by the hub like ``crc plan run``.

- ``POST /v1/tasks`` (operator): run a task; answers 202 with its ``id``. Each node runs on the machine (or
  role, label, glob...) its ``target`` names, or the ``target`` query parameter's; its ``engine`` picks the shell.
- ``GET /v1/tasks/`` : the tasks (every plan, whatever submitted it) with their states.
- ``GET /v1/tasks/{id}``: the task with each node's ``state`` in gorchestrator's numbering (0 initial, 1 to
  run, 2 running, 3 success, 4 failure, 5 not runnable, 10 timeout, 11 cancelled) and each machine's result.
- ``DELETE /v1/tasks/{id}`` (operator): cancel it.

The scenario is the token's own, or the ``scenario`` query parameter (listing without one shows every scenario
the token sees). Orders are signed with the token's delegation (``protocol.delegation``), so daemons check them
against their master's key as always.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from aiohttp import web

from protocol import ErrorCode, Order, OrderKind
from protocol.order_bodies import ExecBody
from protocol.orders import MAX_ORDER_TTL
from protocol.plans import GORCH_STATES, GorchState, PlanError, StepState, from_gorch
from protocol.targeting import UnknownMachine, select
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.errors import RequestError
from server.core.hub import Hub
from server.core.scope import owned_plan
from server.features.plans.handlers import cancel_plan, plan_wire, start_plan
from server.store import PlanRecord, ScenarioRecord
from server.transport.rest.auth import Principal, authenticate
from server.transport.rest.encoding import json_response, read_json

TASK_TTL = 24 * 3600.0  # how long a task's signed orders stay valid (capped by the token's expiry)
OUTPUT_LIMIT = 16 * 1024  # per machine and stream, in a task's view
routes = web.RouteTableDef()

STATE_NAMES = {
    GorchState.INITIAL: "Initial", GorchState.TO_RUN: "ToRun", GorchState.RUNNING: "Running",
    GorchState.SUCCESS: "Success", GorchState.FAILURE: "Failure", GorchState.NOT_RUNNABLE: "NotRunnable",
    GorchState.TIMEOUT: "Timeout", GorchState.CANCELLED: "Canceled",
}  # fmt: skip


@routes.get("/v1/scenarios/{name}/plans")
async def plans(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    return json_response({"plans": [plan_wire(p) for p in await stores.plans(hub).plans(scenario.id)]})


@routes.post("/v1/tasks")
async def create_task(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    delegate, delegation = principal.signer()
    scenario = await principal.scenario(hub, request.query.get("scenario"))
    source = await read_json(request)
    try:
        plan = from_gorch(source, default_target=request.query.get("target", ""))
    except PlanError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, exc.message) from None
    machines = sorted(await stores.machines(hub).machines(scenario.id), key=lambda m: m.name)
    expires = min(time.time() + min(TASK_TTL, MAX_ORDER_TTL), delegation.expires or math.inf)
    orders: dict[str, list[dict[str, Any]]] = {}
    for step in plan.steps:
        try:
            targets = select(machines, step.target)
        except UnknownMachine as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"node {step.id} ({step.name}): {exc.args[0]}") from None
        if not targets:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"node {step.id} ({step.name}): {step.target!r} matches no machine"
            )
        body = ExecBody(step.command, shell=step.shell, timeout=step.timeout, plan_step=step.id).to_wire()
        orders[step.id] = [
            Order(uuid.uuid4().hex, scenario.name, m.id, OrderKind.EXEC, body, expires, "")
            .signed_by_delegate(delegate, delegation)
            .to_wire()
            for m in targets
        ]
    task_id = str(uuid.uuid4())
    await start_plan(hub, scenario, task_id, plan, orders, source=source)
    return web.json_response({"id": task_id, "scenario": scenario.name}, status=202)


def _task_state(record: PlanRecord) -> GorchState:
    states = {StepState(s) for s in record.states.values()}
    if not record.done:
        return GorchState.RUNNING if states - {StepState.PENDING, StepState.WAITING} else GorchState.TO_RUN
    if StepState.CANCELLED in states:
        return GorchState.CANCELLED
    if states <= {StepState.SUCCEEDED}:
        return GorchState.SUCCESS
    return (
        GorchState.TIMEOUT if StepState.TIMED_OUT in states and StepState.FAILED not in states else GorchState.FAILURE
    )


async def _owned_task(request: web.Request, principal: Principal) -> tuple[PlanRecord, ScenarioRecord]:
    return await owned_plan(
        request.app[HUB_KEY], principal.master, request.match_info["id"], only_scenario=principal.token.scenario
    )


def _text(data: Any) -> str:
    raw = data if isinstance(data, bytes) else str(data or "").encode()
    return raw[:OUTPUT_LIMIT].decode("utf-8", "replace")


async def task_view(hub: Hub, record: PlanRecord, scenario: ScenarioRecord) -> dict[str, Any]:
    """The task as gorchestrator shows it: its own fields, and each node's state and per-machine results."""
    steps = record.spec.get("steps", [])
    source = record.spec.get("gorch")
    index = {str(raw["id"]): j for j, raw in enumerate(steps)}
    if isinstance(source, dict):
        digraph, nodes = source["digraph"], sorted(source["nodes"], key=lambda n: n["id"])
    else:  # a plan in our format: numbered in plan order, its depends_on as the matrix
        n = len(steps)
        digraph = [0] * (n * n)
        for j, raw in enumerate(steps):
            for dep in raw.get("depends_on", []):
                digraph[index[dep] * n + j] = 1
        nodes = [{"id": j, "name": raw.get("name") or raw["id"], "target": raw["target"], "engine": raw.get("shell"),
                  "artifact": raw.get("command") or raw.get("job", ""), "args": None, "output": None}
                 for j, raw in enumerate(steps)]  # fmt: skip
    machines = {m.id: m.name for m in await stores.machines(hub).machines(scenario.id)}
    view_nodes = []
    for j, node in enumerate(nodes):
        step_id = str(steps[j]["id"])
        state = StepState(record.states.get(step_id, StepState.PENDING.value))
        ids = [str(o["id"]) for o in record.orders.get(step_id, [])]
        results = {}
        for order in await stores.orders(hub).orders(scenario.id, ids) if ids else []:
            result = order.result or {}
            results[machines.get(order.machine_id, order.machine_id)] = {
                "state": order.state.value, "exit_code": result.get("exit_code"),
                "stdout": _text(result.get("stdout")), "stderr": _text(result.get("stderr")),
            }  # fmt: skip
        view_nodes.append({**node, "state": int(GORCH_STATES[state]), "step_state": state.value, "results": results})
    return {
        "id": record.id, "name": record.name, "scenario": scenario.name, "state": int(_task_state(record)),
        "digraph": digraph, "nodes": view_nodes, "created": record.created, "updated": record.updated,
    }  # fmt: skip


@routes.get("/v1/tasks")
@routes.get("/v1/tasks/")
async def list_tasks(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    wanted = request.query.get("scenario")
    scenarios = [await principal.scenario(hub, wanted)] if wanted else await principal.scenarios(hub)
    tasks = []
    for scenario in scenarios:
        for record in await stores.plans(hub).plans(scenario.id):
            state = _task_state(record)
            tasks.append({
                "id": record.id, "name": record.name, "scenario": scenario.name, "state": STATE_NAMES[state],
                "state_code": int(state), "start_date": _iso(record.created),
                "stop_date": _iso(record.updated) if record.done else None,
            })  # fmt: skip
    return web.json_response({"tasks": tasks})


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@routes.get("/v1/tasks/{id}")
async def show_task(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    record, scenario = await _owned_task(request, principal)
    return web.json_response(await task_view(request.app[HUB_KEY], record, scenario))


@routes.delete("/v1/tasks/{id}")
async def delete_task(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    principal.signer()  # operators only
    record, scenario = await _owned_task(request, principal)
    hub = request.app[HUB_KEY]
    return web.json_response(await task_view(hub, await cancel_plan(hub, record), scenario))
