"""Operator endpoints on the hub's own port, accepted from the loopback interface only: drain, rebalance and
removing a master.

They carry no credentials, so they must not be reachable from elsewhere; a load balancer in front forwards
only ``/v1/ws`` and ``/healthz`` (see deploy/).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

from aiohttp import web

from server.ws import HUB_KEY

STOP_KEY = web.AppKey("stop", asyncio.Event)


def _from_loopback(request: web.Request) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


def _require_loopback(request: web.Request) -> None:
    if not _from_loopback(request) or "X-Forwarded-For" in request.headers:
        raise web.HTTPForbidden(text="admin endpoints answer on the loopback interface only")


async def drain(request: web.Request) -> web.Response:
    """Start draining; the hub process exits once the drain is done."""
    _require_loopback(request)
    hub = request.app[HUB_KEY]
    stop = request.app[STOP_KEY]

    async def drain_then_stop() -> None:
        await hub.drain()
        stop.set()

    if not hub.draining:
        request.app["drain_task"] = asyncio.create_task(drain_then_stop())
    return web.json_response({"draining": True, "daemons": len(hub.daemons)}, status=202)


async def rebalance(request: web.Request) -> web.Response:
    _require_loopback(request)
    try:
        share = float(request.query.get("share", "0.5"))
    except ValueError:
        raise web.HTTPBadRequest(text="share must be a number between 0 and 1") from None
    if not 0 <= share <= 1:
        raise web.HTTPBadRequest(text="share must be a number between 0 and 1")
    moved = request.app[HUB_KEY].rebalance(share)
    return web.json_response({"asked_to_reconnect": moved})


async def remove_master(request: web.Request) -> web.Response:
    """Remove an enrolled master: its scenarios are deleted (machine keys revoked), its sessions closed."""
    _require_loopback(request)
    name = request.query.get("name", "")
    if not name:
        raise web.HTTPBadRequest(text="give the master's name: ?name=NAME")
    removed = await request.app[HUB_KEY].remove_master(name)
    if removed is None:
        raise web.HTTPNotFound(text=f"no master named {name!r} is enrolled")
    return web.json_response(removed)


async def health(request: web.Request) -> web.Response:
    """Liveness for load balancers: 503 while draining or when the backplane is down."""
    hub = request.app[HUB_KEY]
    healthy = not hub.draining and hub.backplane.available
    return web.json_response(
        {
            "ok": healthy,
            "hub_id": hub.id,
            "replica": hub.replica_id,
            "draining": hub.draining,
            "backplane": hub.backplane.available,
            "uptime": round(time.time() - hub.started, 3),
            "daemons": len(hub.daemons),
            "masters": sum(len(c) for c in hub.masters.values()),
        },
        status=200 if healthy else 503,
    )


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", health)
    app.router.add_post("/v1/admin/drain", drain)
    app.router.add_post("/v1/admin/rebalance", rebalance)
    app.router.add_post("/v1/admin/remove-master", remove_master)
