"""Admin endpoints need the hub's admin token, not only a loopback peer (issue 15, item 14).

The attack: anything that relays to the hub's loopback without adding ``X-Forwarded-For`` (an SSH tunnel, socat)
made every request look local, and ``remove-master`` answered it. Here a real TCP relay (what socat does) sits in
front of a real hub; the ``crc hub`` admin commands, which read the token from the data dir, still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from protocol import Identity
from server.admin import admin_token_path, load_or_create_admin_token, read_admin_token
from server.app import create_app
from server.core.appkeys import HUB_KEY
from server.core.hub import Hub
from server.settings import HubSettings

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AdminHub:
    url: str  # the hub itself
    relayed: str  # the same hub through a socat-like relay on the loopback
    data_dir: Path
    hub: Hub


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
    """Forward one connection to the hub, byte for byte: no header added, as socat or an SSH tunnel would."""
    upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


@pytest.fixture
async def admin_hub(tmp_path: Path) -> AsyncIterator[AdminHub]:
    data_dir = tmp_path / "hub"
    app = create_app(HubSettings(data_dir=data_dir))
    hub = app[HUB_KEY]
    master = Identity.generate(secrets.token_bytes)
    await hub.store.enroll_master("bob", master.public.to_text(), time.time())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    port = server.port
    assert port is not None
    relay = await asyncio.start_server(lambda r, w: _relay(r, w, port), "127.0.0.1", 0)
    relay_port = relay.sockets[0].getsockname()[1]
    try:
        yield AdminHub(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{relay_port}", data_dir, hub)
    finally:
        relay.close()
        await server.close()


def test_the_hub_makes_a_private_admin_token_at_start_and_keeps_it(tmp_path: Path) -> None:
    create_app(HubSettings(data_dir=tmp_path / "hub"))
    path = admin_token_path(tmp_path / "hub")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = read_admin_token(tmp_path / "hub")
    assert len(token) >= 32
    create_app(HubSettings(data_dir=tmp_path / "hub"))  # a restart (or a second replica on the same dir)
    assert read_admin_token(tmp_path / "hub") == token


def test_an_unusable_or_world_readable_token_file_is_replaced_or_made_private(tmp_path: Path) -> None:
    path = admin_token_path(tmp_path)
    path.write_text("short\n")
    fresh = load_or_create_admin_token(tmp_path)
    assert fresh != "short" and len(fresh) >= 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    assert load_or_create_admin_token(tmp_path) == fresh
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic c2VjcmV0"}, {"Authorization": "Bearer"}],
    ids=["none", "wrong", "other_scheme", "empty"],
)
async def test_a_relayed_loopback_request_without_the_admin_token_is_refused(
    admin_hub: AdminHub, headers: dict[str, str]
) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/admin/remove-master?name=bob", "/v1/admin/rebalance?share=1", "/v1/admin/drain"):
            async with http.post(admin_hub.relayed + path, headers=headers) as answer:
                assert answer.status == 401, path
                assert answer.headers["WWW-Authenticate"].startswith("Bearer")
                assert "admin token" in await answer.text()
    assert await admin_hub.hub.store.master_by_name("bob") is not None  # nothing was removed
    assert not admin_hub.hub.life.draining


async def test_with_the_admin_token_the_endpoints_answer_and_forwarded_requests_stay_refused(
    admin_hub: AdminHub,
) -> None:
    token = read_admin_token(admin_hub.data_dir)
    auth = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.post(admin_hub.url + "/v1/admin/rebalance?share=0.5", headers=auth) as answer:
            assert answer.status == 200 and await answer.json() == {"asked_to_reconnect": 0}
        # Loopback-only still holds, token or not: a load balancer on this host says whom it forwards for.
        forwarded = {**auth, "X-Forwarded-For": "203.0.113.9"}
        async with http.post(admin_hub.url + "/v1/admin/remove-master?name=bob", headers=forwarded) as answer:
            assert answer.status == 403
        async with http.post(admin_hub.relayed + "/v1/admin/remove-master?name=bob", headers=auth) as answer:
            assert answer.status == 200 and (await answer.json())["name"] == "bob"
    assert await admin_hub.hub.store.master_by_name("bob") is None


async def _crc(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CRC_DATA_DIR"}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "crc_cli", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_crc_hub_admin_commands_read_the_token_from_the_data_dir(admin_hub: AdminHub, tmp_path: Path) -> None:
    done = await _crc(
        "hub", "rebalance", "--url", admin_hub.url, "--share", "0.5", "--data-dir", str(admin_hub.data_dir)
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"asked_to_reconnect": 0}
    # Another data dir (not this hub's): one line, no traceback, nothing done.
    other = tmp_path / "elsewhere"
    wrong = await _crc("hub", "remove-master", "bob", "--url", admin_hub.url, "--data-dir", str(other))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1 and "admin.token" in wrong.stderr
    load_or_create_admin_token(other)  # a token, but another hub's
    refused = await _crc("hub", "remove-master", "bob", "--url", admin_hub.url, "--data-dir", str(other))
    assert refused.returncode == 1 and "401" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert await admin_hub.hub.store.master_by_name("bob") is not None


async def test_crc_hub_admin_commands_never_send_the_token_off_the_machine(admin_hub: AdminHub) -> None:
    sent = await _crc("hub", "drain", "--url", "http://203.0.113.9:8750", "--data-dir", str(admin_hub.data_dir))
    assert sent.returncode == 2 and "loopback" in sent.stderr and "Traceback" not in sent.stderr
    assert not admin_hub.hub.life.draining
