"""Orders over REST: a scenario's stored results for scripts and the dashboard, and, for operators, running a
command (signed with the token's delegation, so daemons check it against their master's key as always)."""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from aiohttp import web

from protocol import ErrorCode, Order, OrderKind
from protocol.order_bodies import SHELLS, ExecBody
from protocol.orders import MAX_ORDER_TTL
from protocol.sealed_orders import is_sealed_body
from protocol.targeting import UnknownMachine, select
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.errors import RequestError
from server.features.orders.handlers import queue_order
from server.store import OrderRecord
from server.transport.rest.auth import authenticate
from server.transport.rest.encoding import json_response, query_int, read_json

RESULTS_PAGE = 100
OUTPUT_LIMIT = 64 * 1024  # per result and stream, in lists
COMMAND_TTL = 3600.0

routes = web.RouteTableDef()


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
        "sealed": is_sealed_body(body),
    }  # fmt: skip


@routes.get("/v1/scenarios/{name}/results")
async def results(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    limit = query_int(request, "limit", RESULTS_PAGE, 1, RESULTS_PAGE)
    wanted = request.query.getall("order_id", [])
    names = {m.id: m.name for m in await stores.machines(hub).machines(scenario.id)}
    records = await stores.orders(hub).orders(scenario.id, wanted or None)
    newest = sorted(records, key=lambda r: (r.created, r.id), reverse=True)[:limit]
    return json_response({"results": [result_wire(r, names.get(r.machine_id, "")) for r in newest]})


@routes.post("/v1/scenarios/{name}/commands")
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
    order_body = ExecBody(command, shell=shell, timeout=timeout).to_wire()
    queued = []
    for machine in targets:
        order = Order(uuid.uuid4().hex, scenario.name, machine.id, OrderKind.EXEC, order_body, expires, "")
        await queue_order(hub, scenario, order.signed_by_delegate(delegate, delegation), [])
        queued.append({"order_id": order.id, "machine": machine.name})
    return json_response({"orders": queued}, status=202)
