"""A Redis-backed hub whose Redis is down refuses handshakes with a typed ``unavailable``, not a crash.

A real ``redis-server`` and a real hub process: the store cannot look up the connecting key, so the hub answers
the peer (master or daemon) with the protocol's ``unavailable`` error, logs one line without a traceback and
closes; once Redis is back, the same master connects as before.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.link import HubLink
from clients.master.sdk import Master
from protocol import ErrorCode, Identity, RemoteError, Role
from tests.e2e.support import HubProcess, eventually
from tests.redis_server import MISSING, RedisServer, free_port, redis_server_binary

TIMEOUT = 5.0


@pytest.fixture
def redis_hub(tmp_path: Path) -> Iterator[tuple[RedisServer, HubProcess]]:
    """A Redis of its own (so stopping it cannot disturb other tests) and a hub using it for store and backplane."""
    if redis_server_binary() is None:
        pytest.fail(MISSING, pytrace=False)
    redis = RedisServer(tmp_path / "redis")
    redis.start()
    hub = HubProcess(tmp_path / "hub", extra_args=["--redis", redis.url, "--replica-id", "r0"])
    hub.port = free_port()
    try:
        hub.start()
        yield redis, hub
    finally:
        hub.cleanup()
        redis.kill()


async def test_a_handshake_while_redis_is_down_is_refused_as_unavailable_without_a_traceback(
    redis_hub: tuple[RedisServer, HubProcess],
) -> None:
    redis, hub = redis_hub
    async with await Master.connect(hub.url, hub.key_path, timeout=TIMEOUT):
        pass  # the hub and its Redis work before the outage
    await asyncio.to_thread(redis.stop)

    with pytest.raises(RemoteError) as refused:
        await asyncio.wait_for(Master.connect(hub.url, hub.key_path, timeout=TIMEOUT), 2 * TIMEOUT)
    assert refused.value.code == ErrorCode.UNAVAILABLE.value
    assert "unavailable" in str(refused.value) and "try again" in str(refused.value), refused.value
    assert "during the handshake" not in str(refused.value)

    # A daemon's handshake needs the store too (its machine's key): the same typed refusal.
    stranger = Identity.generate(secrets.token_bytes)
    with pytest.raises(RemoteError) as daemon_refused:
        await asyncio.wait_for(HubLink.connect(hub.url, stranger, Role.DAEMON, open_timeout=TIMEOUT), 2 * TIMEOUT)
    assert daemon_refused.value.code == ErrorCode.UNAVAILABLE.value

    await eventually(
        lambda: hub.log_text().count("store is unavailable") >= 2, timeout=TIMEOUT, what="the hub to log both refusals"
    )
    log = hub.log_text()
    assert "Traceback" not in log and "Error handling request" not in log, hub.log_tail()
    assert hub.running

    # Refusals for an outage do not count as failed handshakes against the peer: it reconnects at once after it.
    await asyncio.to_thread(redis.start)
    async with await Master.connect(hub.url, hub.key_path, timeout=TIMEOUT) as master:
        assert await master.scenarios() == []
