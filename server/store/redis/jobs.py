"""Stored jobs on Redis (``JobStore``): ``P:jobs:<owner>``, job name -> record by name."""

from __future__ import annotations

from typing import Any

from redis.exceptions import WatchError

from server.store.codec import decode_record, encode_record
from server.store.interfaces import JobStore
from server.store.records import JobRecord, StoreError
from server.store.redis.base import RedisBase, _text

# The positional layout jobs had before the codec, frozen: the class's fields may change, this never does (a job
# stored before jobs were signed lacks the last two, which take their defaults).
JOB_LAYOUT = ("owner", "name", "shell", "script", "created", "updated", "version", "statement", "signature")


class RedisJobs(RedisBase, JobStore):
    def _jobs_key(self, owner: str) -> str:
        return f"{self.prefix}:jobs:{owner}"

    async def put_job(
        self,
        owner: str,
        name: str,
        shell: str,
        script: str,
        now: float,
        *,
        version: int | None = None,
        statement: dict[str, Any] | None = None,
        signature: bytes = b"",
    ) -> JobRecord:
        key = self._jobs_key(owner)
        with self._errors():
            for _ in range(10):  # optimistic: WATCH the owner's jobs, retry if another replica wrote meanwhile
                try:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        await pipe.watch(key)
                        packed = await pipe.hget(key, name)
                        assert packed is None or isinstance(packed, bytes)
                        old = None if packed is None else decode_record(JobRecord, packed, legacy=JOB_LAYOUT)
                        next_version = version if version is not None else old.version + 1 if old else 1
                        job = JobRecord(owner, name, shell, script, old.created if old else float(now), float(now),
                                        next_version, statement, signature)  # fmt: skip
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(key, name, encode_record(job))
                        await pipe.execute()
                        return job
                except WatchError:
                    continue
        raise StoreError(f"job {name!r} kept changing under concurrent writes; try again")

    async def job(self, owner: str, name: str) -> JobRecord | None:
        key = self._jobs_key(owner)
        with self._errors():
            packed = await self._hget(key, name)
        return None if packed is None else await self._stored(JobRecord, key, name, packed, JOB_LAYOUT)

    async def jobs(self, owner: str) -> list[JobRecord]:
        key = self._jobs_key(owner)
        with self._errors():
            rows = await self._hgetall(key)
        found = [await self._stored(JobRecord, key, _text(name), v, JOB_LAYOUT) for name, v in rows.items()]
        return sorted(found, key=lambda j: j.name)

    async def delete_job(self, owner: str, name: str) -> bool:
        with self._errors():
            return bool(await self._redis.hdel(self._jobs_key(owner), name))
