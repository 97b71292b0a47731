"""Futures' values and boot-report replay memory on Redis (``KvStore``, ``BootReportStore``): plain keys that
Redis expires on its own clock, so the ``now`` given is not used for them."""

from __future__ import annotations

from server.store.interfaces import BootReportStore, KvStore
from server.store.redis.base import RedisBase


class RedisKv(RedisBase, KvStore, BootReportStore):
    async def kv_set(self, scenario_id: str, key: str, value: bytes, ttl: float | None, now: float) -> None:
        name = self._sc(scenario_id, f"kv:{key}")
        with self._errors():
            if ttl is None:
                await self._redis.set(name, value)
            else:  # Redis expires it on its own clock
                await self._redis.set(name, value, px=max(1, int(ttl * 1000)))
            await self._redis.sadd(self._sc(scenario_id, "kvs"), key)

    async def kv_get(self, scenario_id: str, key: str, now: float) -> bytes | None:
        with self._errors():
            value = await self._redis.get(self._sc(scenario_id, f"kv:{key}"))
        return value.encode() if isinstance(value, str) else value

    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        name = f"{self.prefix}:bootseen:{machine_id}:{signature}"
        with self._errors():  # SET NX is the check and the write in one; Redis expires it on its own clock
            created = await self._redis.set(name, b"1", nx=True, px=max(1, int((expires - now) * 1000)))
        return bool(created)
