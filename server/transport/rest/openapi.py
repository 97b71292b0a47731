"""The REST API described in OpenAPI 3.1 (``GET /v1/openapi.json``) and a readable page of it (``GET /v1/docs``),
both generated here from one description so they cannot drift apart; tests check the document against the
running API with schemathesis."""

from __future__ import annotations

import html
from typing import Any

from aiohttp import web

from protocol.plans import GorchState, StepState
from server.transport.rest.encoding import json_response

VERSION = "1"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


NUMBER = {"type": "number"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
STRING = {"type": "string"}
INTEGER = {"type": "integer"}
ANY_OBJECT = {"type": "object"}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(["error"], error=_obj(["code", "message"], code=STRING, message=STRING, details=ANY_OBJECT)),
    "Me": _obj(
        ["token", "role", "scenario"],
        token=STRING,
        role={"enum": ["viewer", "operator"]},
        scenario={"type": "string", "description": "the scenario the token is limited to; empty: all"},
        expires=NUMBER,
        label=STRING,
    ),
    "ScenarioSummary": _obj(
        ["name", "created", "machines", "ready"], name=STRING, created=NUMBER, machines=INTEGER, ready=INTEGER
    ),
    "Machine": _obj(
        ["id", "name", "os", "role", "status"],
        id=STRING,
        name=STRING,
        os={"enum": ["linux", "windows"]},
        role=STRING,
        status={"enum": ["offline", "connected", "ready"]},
        facts=ANY_OBJECT,
        ips={"type": "array", "items": STRING},
        last_seen=NULLABLE_NUMBER,
        labels={"type": "object", "additionalProperties": STRING},
        public_key=STRING,
        former_keys={"type": "array", "items": STRING},
    ),
    "Scenario": _obj(
        ["name", "created", "cursor", "machines", "more"],
        id=STRING,
        name=STRING,
        created=NUMBER,
        cursor=INTEGER,
        machines={"type": "array", "items": _ref("Machine")},
        more={"type": "boolean", "description": "more machines follow: ask again with after=LAST_NAME"},
    ),
    "Event": _obj(
        ["cursor", "ts", "kind", "machine", "data"],
        cursor=INTEGER,
        ts=NUMBER,
        kind=STRING,
        machine=STRING,
        data=ANY_OBJECT,
    ),
    "Result": _obj(
        ["order_id", "machine", "kind", "state", "created", "updated"],
        order_id=STRING,
        machine=STRING,
        kind=STRING,
        state=STRING,
        command=STRING,
        job={"type": ["string", "null"]},
        plan_step={"type": ["string", "null"]},
        exit_code={"type": ["integer", "null"]},
        error=STRING,
        stdout=STRING,
        stderr=STRING,
        created=NUMBER,
        updated=NUMBER,
        duration=NULLABLE_NUMBER,
        delegated_by={"type": ["string", "null"]},
        sealed={"type": "boolean", "description": "a sealed scenario's order: command and output are sealed"},
    ),
    "PlanStep": _obj(
        ["id", "name", "target", "depends_on", "state", "gorch_state"],
        id=STRING,
        name=STRING,
        target=STRING,
        depends_on={"type": "array", "items": STRING},
        state={"enum": [s.value for s in StepState]},
        gorch_state={"enum": [int(s) for s in GorchState]},
        orders={"type": "array", "items": STRING},
        waits_for={"type": "array", "items": STRING},
    ),
    "Plan": _obj(
        ["id", "name", "done", "created", "updated", "steps"],
        id=STRING,
        name=STRING,
        done={"type": "boolean"},
        created=NUMBER,
        updated=NUMBER,
        steps={"type": "array", "items": _ref("PlanStep")},
    ),
    "CommandRequest": {
        **_obj(
            ["target", "command"],
            target={"type": "string", "minLength": 1, "examples": ["all", "role:web"]},
            command={"type": "string", "minLength": 1},
            shell={"enum": ["sh", "powershell", None]},
            timeout={"type": ["number", "null"], "exclusiveMinimum": 0},
        ),
        "additionalProperties": False,
    },
    "CommandQueued": _obj(
        ["orders"], orders={"type": "array", "items": _obj(["order_id", "machine"], order_id=STRING, machine=STRING)}
    ),
    "GorchNode": _obj(
        ["id"],
        id=INTEGER,
        name=STRING,
        target=STRING,
        engine=STRING,
        artifact=STRING,
        args={"type": ["array", "null"], "items": STRING},
        output={"type": ["object", "null"]},
    ),
    "GorchTask": _obj(
        ["name", "digraph", "nodes"],
        name=STRING,
        state=INTEGER,
        digraph={
            "type": "array",
            "items": {"enum": [0, 1]},
            "description": "row-major n x n: a 1 at row i, column j means node j runs after node i",
        },
        nodes={"type": "array", "items": _ref("GorchNode")},
    ),
    "TaskCreated": _obj(["id"], id=STRING, scenario=STRING),
    "TaskSummary": _obj(
        ["id", "name", "scenario", "state", "state_code", "start_date"],
        id=STRING,
        name=STRING,
        scenario=STRING,
        state=STRING,
        state_code=INTEGER,
        start_date=STRING,
        stop_date={"type": ["string", "null"]},
    ),
    "Task": _obj(
        ["id", "name", "scenario", "state", "digraph", "nodes"],
        id=STRING,
        name=STRING,
        scenario=STRING,
        state={"enum": [int(s) for s in GorchState]},
        digraph={"type": "array", "items": INTEGER},
        nodes={"type": "array", "items": {**_ref("GorchNode"), "unevaluatedProperties": True}},
        created=NUMBER,
        updated=NUMBER,
    ),
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = _ref("Error")


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "invalid request",
        401: "no, unknown, revoked or expired token",
        403: "not allowed for this token",
        404: "not found (or another master's)",
        405: "method not allowed",
        409: "already exists",
        413: "body too large",
        429: "rate limited (requests per token, failed sign-ins per address) or too many queued",
        503: "hub unavailable",
    }
    return {str(s): _json(ERROR, text[s]) for s in sorted({401, 429, *statuses})}


NAME = {"name": "name", "in": "path", "required": True, "schema": STRING, "description": "the scenario"}
SCENARIO_QUERY = {
    "name": "scenario",
    "in": "query",
    "required": False,
    "schema": STRING,
    "description": "the scenario (tokens limited to one scenario need not name it)",
}


def _int_query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": INTEGER, "description": description}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: Any = None,
    operator: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary + (" (operator tokens only)" if operator else ""), "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


PATHS: dict[str, Any] = {
    "/v1/me": {"get": _op("The token's role and scope", {"200": _json(_ref("Me"), "the token"), **_errors()})},
    "/v1/scenarios": {
        "get": _op(
            "Scenarios the token sees",
            {
                "200": _json(
                    _obj(["scenarios"], scenarios={"type": "array", "items": _ref("ScenarioSummary")}), "scenarios"
                ),
                **_errors(404),
            },
        )
    },
    "/v1/scenarios/{name}": {
        "get": _op(
            "A scenario and one page of its machines",
            {"200": _json(_ref("Scenario"), "the scenario"), **_errors(400, 403, 404)},
            params=[
                NAME,
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": STRING,
                    "description": "machines after this name",
                },
                _int_query("limit", "machines per page (at most 250)"),
            ],
        )
    },
    "/v1/scenarios/{name}/events": {
        "get": _op(
            "Events after a cursor, oldest first",
            {
                "200": _json(
                    _obj(["events", "head"], events={"type": "array", "items": _ref("Event")}, head=INTEGER),
                    "a page of events (head: the newest cursor)",
                ),
                **_errors(400, 403, 404),
            },
            params=[
                NAME,
                _int_query("after", "the last cursor seen (0: from the start)"),
                _int_query("limit", "at most this many (<= 500)"),
            ],
        )
    },
    "/v1/scenarios/{name}/events/stream": {
        "get": _op(
            "Server-sent events: the scenario's events from ?after= (or Last-Event-ID), then live, and live command "
            "output (event: output)",
            {
                "200": {"description": "text/event-stream", "content": {"text/event-stream": {"schema": STRING}}},
                **_errors(400, 403, 404),
            },
            params=[NAME, _int_query("after", "resume after")],
        )
    },
    "/v1/scenarios/{name}/results": {
        "get": _op(
            "Stored results, newest first",
            {
                "200": _json(_obj(["results"], results={"type": "array", "items": _ref("Result")}), "results"),
                **_errors(400, 403, 404),
            },
            params=[
                NAME,
                _int_query("limit", "at most this many (<= 100)"),
                {
                    "name": "order_id",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "array", "items": STRING},
                    "style": "form",
                    "explode": True,
                },
            ],
        )
    },
    "/v1/scenarios/{name}/plans": {
        "get": _op(
            "Plans and their steps' states",
            {
                "200": _json(_obj(["plans"], plans={"type": "array", "items": _ref("Plan")}), "plans"),
                **_errors(403, 404),
            },
            params=[NAME],
        )
    },
    "/v1/scenarios/{name}/commands": {
        "post": _op(
            "Run a shell command on a target",
            {
                "202": _json(_ref("CommandQueued"), "queued, one order per machine"),
                **_errors(400, 403, 404, 413, 429, 503),
            },
            params=[NAME],
            body=_ref("CommandRequest"),
            operator=True,
        )
    },
    "/v1/tasks": {
        "post": _op(
            "Run a gorchestrator task (its nodes run on their target, or ?target=)",
            {"202": _json(_ref("TaskCreated"), "accepted"), **_errors(400, 403, 404, 413, 503)},
            params=[
                SCENARIO_QUERY,
                {
                    "name": "target",
                    "in": "query",
                    "required": False,
                    "schema": STRING,
                    "description": "where nodes without a target run",
                },
            ],
            body=_ref("GorchTask"),
            operator=True,
        ),
        "get": _op(
            "Tasks (every plan) of the token's scenarios",
            {
                "200": _json(_obj(["tasks"], tasks={"type": "array", "items": _ref("TaskSummary")}), "tasks"),
                **_errors(400, 403, 404),
            },
            params=[SCENARIO_QUERY],
        ),
    },
    "/v1/tasks/{id}": {
        "parameters": [{"name": "id", "in": "path", "required": True, "schema": STRING}],
        "get": _op(
            "A task with each node's state (gorchestrator's numbering) and results",
            {"200": _json(_ref("Task"), "the task"), **_errors(404)},
        ),
        "delete": _op(
            "Cancel a task", {"200": _json(_ref("Task"), "the task as it ends"), **_errors(403, 404)}, operator=True
        ),
    },
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "CloudRemoteControl hub API",
        "version": VERSION,
        "description": (
            "Read scenarios, machines, events, results and plans; run commands and gorchestrator tasks. "
            "Authenticate with `Authorization: Bearer <token>` (`crc token create --role viewer|operator`). "
            'Errors are `{"error": {"code", "message"}}`. The dashboard\'s live feed is a WebSocket at '
            '`/v1/live`: send `{"token", "scenario", "after"}` first, then receive `welcome`, `event` and `output` '
            "messages (not describable in OpenAPI)."
        ),
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"token": {"type": "http", "scheme": "bearer", "bearerFormat": "crc_<id>.<secret>"}},
    },
    "security": [{"token": []}],
    "paths": PATHS,
}


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)


def _docs_html() -> str:
    rows = []
    for path, item in PATHS.items():
        for method, op in item.items():
            if method == "parameters":
                continue
            params = ", ".join(p["name"] for p in op.get("parameters", []) + item.get("parameters", []))
            statuses = ", ".join(op["responses"])
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td><td>{statuses}</td></tr>"
            )
    info = DOCUMENT["info"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>CRC hub API</title></head><body>"
        f"<h1>{html.escape(info['title'])} v{info['version']}</h1><p>{html.escape(info['description'])}</p>"
        '<p>Machine-readable: <a href="/v1/openapi.json">/v1/openapi.json</a> (OpenAPI 3.1).</p>'
        "<table border=1 cellpadding=4><tr><th>method</th><th>path</th><th>what</th><th>parameters</th>"
        f"<th>statuses</th></tr>{''.join(rows)}</table></body></html>"
    )


DOCS_HTML = _docs_html()


async def docs(request: web.Request) -> web.Response:
    return web.Response(
        text=DOCS_HTML, content_type="text/html", headers={"Content-Security-Policy": "default-src 'none'"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_get("/v1/docs", docs)
