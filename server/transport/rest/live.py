"""Live streams of a scenario for the dashboard (a WebSocket, ``/v1/live``) and for scripts (server-sent events,
``/v1/scenarios/{name}/events/stream``): its events in cursor order from where the client left off, then live,
interleaved with live output of running commands.

Like master subscriptions, a feed reads the log through ``server.core.pump.EventPump``, so replay and live events
never interleave out of order and a slow client simply catches up. A browser cannot
set headers on a WebSocket, so the token comes in the first message instead (never in the URL, where logs would
keep it). Tokens are checked again every ``RECHECK`` seconds: revoking one ends its streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web

from protocol import ErrorCode
from protocol.messages import Output
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.core.errors import RequestError
from server.core.hub import Hub
from server.core.pump import EventPump
from server.store import ScenarioRecord, StoreError
from server.transport.rest.auth import Principal, authenticate, principal_for
from server.transport.rest.encoding import dumps, event_wire
from server.transport.ws import client_source

log = logging.getLogger(__name__)

PAGE = 200
HEARTBEAT = 15.0  # seconds between keep-alives on an idle stream (proxies close silent connections)
RECHECK = 30.0
MAX_PENDING_OUTPUT = 2000  # chunks kept for a slow client; older ones are dropped (results keep everything)
FIRST_MESSAGE_TIMEOUT = 10.0
# The sign-in message (a token, a scenario name, a cursor) is small; the browser sends nothing after it.
FIRST_MESSAGE_LIMIT = 4 * 1024


class LiveFeed:
    """One client's view of one scenario: a ``ScenarioListener`` turned into an async stream of JSON-ready items
    (the scenario's events through ``EventPump``, with live output between pages)."""

    def __init__(self, hub: Hub, principal: Principal, scenario: ScenarioRecord, after: int) -> None:
        self.hub = hub
        self.principal = principal
        self.scenario = scenario
        self.pump = EventPump(stores.events(hub), scenario.id, after, page=PAGE, idle=HEARTBEAT)
        self._outputs: deque[Output] = deque(maxlen=MAX_PENDING_OUTPUT)

    def notify(self) -> None:
        self.pump.notify()

    def output(self, output: Output) -> None:
        self._outputs.append(output)
        self.pump.notify()

    def close(self) -> None:
        self.pump.close()

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        await self.hub.listen(self.scenario.id, self)
        checked = time.monotonic()
        try:
            async for page in self.pump.pages():
                if page.quiet and not page.events and not self._outputs:
                    yield {"type": "ping", "head": self.pump.cursor}
                for event in page.events:
                    yield {"type": "event", **event_wire(event)}
                while self._outputs:
                    chunk = self._outputs.popleft()
                    yield {"type": "output", "order_id": chunk.order_id, "machine": chunk.machine,
                           "stream": chunk.stream, "data": chunk.data}  # fmt: skip
                if time.monotonic() - checked > RECHECK:
                    await principal_for(self.hub, self.principal.access.text())  # revoked or expired: ends here
                    checked = time.monotonic()
        finally:
            await self.hub.stop_listening(self.scenario.id, self)


def _start_cursor(after: Any, head: int) -> int:
    """Where a stream starts: after the client's last cursor (0: from the beginning; -1: only what comes next)."""
    if isinstance(after, bool) or not isinstance(after, int):
        raise RequestError(ErrorCode.INVALID_REQUEST, "after is an event cursor (an integer)")
    return head if after < 0 else min(after, head)


async def _first_message(ws: web.WebSocketResponse) -> dict[str, Any]:
    """The sign-in message, decoded within ``FIRST_MESSAGE_LIMIT`` bytes and Python's nesting limit.

    Raises:
        RequestError: INVALID_REQUEST for anything but a JSON object (too late, too big, too deep, not JSON);
            UNAUTHORIZED for an object without a token.
    """
    try:
        message = await ws.receive(timeout=FIRST_MESSAGE_TIMEOUT)
    except TimeoutError:
        raise RequestError(ErrorCode.INVALID_REQUEST, "no first message within the time limit") from None
    if message.type is not WSMsgType.TEXT:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"first send a JSON object (text, at most {FIRST_MESSAGE_LIMIT} bytes)"
        )
    try:
        first = json.loads(message.data)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        raise RequestError(ErrorCode.INVALID_REQUEST, "first send a JSON object") from None
    if not isinstance(first, dict) or not isinstance(first.get("token"), str):
        raise RequestError(ErrorCode.UNAUTHORIZED, 'first send {"token": ..., "scenario": ..., "after": N}')
    if not isinstance(first.get("scenario") or "", str):
        raise RequestError(ErrorCode.INVALID_REQUEST, "scenario is a scenario's name")
    return first


async def _refuse(ws: web.WebSocketResponse, exc: RequestError) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):  # a peer that hung up (or sent too much) is gone
        await ws.send_str(dumps({"type": "error", "code": exc.code.value, "message": exc.message}))
        await ws.close(code=4401 if exc.code is ErrorCode.UNAUTHORIZED else 4400)


async def live_socket(request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/live``: first message ``{"token", "scenario", "after"}``, then ``welcome`` and the feed."""
    hub = request.app[HUB_KEY]
    source = client_source(request)
    if hub.sessions.guard.too_many_failures(source, time.monotonic()):
        raise web.HTTPTooManyRequests(text="too many failed sign-ins from this address; try again in a minute")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT * 2, max_msg_size=FIRST_MESSAGE_LIMIT)
    await ws.prepare(request)
    try:
        first = await _first_message(ws)
    except RequestError as exc:
        # Nobody signed in yet: a message that is not a sign-in counts against the address like a wrong token.
        hub.sessions.guard.failed(source, time.monotonic())
        await _refuse(ws, exc)
        return ws
    try:
        principal = await principal_for(hub, first["token"])
        scenario = await principal.scenario(hub, first.get("scenario") or None)
        head = await stores.events(hub).last_cursor(scenario.id)
        after = _start_cursor(first.get("after", 0), head)
    except RequestError as exc:
        if exc.code is ErrorCode.UNAUTHORIZED:  # guessing over the socket counts like guessing over REST
            hub.sessions.guard.failed(source, time.monotonic())
        await _refuse(ws, exc)
        return ws
    await ws.send_str(dumps({"type": "welcome", "scenario": scenario.name, "role": principal.token.role,
                             "head": head, "after": after}))  # fmt: skip
    feed = LiveFeed(hub, principal, scenario, after)

    async def read_until_closed() -> None:
        async for message in ws:
            if message.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        feed.close()

    reader = asyncio.create_task(read_until_closed())
    try:
        async for item in feed.items():
            if ws.closed:
                break
            await ws.send_str(dumps(item))
    except RequestError as exc:
        with contextlib.suppress(ConnectionError):
            await ws.send_str(dumps({"type": "error", "code": exc.code.value, "message": exc.message}))
    except (ConnectionError, StoreError) as exc:
        log.info("live stream of %s ended: %s", scenario.name, exc)
    finally:
        reader.cancel()
        await ws.close()
    return ws


async def event_stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/scenarios/{name}/events/stream``: server-sent events; resumes from ``Last-Event-ID``."""
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    raw = request.headers.get("Last-Event-ID") or request.query.get("after", "0")
    try:
        after = _start_cursor(int(raw), await stores.events(hub).last_cursor(scenario.id))
    except ValueError:
        raise RequestError(ErrorCode.INVALID_REQUEST, "after (or Last-Event-ID) is an event cursor") from None
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
    })  # fmt: skip
    await response.prepare(request)
    await response.write(b"retry: 2000\n\n")
    feed = LiveFeed(hub, principal, scenario, after)
    try:
        async for item in feed.items():
            kind = item.pop("type")
            if kind == "event":
                frame = f"id: {item['cursor']}\nevent: {item['kind']}\ndata: {dumps(item)}\n\n"
            elif kind == "output":
                frame = f"event: output\ndata: {dumps(item)}\n\n"
            else:
                frame = ": ping\n\n"
            await response.write(frame.encode())
    except RequestError as exc:
        with contextlib.suppress(ConnectionError):
            await response.write(
                f"event: error\ndata: {dumps({'code': exc.code.value, 'message': exc.message})}\n\n".encode()
            )
    except (ConnectionError, StoreError) as exc:
        log.info("event stream of %s ended: %s", scenario.name, exc)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/live", live_socket)
    app.router.add_get("/v1/scenarios/{name}/events/stream", event_stream)
