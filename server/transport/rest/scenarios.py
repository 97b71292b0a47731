"""Scenarios over REST for scripts and the dashboard: what a token may see (machines, events from a cursor,
stored results, plans) and, for operators, running a command (signed with the token's delegation)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from aiohttp import web

from protocol import ErrorCode, Order, OrderKind
from protocol.orders import MAX_ORDER_TTL
from protocol.targeting import UnknownMachine, select
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.errors import RequestError
from server.features.orders import queue_order
from server.features.plans import plan_wire
from server.features.scenarios import scenario_summary, scenario_wire
from server.store import OrderRecord
from server.transport.rest.auth import authenticate
from server.transport.rest.encoding import json_response
from server.transport.rest.tasks import read_json

EVENTS_PAGE = 500
RESULTS_PAGE = 100
OUTPUT_LIMIT = 64 * 1024  # per result and stream, in lists
COMMAND_TTL = 3600.0
SHELLS = ("sh", "powershell")


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer") from None
    return max(low, min(high, value))


async def me(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    token = principal.token
    return json_response({"token": token.id, "role": token.role, "scenario": token.scenario,
                          "expires": token.expires, "label": token.label})  # fmt: skip


async def list_scenarios(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenarios = [await scenario_summary(hub, scenario) for scenario in await principal.scenarios(hub)]
    return json_response({"scenarios": sorted(scenarios, key=lambda s: s["name"])})


async def show_scenario(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    after = request.query.get("after", "")
    return json_response(await scenario_wire(hub, scenario, after, _int(request, "limit", 0, 0, 10_000)))


async def events(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    after = _int(request, "after", 0, 0, 2**62)
    limit = _int(request, "limit", EVENTS_PAGE, 1, EVENTS_PAGE)
    found = await stores.events(hub).events_after(scenario.id, after, limit)
    return json_response(
        {"events": [event_wire(e) for e in found], "head": await stores.events(hub).last_cursor(scenario.id)}
    )


def event_wire(event: Any) -> dict[str, Any]:
    return {"cursor": event.cursor, "ts": event.ts, "kind": event.kind, "machine": event.machine, "data": event.data}


def result_wire(record: OrderRecord, machine: str) -> dict[str, Any]:
    result = record.result or {}
    body = record.order.get("body", {}) if isinstance(record.order, dict) else {}
    started, finished = result.get("started"), result.get("finished")
    return {
        "order_id": record.id, "machine": machine, "kind": record.kind, "state": record.state.value,
        "command": str(body.get("command", "")), "job": body.get("job"), "plan_step": body.get("plan_step"),
        "exit_code": result.get("exit_code"), "error": result.get("error", ""),
        "stdout": bytes(result.get("stdout", b""))[:OUTPUT_LIMIT],
        "stderr": bytes(result.get("stderr", b""))[:OUTPUT_LIMIT],
        "created": record.created, "updated": record.updated,
        "duration": None if started is None or finished is None else max(0.0, finished - started),
        "delegated_by": (record.order.get("delegation") or {}).get("token") if isinstance(record.order, dict) else None,
    }  # fmt: skip


async def results(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    limit = _int(request, "limit", RESULTS_PAGE, 1, RESULTS_PAGE)
    wanted = request.query.getall("order_id", [])
    names = {m.id: m.name for m in await stores.machines(hub).machines(scenario.id)}
    records = await stores.orders(hub).orders(scenario.id, wanted or None)
    newest = sorted(records, key=lambda r: (r.created, r.id), reverse=True)[:limit]
    return json_response({"results": [result_wire(r, names.get(r.machine_id, "")) for r in newest]})


async def plans(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    return json_response({"plans": [plan_wire(p) for p in await stores.plans(hub).plans(scenario.id)]})


async def run_command(request: web.Request) -> web.Response:
    """Queue a shell command on a target, signed with the operator token's delegation."""
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    delegate, delegation = principal.signer()
    scenario = await principal.scenario(hub, request.match_info["name"])
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError(ErrorCode.INVALID_REQUEST, 'send {"target": ..., "command": ...}')
    target, command, shell = body.get("target"), body.get("command"), body.get("shell")
    timeout = body.get("timeout")
    if not isinstance(target, str) or not target or not isinstance(command, str) or not command:
        raise RequestError(ErrorCode.INVALID_REQUEST, "target and command are non-empty strings")
    if shell is not None and shell not in SHELLS:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"shell is one of {', '.join(SHELLS)} (or null: the OS's own)")
    if timeout is not None and (not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0):
        raise RequestError(ErrorCode.INVALID_REQUEST, "timeout is a positive number of seconds (or null)")
    machines = sorted(await stores.machines(hub).machines(scenario.id), key=lambda m: m.name)
    try:
        targets = select(machines, target)
    except UnknownMachine as exc:
        raise RequestError(ErrorCode.NOT_FOUND, str(exc.args[0])) from None
    if not targets:
        raise RequestError(ErrorCode.NOT_FOUND, f"target {target!r} matches no machine of {scenario.name!r}")
    expires = min(time.time() + min(COMMAND_TTL, MAX_ORDER_TTL), delegation.expires or math.inf)
    order_body: dict[str, Any] = {"command": command, "shell": shell, "timeout": timeout, "env": {}, "cwd": None}
    queued = []
    for machine in targets:
        order = Order(uuid.uuid4().hex, scenario.name, machine.id, OrderKind.EXEC, order_body, expires, "")
        await queue_order(hub, scenario, order.signed_by_delegate(delegate, delegation), [])
        queued.append({"order_id": order.id, "machine": machine.name})
    return json_response({"orders": queued}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/me", me)
    app.router.add_get("/v1/scenarios", list_scenarios)
    app.router.add_get("/v1/scenarios/{name}", show_scenario)
    app.router.add_get("/v1/scenarios/{name}/events", events)
    app.router.add_get("/v1/scenarios/{name}/results", results)
    app.router.add_get("/v1/scenarios/{name}/plans", plans)
    app.router.add_post("/v1/scenarios/{name}/commands", run_command)
