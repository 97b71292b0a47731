"""JSON in and out of the REST API: bytes (command output, message payloads) become text, decoded leniently;
request bodies and query parameters are read within limits, refused with a clear error otherwise."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from protocol import ErrorCode
from server.core.errors import RequestError
from server.store import EventRecord

MAX_BODY = 1024 * 1024


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(jsonable(value), separators=(",", ":"))


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.json_response(value, status=status, dumps=dumps)


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} must be an integer") from None
    return max(low, min(high, value))


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise RequestError(ErrorCode.FRAME_TOO_LARGE, f"a request body is at most {MAX_BODY // 1024} KiB")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise RequestError(ErrorCode.FRAME_TOO_LARGE, f"a request body is at most {MAX_BODY // 1024} KiB")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"the body is not JSON: {exc}") from None


def event_wire(event: EventRecord) -> dict[str, Any]:
    return {"cursor": event.cursor, "ts": event.ts, "kind": event.kind, "machine": event.machine, "data": event.data}
