"""A real hub in this process (aiohttp's ``TestServer`` on 127.0.0.1, a free port) with one enrolled master, for
tests that talk to it over real sockets.

async with live_hub(HubSettings(data_dir=tmp_path / "hub")) as (url, master): ...
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp.test_utils import TestServer

from protocol import Identity
from server.app import create_app
from server.core.appkeys import HUB_KEY
from server.settings import HubSettings


@contextlib.asynccontextmanager
async def live_hub(settings: HubSettings) -> AsyncIterator[tuple[str, Identity]]:
    """Serve a hub built from ``settings``; yields its ``http://`` URL and the identity of master "alice"."""
    app = create_app(settings)
    master = Identity.generate(secrets.token_bytes)
    await app[HUB_KEY].store.enroll_master("alice", master.public.to_text(), time.time())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", master
    finally:
        await server.close()
