"""Operator endpoints on the hub's own port: drain, rebalance and removing a master.

They answer only on the loopback interface, never to a request forwarded by a load balancer (``X-Forwarded-For``;
a load balancer in front forwards only ``/v1/ws``, ``/healthz`` and the API, see deploy/), and only with the
hub's admin token: 32 random bytes in ``DATA_DIR/admin.token`` (0600), made when the hub starts. Loopback alone
is not enough: anything that relays to the hub's loopback without saying so (an SSH tunnel, socat) would expose
them. ``crc hub drain|rebalance|remove-master`` run on the hub's machine and read the token from the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import secrets
import stat
import time
from pathlib import Path

from aiohttp import web

from server.core.appkeys import HUB_KEY

log = logging.getLogger(__name__)

STOP_KEY = web.AppKey("stop", asyncio.Event)
ADMIN_TOKEN_KEY = web.AppKey("admin_token", str)
ADMIN_TOKEN_FILE = "admin.token"
_MIN_TOKEN_LENGTH = 32


def admin_token_path(data_dir: Path) -> Path:
    return data_dir / ADMIN_TOKEN_FILE


def read_admin_token(data_dir: Path) -> str:
    """The admin token the hub on ``data_dir`` accepts.

    Raises:
        OSError: the file is missing or unreadable (FileNotFoundError, PermissionError...).
        ValueError: it holds no usable token.
    """
    token = admin_token_path(data_dir).read_text(encoding="ascii", errors="replace").strip()
    if len(token) < _MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise ValueError(f"{admin_token_path(data_dir)} holds no admin token")
    return token


def load_or_create_admin_token(data_dir: Path) -> str:
    """The hub's admin token: read from the data dir, or made (0600) when missing or unusable."""
    path = admin_token_path(data_dir)
    try:
        token = read_admin_token(data_dir)
    except FileNotFoundError:
        pass
    except ValueError:
        log.warning("%s holds no usable admin token: making a new one", path)
        _write_token(path, replace=True)
    else:
        _keep_private(path)
        return token
    _write_token(path, replace=False)
    return read_admin_token(data_dir)


def _write_token(path: Path, *, replace: bool) -> None:
    # Written whole to a private temporary file, then put in place in one step: a replica starting on the same
    # data dir at the same moment reads either no file or a complete one, and the first one made is kept.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        if replace:
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileExistsError):  # another process made it first: use that one
                os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _keep_private(path: Path) -> None:
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        try:
            path.chmod(0o600)
            log.warning("%s was readable by others: made it 0600", path)
        except OSError as exc:
            log.warning("%s is readable by others and could not be made 0600: %s", path, exc)


def _from_loopback(request: web.Request) -> bool:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer:
        return False
    try:
        return ipaddress.ip_address(peer[0]).is_loopback
    except ValueError:
        return False


def _require_admin(request: web.Request) -> None:
    """Loopback, not forwarded, and the admin token as ``Authorization: Bearer TOKEN`` (compared in constant time).

    Raises:
        web.HTTPForbidden: not from the loopback interface, or forwarded.
        web.HTTPUnauthorized: without the right token.
    """
    if not _from_loopback(request) or "X-Forwarded-For" in request.headers:
        raise web.HTTPForbidden(text="admin endpoints answer on the loopback interface only")
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[ADMIN_TOKEN_KEY].encode("ascii")
    matches = hmac.compare_digest(presented.strip().encode("utf-8", "replace"), expected)
    if scheme.lower() != "bearer" or not matches:
        raise web.HTTPUnauthorized(
            text="admin endpoints need the hub's admin token (DATA_DIR/admin.token): run "
            "`crc hub drain|rebalance|remove-master --data-dir DATA_DIR` on the hub's machine",
            headers={"WWW-Authenticate": 'Bearer realm="crc-admin"'},
        )


async def drain(request: web.Request) -> web.Response:
    """Start draining; the hub process exits once the drain is done."""
    _require_admin(request)
    hub = request.app[HUB_KEY]
    stop = request.app[STOP_KEY]

    async def drain_then_stop() -> None:
        await hub.drain()
        stop.set()

    if not hub.life.draining:
        request.app["drain_task"] = asyncio.create_task(drain_then_stop())
    return web.json_response({"draining": True, "daemons": len(hub.sessions.daemons)}, status=202)


async def rebalance(request: web.Request) -> web.Response:
    _require_admin(request)
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
    _require_admin(request)
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
    healthy = not hub.life.draining and hub.backplane.available
    return web.json_response(
        {
            "ok": healthy,
            "hub_id": hub.id,
            "replica": hub.replica_id,
            "draining": hub.life.draining,
            "backplane": hub.backplane.available,
            "uptime": round(time.time() - hub.life.started, 3),
            "daemons": len(hub.sessions.daemons),
            "masters": sum(len(c) for c in hub.sessions.masters.values()),
        },
        status=200 if healthy else 503,
    )


def add_admin_routes(app: web.Application, token: str) -> None:
    """The admin endpoints (accepting ``token``, see ``load_or_create_admin_token``) and ``/healthz``."""
    app[ADMIN_TOKEN_KEY] = token
    app.router.add_get("/healthz", health)
    app.router.add_post("/v1/admin/drain", drain)
    app.router.add_post("/v1/admin/rebalance", rebalance)
    app.router.add_post("/v1/admin/remove-master", remove_master)
