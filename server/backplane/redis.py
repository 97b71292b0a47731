"""The Redis backplane: pub/sub between hub replicas, and machine presence keys with a TTL.

Channel layout, and why:
- ``crc:bp:replica:<replica id>``, one per replica, for directed messages (deliver to a machine, cancel an order,
  revoke a key, reconnect daemons). The sender finds the machine's replica from its presence key, so each
  message is read and decoded by exactly one replica: cost per message stays flat as replicas are added, and
  a replica subscribes to one channel whatever the number of machines it holds.
- ``crc:bp:scenario:<scenario id>``, one per scenario, for events and live output. A replica subscribes only
  while it has a watcher of that scenario, so output of a busy scenario never reaches replicas that would drop
  it; channel count grows with scenarios being watched, not with machines.
A single shared channel would make every replica decode every message (cost grows with replicas times
traffic); per-machine channels would need one subscription per connected daemon.

Presence: ``crc:presence:<machine id>`` holds the replica id, set with a TTL and refreshed in pipelined
batches by the owning replica; a replica that dies stops refreshing and its machines' keys expire, while the
replica their daemons reconnect to claims them at once.

Publishing goes through a queue drained in pipelined batches (one round trip per batch, not per message), as
measured in shared/reference/performance-notes.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from protocol.retry import backoff_delays
from server.backplane.base import Backplane, BackplaneUnavailable, Handler, replica_channel
from server.core.peers import PeerMessage, PeerMessageError, peer_from_wire, to_wire

log = logging.getLogger(__name__)

PUBLISH_BATCH = 200
PUBLISH_QUEUE_LIMIT = 100_000

# Claim a machine for this replica unless another replica holds it (then leave theirs alone).
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current == false or current == ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
    return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBackplane(Backplane):
    """Args:
    client: a Redis client (``server.redis_url.redis_from_url``), ``decode_responses=False``.
    replica_id: this replica's id, unique among replicas.
    presence_ttl: seconds a claim lives without refresh (a dead replica's machines free up after this).
    """

    def __init__(
        self, client: aioredis.Redis, replica_id: str, *, prefix: str = "crc", presence_ttl: float = 15.0
    ) -> None:
        self.replica_id = replica_id
        self._client = client
        self._prefix = prefix
        self._ttl = max(1, int(presence_ttl))
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._channels: set[str] = {replica_channel(replica_id)}
        self._claimed: set[str] = set()
        self._available = True
        self._tasks: list[asyncio.Task[None]] = []
        self._pubsub: Any = None
        self._handler: Handler | None = None
        self._on_reconnect: Callable[[], Awaitable[None]] | None = None
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def _key(self, channel: str) -> str:
        return f"{self._prefix}:bp:{channel}"

    def _presence(self, machine_id: str) -> str:
        return f"{self._prefix}:presence:{machine_id}"

    @property
    def available(self) -> bool:
        return self._available

    async def start(self, handler: Handler, on_reconnect: Callable[[], Awaitable[None]]) -> None:
        self._handler, self._on_reconnect = handler, on_reconnect
        try:
            await self._subscribe_all()
        except (RedisError, OSError) as exc:
            self._available = False
            log.error("backplane unavailable at start: %s", exc)
        self._tasks = [
            asyncio.create_task(self._listen(), name="backplane-listen"),
            asyncio.create_task(self._publish_loop(), name="backplane-publish"),
            asyncio.create_task(self._refresh_presence(), name="backplane-presence"),
        ]

    async def _subscribe_all(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(*(self._key(c) for c in self._channels))

    async def _listen(self) -> None:
        delays = backoff_delays(random.random, initial=0.2, maximum=5.0)
        while True:
            try:
                if not self._available:
                    await self._client.ping()
                    await self._subscribe_all()
                    self._available = True
                    delays = backoff_delays(random.random, initial=0.2, maximum=5.0)
                    log.info("backplane reconnected; resubscribed %d channels", len(self._channels))
                    if self._on_reconnect is not None:
                        await self._on_reconnect()
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    await self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                if self._available:
                    log.error("backplane lost: %s", exc)
                self._available = False
                await asyncio.sleep(next(delays))

    async def _dispatch(self, data: Any) -> None:
        message = self._decode(data)
        if message is None or self._handler is None:
            return
        try:
            await self._handler(message)
        except Exception:
            log.exception("backplane message %s failed", message.KIND.value)

    def _decode(self, data: Any) -> PeerMessage | None:
        """The message in a payload from a channel; None for this replica's own echo and for anything malformed
        (logged). Whatever can reach Redis can publish on our channels, so nothing in a payload may stop the
        listener: it goes on with the next message."""
        try:
            raw = msgpack.unpackb(data, raw=False)
        except Exception as exc:  # ValueError and its kin for bad bytes, but msgpack documents "other exceptions"
            log.warning("dropping an undecodable backplane message: %s", exc)
            return None
        sender = raw.pop("from", None) if isinstance(raw, dict) else None
        if sender == self.replica_id:
            return None
        try:
            return peer_from_wire(raw)
        except PeerMessageError as exc:
            log.warning("dropping a malformed backplane message (from %r): %s", sender, exc)
            return None

    def publish(self, channel: str, message: PeerMessage) -> None:
        if self._queue.qsize() >= PUBLISH_QUEUE_LIMIT:
            log.warning("backplane publish queue full; dropping a %s notification", message.KIND.value)
            return
        payload = msgpack.packb({**to_wire(message), "from": self.replica_id}, use_bin_type=True)
        self._queue.put_nowait((self._key(channel), payload))

    async def _publish_loop(self) -> None:
        delays = backoff_delays(random.random, initial=0.2, maximum=5.0)
        while True:
            batch = [await self._queue.get()]
            while len(batch) < PUBLISH_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for channel, payload in batch:
                            pipe.publish(channel, payload)
                        await pipe.execute()
                    break
                except (RedisError, OSError) as exc:
                    self._available = False
                    log.warning("backplane publish failed (%s); retrying", exc)
                    await asyncio.sleep(next(delays))
            delays = backoff_delays(random.random, initial=0.2, maximum=5.0)

    async def subscribe(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.add(channel)
        with contextlib.suppress(RedisError, OSError, AttributeError):
            await self._pubsub.subscribe(self._key(channel))

    async def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels or channel == replica_channel(self.replica_id):
            return
        self._channels.discard(channel)
        with contextlib.suppress(RedisError, OSError, AttributeError):
            await self._pubsub.unsubscribe(self._key(channel))

    async def claim(self, machine_id: str) -> None:
        self._claimed.add(machine_id)
        # A newer session wins: overwrite whatever replica held it (its session is stale or moving).
        try:
            await self._client.set(self._presence(machine_id), self.replica_id, ex=self._ttl)
        except (RedisError, OSError) as exc:
            # The refresher claims it again once Redis is back; meanwhile other replicas cannot route to it.
            raise BackplaneUnavailable(f"backplane unavailable, cannot record presence: {exc}") from exc

    async def release(self, machine_id: str) -> None:
        self._claimed.discard(machine_id)
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[self._presence(machine_id)], args=[self.replica_id])

    async def locate(self, machine_id: str) -> str | None:
        try:
            value = await self._client.get(self._presence(machine_id))
        except (RedisError, OSError) as exc:
            raise BackplaneUnavailable(f"backplane unavailable, cannot locate machine {machine_id}: {exc}") from exc
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)
            if not self._claimed:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for machine_id in self._claimed:
                        await self._claim(
                            keys=[self._presence(machine_id)], args=[self.replica_id, self._ttl], client=pipe
                        )
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                log.warning("could not refresh presence of %d machines: %s", len(self._claimed), exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for machine_id in list(self._claimed):
            await self.release(machine_id)
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
