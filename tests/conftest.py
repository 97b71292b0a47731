"""Fixtures for the whole suite: a real Redis server (never a mock) for the Redis store and its URLs.

redis_server   one ``redis-server`` for the session (``url``, ``host``, ``port``, ``stop()``, ``start()``,
               ``kill()``); fails, naming the fix, when ``redis-server`` is not installed
redis_url      the URL of that server, emptied (FLUSHALL) and running, for one test
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import MISSING, RedisServer, redis_server_binary


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if redis_server_binary() is None:
        pytest.fail(MISSING, pytrace=False)
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.start()  # a no-op unless an earlier test left it stopped
    redis_server.flushall()
    return redis_server.url
