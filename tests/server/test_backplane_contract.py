"""The contract every ``Backplane`` implementation must meet, run against each of them.

To add a backend, add a ``Backend`` to ``BACKENDS``: a name, a function that opens one replica's backplane on a
shared location, and the fixture that gives each test a fresh location (nothing for the local backplane; the URL
of an emptied database on the session's real ``redis-server`` for Redis, ``tests/conftest.py``).

What replicas hear of each other depends on ``shared``: a shared backplane carries every message to the other
replicas listening on its channel (and never back to its sender); the local one carries nothing, as there is no
other replica. The tests say so with ``carried(sender, messages)``, so the same test holds both to their word.

A subscription takes effect on the Redis server a moment after ``subscribe`` returns; ``Cluster`` waits until a
channel is live by publishing probes on it until one is heard (bounded), so no test depends on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from protocol.messages import Output
from server.backplane import Backplane, BackplaneUnavailable, LocalBackplane
from server.backplane.base import BROADCAST_CHANNEL, replica_channel, scenario_channel
from server.backplane.redis import RedisBackplane
from server.core.peers import CancelOrder, DeliverQueued, DropMaster, LiveOutput, NewEvents, NewMail, PeerMessage
from server.redis_url import redis_from_url
from tests.redis_server import RedisServer, free_port

WAIT = 5.0  # the longest any one expected message may take
QUIET = 0.3  # how long a replica must then hear nothing more (no echo, no duplicate, nothing unsubscribed)
PROBES = 50  # probes published on a channel before giving up on it going live
PROBE_WAIT = 0.1
PROBE = "probe:"


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Any, str, str, float], Backplane]
    """Open the backplane of one replica: (location, prefix, replica id, presence TTL)."""
    location: str
    """The fixture that gives one test a fresh location."""


def _redis(url: str, prefix: str, replica: str, ttl: float) -> Backplane:
    return RedisBackplane(redis_from_url(url), replica, prefix=prefix, presence_ttl=ttl)


BACKENDS = [
    Backend("local", lambda _where, _prefix, replica, _ttl: LocalBackplane(replica), location="nowhere"),
    Backend("redis", _redis, location="redis_url"),
]


@pytest.fixture
def nowhere() -> None:
    return None


@dataclass
class Replica:
    """One replica's backplane, started, with what its handler got."""

    backplane: Backplane
    inbox: asyncio.Queue[PeerMessage] = field(default_factory=asyncio.Queue)
    probes: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    """The cluster's probes (kept out of ``inbox``: a probe for one replica reaches every one on the channel)."""
    reconnects: int = 0
    failures: int = 0
    """How many of the next messages the handler fails on (after taking them), as a buggy handler would."""

    @property
    def id(self) -> str:
        return self.backplane.replica_id

    async def handle(self, message: PeerMessage) -> None:
        if isinstance(message, NewEvents) and message.scenario.startswith(PROBE):
            self.probes.put_nowait(message.scenario)
            return
        self.inbox.put_nowait(message)
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError(f"a bug in the handler of {message.KIND.value}")

    async def on_reconnect(self) -> None:
        self.reconnects += 1

    async def heard(self, count: int) -> list[PeerMessage]:
        """The next ``count`` messages (or fewer, if they do not come within ``WAIT``), and whatever else came
        within ``QUIET`` after them."""
        loop = asyncio.get_running_loop()
        got: list[PeerMessage] = []
        deadline = loop.time() + WAIT
        while len(got) < count and (left := deadline - loop.time()) > 0:
            try:
                got.append(await asyncio.wait_for(self.inbox.get(), left))
            except TimeoutError:
                break
        await asyncio.sleep(QUIET)
        while not self.inbox.empty():
            got.append(self.inbox.get_nowait())
        return got


class Cluster:
    """Replicas on one location of one backend, closed at the end of the test."""

    def __init__(self, backend: Backend, location: Any) -> None:
        self._backend = backend
        self._location = location
        self.prefix = f"t{secrets.token_hex(4)}"
        self._replicas: list[Replica] = []
        self._prober: Replica | None = None
        self._settles = 0

    async def replica(self, replica_id: str, *, presence_ttl: float = 15.0) -> Replica:
        replica = await self._start(replica_id, presence_ttl)
        await self.until_live(replica, replica_channel(replica_id))
        return replica

    async def _start(self, replica_id: str, presence_ttl: float) -> Replica:
        replica = Replica(self._backend.open(self._location, self.prefix, replica_id, presence_ttl))
        self._replicas.append(replica)
        await replica.backplane.start(replica.handle, replica.on_reconnect)
        return replica

    async def subscribe(self, replica: Replica, channel: str) -> None:
        await replica.backplane.subscribe(channel)
        await self.until_live(replica, channel)

    async def unsubscribe(self, replica: Replica, channel: str) -> None:
        """Unsubscribe, and return once the server has done it: a channel subscribed *after* it on the same
        connection went live, so the unsubscribe before it was done too."""
        await replica.backplane.unsubscribe(channel)
        self._settles += 1
        await self.subscribe(replica, f"settle-{self._settles}")

    async def until_live(self, replica: Replica, channel: str) -> None:
        """Return once ``replica`` hears what is published on ``channel`` (at once for an unshared backplane)."""
        if not replica.backplane.shared:
            return
        if self._prober is None:
            self._prober = await self._start("prober", 15.0)
        prober = self._prober.backplane
        self._settles += 1
        tag = f"{PROBE}{self._settles}:"
        for attempt in range(PROBES):
            prober.publish(channel, NewEvents(f"{tag}{attempt}"))
            if await self._probed(replica, tag, PROBE_WAIT):
                break
        else:
            pytest.fail(f"{channel} never went live on replica {replica.id} ({PROBES} probes)")
        # Messages from one publisher arrive in order: once the last probe is in, no earlier one can follow it.
        prober.publish(channel, NewEvents(f"{tag}last"))
        for _ in range(PROBES + 1):
            if await self._probed(replica, f"{tag}last", WAIT):
                return
        pytest.fail(f"the last probe on {channel} did not reach replica {replica.id}")

    @staticmethod
    async def _probed(replica: Replica, tag: str, wait: float) -> bool:
        """Whether the next probe the replica hears within ``wait`` starts with ``tag`` (probes of earlier
        calls, still on their way, are not)."""
        with contextlib.suppress(TimeoutError):
            return (await asyncio.wait_for(replica.probes.get(), wait)).startswith(tag)
        return False

    async def close(self) -> None:
        for replica in self._replicas:
            with contextlib.suppress(Exception):
                await replica.backplane.close()


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    chosen: Backend = request.param
    return chosen


@pytest.fixture
async def cluster(backend: Backend, request: pytest.FixtureRequest) -> AsyncIterator[Cluster]:
    opened = Cluster(backend, request.getfixturevalue(backend.location))
    try:
        yield opened
    finally:
        await opened.close()


def carried(sender: Replica, messages: list[PeerMessage]) -> list[PeerMessage]:
    """What other replicas hear of these messages from ``sender``: all of them on a shared backplane, else none."""
    return messages if sender.backplane.shared else []


def output(order_id: str) -> Output:
    return Output(order_id, "stdout", b"\x00bytes\xff", "web-1")


# publish and subscribe


async def test_a_message_to_a_replica_channel_reaches_that_replica_only(cluster: Cluster) -> None:
    a, b, c = await cluster.replica("a"), await cluster.replica("b"), await cluster.replica("c")
    messages = [DeliverQueued("m-1"), CancelOrder("m-1", "o-1", "shop")]
    for message in messages:
        a.backplane.publish(replica_channel("b"), message)
    expected = carried(a, messages)
    assert await b.heard(len(expected)) == expected
    assert await c.heard(0) == []
    assert await a.heard(0) == []


async def test_a_replica_never_hears_its_own_messages(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await cluster.subscribe(a, BROADCAST_CHANNEL)
    await cluster.subscribe(b, BROADCAST_CHANNEL)
    a.backplane.publish(replica_channel("a"), DeliverQueued("m-1"))
    a.backplane.publish(BROADCAST_CHANNEL, DropMaster("ma-1"))
    expected = carried(a, [DropMaster("ma-1")])
    assert await b.heard(len(expected)) == expected
    assert await a.heard(0) == []


async def test_every_replica_on_the_broadcast_channel_hears_a_broadcast(cluster: Cluster) -> None:
    a, b, c = await cluster.replica("a"), await cluster.replica("b"), await cluster.replica("c")
    for replica in (b, c):
        await cluster.subscribe(replica, BROADCAST_CHANNEL)
    a.backplane.publish(BROADCAST_CHANNEL, DropMaster("ma-1"))
    expected = carried(a, [DropMaster("ma-1")])
    assert await b.heard(len(expected)) == expected
    assert await c.heard(len(expected)) == expected


async def test_scenario_messages_reach_the_replicas_subscribed_to_that_scenario_in_order(cluster: Cluster) -> None:
    a, b, c = await cluster.replica("a"), await cluster.replica("b"), await cluster.replica("c")
    await cluster.subscribe(b, scenario_channel("s-1"))
    await cluster.subscribe(c, scenario_channel("s-2"))
    messages = [NewEvents("s-1"), LiveOutput("s-1", "shop", output("o-1")), NewMail("s-1", ["m-1", "m-2"])]
    for message in messages:
        a.backplane.publish(scenario_channel("s-1"), message)
    expected = carried(a, messages)
    assert await b.heard(len(expected)) == expected
    assert await c.heard(0) == []


async def test_after_unsubscribing_a_replica_hears_nothing_more_of_that_scenario(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await cluster.subscribe(b, scenario_channel("s-1"))
    await cluster.unsubscribe(b, scenario_channel("s-1"))
    a.backplane.publish(scenario_channel("s-1"), NewEvents("s-1"))
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))  # after it, on a channel still subscribed
    expected = carried(a, [DeliverQueued("m-1")])
    assert await b.heard(len(expected)) == expected


async def test_a_replica_cannot_unsubscribe_from_its_own_channel(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await cluster.unsubscribe(b, replica_channel("b"))
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))
    expected = carried(a, [DeliverQueued("m-1")])
    assert await b.heard(len(expected)) == expected


async def test_subscribing_twice_delivers_once_and_one_unsubscribe_ends_it(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await cluster.subscribe(b, scenario_channel("s-1"))
    await cluster.subscribe(b, scenario_channel("s-1"))
    a.backplane.publish(scenario_channel("s-1"), NewEvents("s-1"))
    expected = carried(a, [NewEvents("s-1")])
    assert await b.heard(len(expected)) == expected
    await cluster.unsubscribe(b, scenario_channel("s-1"))
    a.backplane.publish(scenario_channel("s-1"), NewEvents("s-1"))
    assert await b.heard(0) == []


# presence


async def test_a_claimed_machine_is_located_at_the_replica_that_claimed_it(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    assert await a.backplane.locate("m-1") is None
    await a.backplane.claim("m-1")
    assert await a.backplane.locate("m-1") == "a"
    assert await b.backplane.locate("m-1") == ("a" if a.backplane.shared else None)
    assert await a.backplane.locate("m-2") is None


async def test_a_released_machine_is_located_nowhere(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.backplane.claim("m-1")
    await a.backplane.release("m-1")
    assert await a.backplane.locate("m-1") is None
    assert await b.backplane.locate("m-1") is None
    await a.backplane.release("m-1")  # releasing again is harmless
    assert await a.backplane.locate("m-1") is None


async def test_a_newer_claim_wins_and_the_older_replica_releasing_leaves_it(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.backplane.claim("m-1")
    await b.backplane.claim("m-1")  # the daemon reconnected to b: its session there is the live one
    await a.backplane.release("m-1")  # a's stale session goes away afterwards
    assert await b.backplane.locate("m-1") == "b"
    assert await a.backplane.locate("m-1") == ("b" if a.backplane.shared else None)


async def test_a_claim_outlives_its_ttl_while_its_replica_lives(cluster: Cluster) -> None:
    a, b = await cluster.replica("a", presence_ttl=1.0), await cluster.replica("b")
    await a.backplane.claim("m-1")
    await asyncio.sleep(2.5)  # the key expires after 1 s unless refreshed
    assert await a.backplane.locate("m-1") == "a"
    assert await b.backplane.locate("m-1") == ("a" if a.backplane.shared else None)


# availability and close


async def test_a_started_backplane_on_a_reachable_backend_is_available(cluster: Cluster) -> None:
    a = await cluster.replica("a")
    assert a.backplane.available is True


async def test_closing_releases_the_replicas_claims_and_stops_its_listener(cluster: Cluster) -> None:
    a, b = await cluster.replica("a"), await cluster.replica("b")
    await a.backplane.claim("m-1")
    await a.backplane.claim("m-2")
    await a.backplane.close()
    for machine in ("m-1", "m-2"):
        assert await b.backplane.locate(machine) is None
    b.backplane.publish(replica_channel("a"), DeliverQueued("m-1"))
    assert await a.heard(0) == []


# Redis only: what arrives from outside the hub, and a Redis that goes away


@pytest.fixture
async def redis_cluster(redis_url: str) -> AsyncIterator[Cluster]:
    opened = Cluster(BACKENDS[1], redis_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = redis_from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def packed(data: Any) -> bytes:
    result: bytes = msgpack.packb(data, use_bin_type=True)
    return result


GARBAGE: list[bytes] = [
    b"not msgpack at all \xc1\xff",
    b"\xc1",  # a byte msgpack never uses
    b"\x92\x01",  # an array cut short
    b"\x81\x90\x00",  # a map keyed by an array
    b"\xa2\xff\xfe",  # a string that is not UTF-8
    packed(["deliver", "m-1"]),
    packed(42),
    packed({"machine": "m-1", "from": "x"}),
    packed({"kind": "launch_missiles", "from": "x"}),
    packed({"kind": "deliver", "from": "x"}),
    packed({"kind": "deliver", "machine": 7, "from": "x"}),
    packed({"kind": "deliver", "machine": "m-1", "extra": True, "from": "x"}),
    packed({"kind": "output", "scenario": "s", "name": "n", "output": {"order_id": "o"}, "from": "x"}),
    packed({"kind": "mail", "scenario": "s", "machines": [1], "from": "x"}),
]


async def test_garbage_on_a_redis_channel_is_logged_and_dropped_and_later_messages_still_arrive(
    redis_cluster: Cluster, raw_redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await redis_cluster.replica("a"), await redis_cluster.replica("b")
    channel = f"{redis_cluster.prefix}:bp:{replica_channel('b')}"
    caplog.set_level(logging.WARNING, logger="server.backplane.redis")
    for payload in GARBAGE:
        await raw_redis.publish(channel, payload)
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))
    assert await b.heard(1) == [DeliverQueued("m-1")]
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropping")]
    assert len(dropped) == len(GARBAGE)
    assert any("launch_missiles" in r.getMessage() for r in dropped)
    assert any("'machine' must be str, not int" in r.getMessage() for r in dropped)
    await raw_redis.publish(channel, b"\xc1 more garbage")
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-2"))
    assert await b.heard(1) == [DeliverQueued("m-2")]


async def test_a_message_signed_with_the_replicas_own_id_is_taken_for_its_echo(
    redis_cluster: Cluster, raw_redis: aioredis.Redis
) -> None:
    a, b = await redis_cluster.replica("a"), await redis_cluster.replica("b")
    channel = f"{redis_cluster.prefix}:bp:{replica_channel('b')}"
    await raw_redis.publish(channel, packed({"kind": "deliver", "machine": "m-0", "from": "b"}))
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))
    assert await b.heard(1) == [DeliverQueued("m-1")]


async def test_a_handler_that_fails_is_logged_and_the_listener_goes_on(
    redis_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = await redis_cluster.replica("a"), await redis_cluster.replica("b")
    b.failures = 1
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))
    a.backplane.publish(replica_channel("b"), DeliverQueued("m-2"))
    assert await b.heard(2) == [DeliverQueued("m-1"), DeliverQueued("m-2")]
    failed = [r for r in caplog.records if r.getMessage() == "backplane message deliver failed"]
    assert len(failed) == 1
    assert failed[0].exc_info is not None


async def test_a_backplane_whose_redis_is_unreachable_says_so_and_refuses_presence() -> None:
    backplane = RedisBackplane(redis_from_url(f"redis://127.0.0.1:{free_port()}/0"), "a")
    replica = Replica(backplane)
    await backplane.start(replica.handle, replica.on_reconnect)
    try:
        assert backplane.available is False
        with pytest.raises(BackplaneUnavailable, match="cannot locate machine m-1"):
            await backplane.locate("m-1")
        with pytest.raises(BackplaneUnavailable, match="cannot record presence"):
            await backplane.claim("m-1")
    finally:
        await backplane.close()


async def test_after_redis_comes_back_the_backplane_is_available_again_and_says_it_reconnected(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    cluster = Cluster(BACKENDS[1], server.url)
    try:
        a, b = await cluster.replica("a"), await cluster.replica("b")
        server.stop()
        for _ in range(int(WAIT / 0.05)):
            if not b.backplane.available:
                break
            await asyncio.sleep(0.05)
        assert b.backplane.available is False
        server.start()
        for _ in range(int(3 * WAIT / 0.05)):  # the listener retries with a backoff of up to 5 s
            if b.backplane.available and b.reconnects:
                break
            await asyncio.sleep(0.05)
        assert (b.backplane.available, b.reconnects) == (True, 1)
        await cluster.until_live(b, replica_channel("b"))  # resubscribed to its own channel
        a.backplane.publish(replica_channel("b"), DeliverQueued("m-1"))
        assert await b.heard(1) == [DeliverQueued("m-1")]
    finally:
        await cluster.close()
        server.stop()
