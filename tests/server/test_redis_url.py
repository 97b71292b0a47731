"""Redis URLs: what is accepted, what is refused (and why), masking for logs, and real connections."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool

from server.redis_url import SentinelRedis, describe, endpoint, redis_from_url
from server.store import StoreError
from server.store.redis import RedisStore
from tests.redis_server import RedisSentinel, RedisServer


@pytest.fixture
async def clients() -> AsyncIterator[list[redis.asyncio.Redis]]:
    """Clients a test made (none connects unless used): closed at teardown."""
    made: list[redis.asyncio.Redis] = []
    yield made
    for client in made:
        await client.aclose()


def kwargs(client: redis.asyncio.Redis) -> dict[str, object]:
    return dict(client.connection_pool.connection_kwargs)


# parsing
async def test_a_plain_url_gives_host_port_db_and_credentials(clients: list[redis.asyncio.Redis]) -> None:
    client = redis_from_url("redis://user:s3cret@cache.internal:6380/3")
    clients.append(client)
    got = kwargs(client)
    assert (got["host"], got["port"], got["db"]) == ("cache.internal", 6380, 3)
    assert (got["username"], got["password"], got["decode_responses"]) == ("user", "s3cret", False)
    assert endpoint(client) == "cache.internal:6380"


async def test_defaults_are_port_6379_and_db_0(clients: list[redis.asyncio.Redis]) -> None:
    client = redis_from_url("redis://localhost")
    clients.append(client)
    got = kwargs(client)
    assert (got["host"], got.get("port", 6379), got.get("db", 0)) == ("localhost", 6379, 0)
    assert endpoint(client) == "localhost:6379"


async def test_rediss_means_tls(clients: list[redis.asyncio.Redis]) -> None:
    client = redis_from_url("rediss://:pw@redis.example.com:6390/1")
    clients.append(client)
    assert client.connection_pool.connection_class is SSLConnection
    assert (kwargs(client)["port"], kwargs(client)["password"]) == (6390, "pw")


async def test_a_sentinel_url_names_the_sentinels_the_service_and_the_db(clients: list[redis.asyncio.Redis]) -> None:
    client = redis_from_url("redis+sentinel://pa%40ss@s1:26380,s2,[::1]:26381/mymaster/2", socket_timeout=3.0)
    clients.append(client)
    assert isinstance(client, SentinelRedis)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster" and pool.is_master
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("s1", 26380), ("s2", 26379), ("::1", 26381)]
    assert all(s.get("password") is None for s in sentinels), "the password is the master's, not the sentinels'"
    assert all(s["socket_timeout"] == 3.0 for s in sentinels)
    got = kwargs(client)
    assert (got["db"], got["password"], got["decode_responses"]) == (2, "pa@ss", False)
    assert endpoint(client) == "sentinel service 'mymaster' via s1:26380,s2:26379,[::1]:26381"


async def test_a_sentinel_url_may_name_a_user_and_omit_the_db(clients: list[redis.asyncio.Redis]) -> None:
    client = redis_from_url("redis+sentinel://app:pw@sentinel:26379/svc/")
    clients.append(client)
    got = kwargs(client)
    assert (got["username"], got["password"], got["db"]) == ("app", "pw", 0)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("localhost:6379", "not a redis URL"),
        ("http://localhost:6379/0", "unsupported redis URL scheme 'http'"),
        ("unix:///run/redis.sock", "unsupported redis URL scheme 'unix'"),
        ("redis+cluster://h:1/0", "unsupported redis URL scheme 'redis+cluster'"),
        ("redis://:6379/0", "no host"),
        ("redis://localhost:port/0", "bad port"),
        ("redis://localhost:70000/0", "bad port"),
        ("redis://localhost:6379/zero", "must be a database number, not 'zero'"),
        ("redis://localhost:6379/0?decode_responses=true", "never decodes replies"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/", "names no service"),
        ("redis+sentinel://s1:26379/svc/1/extra", "too many path parts"),
        ("redis+sentinel://s1:26379/svc/one", "the database must be a number, not 'one'"),
        ("redis+sentinel://s1:abc/svc", "bad sentinel port 'abc'"),
        ("redis+sentinel://s1:26379,,s2/svc", "empty sentinel host"),
        ("redis+sentinel://[::1/svc", "bad sentinel address"),
        ("redis+sentinel://s1/svc?ssl=true", "takes no query"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        redis_from_url(url)
    assert complaint in str(caught.value)


def test_a_bad_url_never_shows_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        redis_from_url("redis://:hunter2@localhost:6379/nodb")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


def test_replies_are_never_decoded() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        redis_from_url("redis://localhost:6379/0", decode_responses=True)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user:s3cret@h:1/0", "redis://user:***@h:1/0"),
        ("redis://:s3cret@h:1/0", "redis://:***@h:1/0"),
        ("redis://justauser@h:1/0", "redis://justauser@h:1/0"),
        ("rediss://u:p%40ss@h:1/0?password=other&db=1", "rediss://u:***@h:1/0?password=***&db=1"),
        ("redis+sentinel://s3cret@s1:26379,s2/svc/0", "redis+sentinel://***@s1:26379,s2/svc/0"),
        ("redis+sentinel://app:s3cret@s1/svc", "redis+sentinel://app:***@s1/svc"),
        ("not a url", "not a url"),
    ],
)
def test_describe_masks_passwords(url: str, shown: str) -> None:
    assert describe(url) == shown


# real servers
async def test_a_redis_url_connects_to_the_real_server(redis_url: str) -> None:
    client = redis_from_url(redis_url)
    try:
        assert await client.ping()
        await client.set("greeting", "h\xe9llo")
        assert await client.get("greeting") == "h\xe9llo".encode()
    finally:
        await client.aclose()


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "locked", password="hunter2-s3cret")
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_password_is_used_and_never_shown_in_store_errors(password_server: RedisServer) -> None:
    store = RedisStore.from_url(password_server.url)
    try:
        await store.ping()
    finally:
        await store.close()
    wrong = RedisStore.from_url(password_server.url.replace("hunter2-s3cret", "wrong-guess"))
    try:
        with pytest.raises(StoreError) as caught:
            await wrong.ping()
    finally:
        await wrong.close()
    message = str(caught.value)
    assert f"127.0.0.1:{password_server.port}" in message
    assert "wrong-guess" not in message and "hunter2" not in message


@pytest.fixture
def sentinel(redis_server: RedisServer, redis_url: str, tmp_path: Path) -> Iterator[RedisSentinel]:
    watcher = RedisSentinel(tmp_path / "sentinel", redis_server)
    try:
        watcher.start()
    except RuntimeError as exc:
        # a redis-server built without sentinel mode refuses the option or the config's sentinel lines
        if re.search(r"(?i)(bad directive|unrecognized|unknown|not in sentinel mode)", str(exc)):
            pytest.skip(f"this redis-server cannot run in sentinel mode: {exc}")
        raise
    try:
        yield watcher
    finally:
        watcher.kill()


async def test_a_sentinel_url_reaches_the_master_the_sentinel_names(
    sentinel: RedisSentinel, redis_server: RedisServer
) -> None:
    client = redis_from_url(sentinel.url)
    try:
        await client.set("via-sentinel", b"\x00\xff")
        assert await client.get("via-sentinel") == b"\x00\xff"
        assert isinstance(client.connection_pool, SentinelConnectionPool)
        assert await client.connection_pool.get_master_address() == ("127.0.0.1", redis_server.port)
    finally:
        await client.aclose()  # closes the sentinel connections too: no ResourceWarning
    plain = redis_from_url(redis_server.url)
    try:
        assert await plain.get("via-sentinel") == b"\x00\xff"
    finally:
        await plain.aclose()


async def test_the_store_runs_through_a_sentinel(sentinel: RedisSentinel) -> None:
    store = RedisStore.from_url(sentinel.url, prefix="via-sentinel")
    try:
        scenario = await store.create_scenario("alice", "shop", [], 1.0)
        assert await store.scenario_by_name("alice", "shop") == scenario
        assert (await store.append_event(scenario.id, "tick", "", {}, 2.0)).cursor == 1
        assert store.where.startswith("sentinel service 'crc-test' via 127.0.0.1:")
    finally:
        await store.close()
