"""REST errors are JSON: ``{"error": {"code": ..., "message": ...}}`` with a fitting HTTP status, whether they
come from a handler (``RequestError``, the same codes the WebSocket protocol uses) or from aiohttp itself (an
unknown path, a wrong method)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from protocol import ErrorCode
from server.core.errors import RequestError

log = logging.getLogger(__name__)

REST_PREFIXES = ("/v1/tasks", "/v1/scenarios", "/v1/me", "/v1/openapi.json", "/v1/enroll")

STATUS = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.BAD_FIELD: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.REVOKED: 401,
    ErrorCode.EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.ALREADY_EXISTS: 409,
    ErrorCode.FRAME_TOO_LARGE: 413,
    ErrorCode.QUEUE_FULL: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.SHUTTING_DOWN: 503,
}
HTTP_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}  # fmt: skip


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    headers = {"WWW-Authenticate": 'Bearer realm="crc"'} if status == 401 else None
    return web.json_response({"error": body}, status=status, headers=headers, dumps=json.dumps)


def is_rest(path: str) -> bool:
    return path.startswith(REST_PREFIXES)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_rest(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except RequestError as exc:
        details = {k: v for k, v in exc.details.items() if isinstance(v, str | int | float | bool)}
        return error_response(STATUS.get(exc.code, 500), exc.code.value, exc.message, **details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, HTTP_CODES.get(exc.status, "http_error"), exc.reason)
