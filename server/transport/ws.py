"""The WebSocket endpoint ``/v1/ws``: handshake, then a read loop dispatching typed messages to handlers."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time

import aiohttp
from aiohttp import web

from protocol import (
    Authenticated,
    CrcError,
    Envelope,
    ErrorCode,
    HubSession,
    MsgType,
    ProtocolError,
    PublicKey,
    Role,
)
from protocol.envelope import decode_pre_auth
from protocol.messages import Auth, Pong, Welcome
from protocol.session import plain_error_frame
from server.backplane import BackplaneUnavailable
from server.core import stores
from server.core.appkeys import HANDLERS_KEY, HUB_KEY
from server.core.connection import Connection, log_safe, new_id
from server.core.dispatch import HandlerTable, dispatch
from server.core.hub import Hub
from server.guard import TokenBucket
from server.store import StoreError

log = logging.getLogger(__name__)


async def _lookup_key(hub: Hub, envelope: Envelope) -> tuple[str, PublicKey | None]:
    """The claimed role and the enrolled key of the id an AUTH envelope claims (the session then verifies it)."""
    if not isinstance(envelope.body, Auth):
        return "", None  # accept() refuses it
    auth = envelope.body
    if auth.role == Role.MASTER.value:
        master = await stores.masters(hub).master(auth.client_id)
        return auth.role, None if master is None else PublicKey.from_text(master.public_key)
    if auth.role == Role.DAEMON.value:
        machine = await stores.machines(hub).machine(auth.client_id)
        return auth.role, None if machine is None else PublicKey.from_text(machine.public_key)
    return auth.role, None


async def _handshake(hub: Hub, ws: web.WebSocketResponse) -> tuple[HubSession, Authenticated] | None:
    settings = hub.settings
    session = HubSession(
        hub.identity, secrets.token_bytes(32), secrets.token_bytes(32),
        max_frame=settings.max_frame, max_skew=settings.max_skew,
    )  # fmt: skip
    try:
        await ws.send_bytes(session.challenge(new_id(), time.time()))
    except (ConnectionError, RuntimeError):
        return None  # gone before the challenge
    try:
        msg = await ws.receive(timeout=settings.handshake_timeout)
    except TimeoutError:
        await _refuse(hub, ws, ProtocolError(ErrorCode.HANDSHAKE_FAILED, "no auth within the handshake timeout"))
        return None
    if msg.type != aiohttp.WSMsgType.BINARY:
        if msg.type in (aiohttp.WSMsgType.TEXT,):
            await _refuse(hub, ws, ProtocolError(ErrorCode.MALFORMED_FRAME, "frames are binary msgpack"))
        return None
    role = ""
    try:
        # Decoded once, within the pre-authentication limits: nobody known sent it yet, so it may cost little.
        envelope = decode_pre_auth(msg.data)
        role, key = await _lookup_key(hub, envelope)
        peer = session.accept(envelope, lambda _id, _role: key, time.time())
    except ProtocolError as exc:
        # The role and the error's text come from an unauthenticated frame: never let them forge log lines.
        shown_role = role if role in _ROLES else "peer"
        log.info("refused a %s from %s: %s", shown_role, _remote(ws), log_safe(str(exc)))
        await _refuse(hub, ws, exc)
        return None
    return session, peer


def client_source(request: web.Request) -> str:
    """The peer's address; behind a load balancer on this host, the client it forwarded for."""
    peer = request.remote or "?"
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and peer in ("127.0.0.1", "::1"):
        return forwarded.split(",")[-1].strip() or peer
    return peer


_ROLES = frozenset(role.value for role in Role)


def _remote(ws: web.WebSocketResponse) -> str:
    peer = ws.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


async def _refuse(hub: Hub, ws: web.WebSocketResponse, error: ProtocolError) -> None:
    # A peer that sends a bad frame and hangs up at once must still be counted as a failure, not end in a traceback.
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_bytes(plain_error_frame(new_id(), hub.id, time.time(), error))
        await ws.close()


async def _refuse_unavailable(hub: Hub, ws: web.WebSocketResponse, exc: StoreError | BackplaneUnavailable) -> None:
    """The store (or backplane) failed while authenticating a peer: answer ``unavailable`` and log one line.

    The peer is not authenticated yet, so it is told only that the hub's store is down, not where or why.
    """
    backend = "store" if isinstance(exc, StoreError) else "backplane"
    hub.metrics.backend_errors.labels(backend=backend).inc()
    hub.metrics.handshake_failures.inc()
    log.error("refused a handshake from %s: the hub's %s is unavailable: %s", _remote(ws), backend, exc)
    error = ProtocolError(ErrorCode.UNAVAILABLE, f"the hub is unavailable: its {backend} is down; try again shortly")
    with contextlib.suppress(ConnectionError, RuntimeError):  # the peer may have gone already
        await _refuse(hub, ws, error)


async def _attach(hub: Hub, conn: Connection) -> bool:
    """Register the session; a daemon learns its scenario here (and is refused if it was just revoked)."""
    if conn.role is Role.MASTER:
        hub.attach_master(conn)
        return True
    machine = await stores.machines(hub).machine(conn.id)
    scenario = None if machine is None else await stores.scenarios(hub).scenario(machine.scenario_id)
    if machine is None or scenario is None:
        await conn.close(ErrorCode.REVOKED, "this machine's key is no longer enrolled")
        return False
    conn.scenario_id, conn.scenario_name, conn.machine_name = scenario.id, scenario.name, machine.name
    await hub.attach_daemon(conn)
    return True


async def _dispatch(hub: Hub, handlers: HandlerTable, conn: Connection, envelope: Envelope) -> None:
    if envelope.type is MsgType.PING:
        conn.send(Pong(), reply_to=envelope.id)
        return
    if envelope.type is MsgType.PONG:
        return  # receiving it already refreshed the peer's heartbeat
    hub.metrics.count_message(envelope.type.value)
    await dispatch(hub, handlers, conn, envelope)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    if hub.life.draining:
        raise web.HTTPServiceUnavailable(text="this hub replica is draining; connect to another one")
    source = client_source(request)
    refusal = hub.sessions.guard.refusal(source, time.monotonic())
    if refusal is not None:
        raise web.HTTPTooManyRequests(text=refusal)
    # Frames over the limit are still read (up to 4x) so the peer gets a typed FRAME_TOO_LARGE, not a bare close.
    # A short close timeout: a peer dropped for silence is usually gone, and waiting for its close frame would
    # delay marking it offline.
    ws = web.WebSocketResponse(max_msg_size=hub.settings.max_frame * 4, compress=False, autoping=True, timeout=2.0)
    await ws.prepare(request)
    hub.sessions.guard.pending += 1
    try:
        shaken = await _handshake(hub, ws)
    except (StoreError, BackplaneUnavailable) as exc:
        # Not the peer's fault, so not a failed handshake against its address: it may retry as soon as it likes.
        await _refuse_unavailable(hub, ws, exc)
        return ws
    finally:
        hub.sessions.guard.pending -= 1
    if shaken is None:
        hub.sessions.guard.failed(source, time.monotonic())
        hub.metrics.handshake_failures.inc()
        return ws
    session, peer = shaken
    conn = Connection(ws, session, peer, hub.id)
    conn.budget = TokenBucket(hub.settings.session_rate, hub.settings.session_burst)
    conn.send(
        Welcome(
            session_id=session.session_id,
            heartbeat_interval=hub.settings.heartbeat_interval,
            dead_after=hub.settings.dead_after,
            max_frame=hub.settings.max_frame,
            info={"hub_id": hub.id, "role": peer.role.value},
        )
    )
    hub.sessions.live.add(conn)
    try:
        if await _attach(hub, conn):
            await _read_loop(hub, request.app[HANDLERS_KEY], conn)
    except (StoreError, BackplaneUnavailable) as exc:
        # Only while attaching (the read loop answers these per request): a daemon's record cannot be read now.
        backend = "store" if isinstance(exc, StoreError) else "backplane"
        hub.metrics.backend_errors.labels(backend=backend).inc()
        log.error(
            "could not attach %s %s: the hub's %s is unavailable: %s", peer.role.value, peer.client_id, backend, exc
        )
        await conn.close(ErrorCode.UNAVAILABLE, f"the hub is unavailable: its {backend} is down; try again shortly")
    except CrcError as exc:
        log.warning("session of %s %s ended: %s", peer.role.value, peer.client_id, exc)
    finally:
        hub.sessions.live.discard(conn)
        conn.uploads.clear()  # what it uploaded and did not use goes with it
        await hub.detach(conn)
        if not conn.closed:
            await conn.close()
    return ws


async def _read_loop(hub: Hub, handlers: HandlerTable, conn: Connection) -> None:
    async for msg in conn.ws:
        if msg.type != aiohttp.WSMsgType.BINARY:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await conn.fail(ProtocolError(ErrorCode.MALFORMED_FRAME, "frames are binary msgpack"))
            break
        conn.last_received = time.monotonic()
        try:
            envelope = conn.session.open(msg.data, time.time())
        except ProtocolError as exc:
            log.info("closing %s %s: %s", conn.role.value, conn.id, exc)
            await conn.fail(exc)
            break
        if envelope.sender != conn.id:
            await conn.fail(ProtocolError(ErrorCode.BAD_FIELD, "sender is not the authenticated peer"))
            break
        if not conn.budget.take(time.monotonic()):
            if conn.budget_warned + 1.0 < time.monotonic():  # say it at most once a second, not per message
                conn.budget_warned = time.monotonic()
                conn.reply_error(
                    envelope, ErrorCode.RATE_LIMITED,
                    f"over {hub.settings.session_rate:.0f} messages/s: this message was dropped",
                )  # fmt: skip
            continue
        await _dispatch(hub, handlers, conn, envelope)
        if conn.closed:
            break
