"""Build and run the hub's aiohttp application."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from pathlib import Path

from aiohttp import web

from protocol import Identity, PublicKey
from server.admin import STOP_KEY, add_admin_routes, load_or_create_admin_token
from server.backplane import Backplane, LocalBackplane
from server.boot import add_boot_routes
from server.core.appkeys import HANDLERS_KEY, HUB_KEY
from server.core.dispatch import HandlerTable
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.metrics import add_metrics_route
from server.dashboard import add_dashboard_routes
from server.features import (
    compositions,
    dist,
    enrollment,
    jobs,
    kv,
    masters,
    messaging,
    orders,
    plans,
    scenarios,
    tokens,
)
from server.install import add_install_routes
from server.settings import HubSettings
from server.store import SqliteStore, Store
from server.tls import fingerprint, server_context
from server.transport.rest import add_rest_routes
from server.transport.ws import websocket_handler

log = logging.getLogger(__name__)

# Everything the hub does beyond its core (server/core), in the order their start hooks run.
FEATURES: tuple[Feature, ...] = (
    scenarios.FEATURE,
    orders.FEATURE,
    kv.FEATURE,
    messaging.FEATURE,
    plans.FEATURE,
    jobs.FEATURE,
    compositions.FEATURE,
    tokens.FEATURE,
    masters.FEATURE,
    dist.FEATURE,
    enrollment.FEATURE,
)


def load_or_create_identity(path: Path) -> Identity:
    """The hub's own key pair, created on first start (0600)."""
    if path.exists():
        return Identity.from_private_text(path.read_text())
    identity = Identity.generate(secrets.token_bytes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(identity.private_text() + "\n")
    return identity


def default_backends(settings: HubSettings) -> tuple[Store, Backplane]:
    """SQLite and an in-process backplane for one hub; Redis for both when ``redis_url`` is set (replicas)."""
    if not settings.redis_url:
        return SqliteStore(settings.database), LocalBackplane(settings.replica_id)
    from server.backplane.redis import RedisBackplane
    from server.redis_url import redis_from_url
    from server.store.redis import RedisStore

    store = RedisStore(redis_from_url(settings.redis_url), event_log_max=settings.event_log_max)
    backplane = RedisBackplane(
        redis_from_url(settings.redis_url), settings.replica_id, presence_ttl=settings.presence_ttl
    )
    return store, backplane


def create_app(
    settings: HubSettings,
    *,
    store: Store | None = None,
    backplane: Backplane | None = None,
    identity: Identity | None = None,
) -> web.Application:
    """The hub as an aiohttp application; backends are injected (defaults: see ``default_backends``)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if store is None or backplane is None:
        default_store, default_backplane = default_backends(settings)
        store, backplane = store or default_store, backplane or default_backplane
    hub = Hub(settings, store, identity or load_or_create_identity(settings.key_file), backplane, FEATURES)
    app = web.Application()
    app[HUB_KEY] = hub
    app[HANDLERS_KEY] = HandlerTable().merged(*(feature.handlers for feature in FEATURES))
    app.router.add_get("/v1/ws", websocket_handler)
    app[STOP_KEY] = asyncio.Event()
    add_admin_routes(app, load_or_create_admin_token(settings.data_dir))
    add_boot_routes(app)
    for feature in FEATURES:
        app.router.add_routes(feature.routes)
    add_metrics_route(app, hub.metrics)
    add_dashboard_routes(app)
    add_install_routes(app)
    add_rest_routes(app)

    async def on_startup(app: web.Application) -> None:
        # Alone, this hub knows nobody is connected yet; among replicas, presence keys with a TTL say who is.
        if isinstance(hub.backplane, LocalBackplane):
            reset = await hub.store.reset_presence(time.time())
            if reset:
                log.info("%d machines were left marked connected by a previous run; now offline", reset)
        await hub.start()

    async def on_shutdown(app: web.Application) -> None:
        await hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await hub.store.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(settings: HubSettings, *, ready_file: Path | None = None) -> None:
    """Run the hub until SIGINT/SIGTERM. Prints the bound URL (useful with port 0) and writes it to ready_file."""
    app = create_app(settings)
    if settings.dev_master_key:
        record = await app[HUB_KEY].store.enroll_master(
            "dev-" + PublicKey.from_text(settings.dev_master_key).id, settings.dev_master_key, time.time()
        )
        log.info("dev mode: enrolled the local master %s", record.id)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    tls = settings.tls_files
    ssl_context = server_context(tls) if tls is not None else None
    site = web.TCPSite(runner, settings.host, settings.port, shutdown_timeout=2.0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    url = f"{'https' if ssl_context else 'http'}://{settings.host}:{port}"
    if tls is not None:
        log.info("serving TLS with %s (pin %s)", tls.cert, fingerprint(tls.cert.read_bytes()))
    log.info("hub %s listening on %s (data in %s)", app[HUB_KEY].id, url, settings.data_dir)
    print(f"crc hub listening on {url}", flush=True)
    if ready_file is not None:
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(url)
        tmp.replace(ready_file)
    stop = app[STOP_KEY]
    hub = app[HUB_KEY]
    drain_task: asyncio.Task[None] | None = None

    def on_sigterm() -> None:
        # SIGTERM (systemd stop, rolling restarts) drains first; SIGINT stops at once.
        nonlocal drain_task
        if drain_task is None:
            drain_task = asyncio.create_task(hub.drain())
            drain_task.add_done_callback(lambda _: stop.set())

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
