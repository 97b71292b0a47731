"""What every part of the Redis store shares: the client and its settings, key names, errors, typed reads, the
Lua scripts beside these modules, and the rewrite of records stored positionally before the codec.

The layout of the keys and why it has this shape are in the package's docstring (``server/store/redis/__init__.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from typing import Any, Self, TypeVar, cast

import msgpack
import redis.asyncio
from redis.asyncio.sentinel import MasterNotFoundError
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.redis_url import endpoint, redis_from_url
from server.store.codec import decode_record, encode_record, is_positional
from server.store.records import MachineSpec, StoreError

R = TypeVar("R")

_PACKAGE = __name__.rpartition(".")[0]


def lua(*files: str) -> functools.cached_property[AsyncScript]:
    """A script of this package for a store class body: its ``.lua`` files joined in order (shared preludes such
    as ``keys.lua`` first), read once at import, and registered with each store's client on first use.

    Args:
        files: file names beside this module (package data, so a wheel has them too).

    Returns:
        A property giving the store's ``AsyncScript`` (registering only hashes the source; nothing is sent).
    """
    source = "".join(resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8") for name in files)

    def script(store: RedisBase) -> AsyncScript:
        return store._redis.register_script(source)

    return functools.cached_property(script)


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(blob: bytes | None, default: Any) -> Any:
    return default if blob is None else msgpack.unpackb(blob, raw=False)


def _text(value: bytes) -> str:
    return value.decode()


def _number(value: float) -> str:
    """A float as text that reads back as the same float."""
    return repr(float(value))


class RedisBase:
    """The connection every part of ``RedisStore`` works through.

    Args:
        client: an asyncio client that does not decode replies (``server.redis_url.redis_from_url`` makes one);
            the store owns it and closes it in ``close()``.
        prefix: the first part of every key, so several hubs (or tests) can share a database.
        event_log_max: each scenario's event log keeps about this many of its newest events.
        inbox_max: at most this many queued orders per machine; ``add_order`` refuses more.
    """

    # Why records stored positionally are rewritten on read, and not at open or by a SCAN pass: positional blobs
    # exist in two places only (the masters hash and the jobs hashes), and each is read through one helper
    # (``_stored``), so rewriting there covers every path. The store has no open step (it connects lazily, and
    # replicas start in any order), and a SCAN at every start would walk the whole shared keyspace long after the
    # last old blob is gone. On read it costs nothing once the data is named, and it is safe among replicas: the
    # blob is replaced only if it is still the one read, so a record another replica wrote meanwhile is never
    # overwritten with an older one. A record never read stays positional, which is harmless: the old layouts
    # are read for good (a restored old dump needs them too). All replicas must run the codec before any writes
    # by name: a hub from before it would misread a map as a list.
    _migrate_blob = lua("migrate_blob.lua")

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "crc",
        event_log_max: int = 100_000,
        inbox_max: int = 100_000,
    ) -> None:
        if not prefix or any(c in prefix for c in "{}"):
            raise ValueError(f"bad redis key prefix {prefix!r}: it must be non-empty, without braces")
        if event_log_max < 1 or inbox_max < 1:
            raise ValueError("event_log_max and inbox_max must be at least 1")
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the redis store needs a client that does not decode replies (decode_responses=False)")
        self._redis = client
        self.prefix = prefix
        self.event_log_max = event_log_max
        self.inbox_max = inbox_max
        self.where = endpoint(client)
        self._masters = f"{prefix}:masters"
        self._master_names = f"{prefix}:idx:master-names"
        self._machine_index = f"{prefix}:idx:machines"
        self._order_index = f"{prefix}:idx:orders"
        self._present = f"{prefix}:present"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "crc",
        event_log_max: int = 100_000,
        inbox_max: int = 100_000,
        **client_options: Any,
    ) -> Self:
        """A store on the server at ``url`` (``redis://``, ``rediss://`` or ``redis+sentinel://``).

        ``client_options`` go to the redis client (``socket_timeout=...``, say). Nothing connects yet.
        """
        client = redis_from_url(url, **client_options)
        return cls(client, prefix=prefix, event_log_max=event_log_max, inbox_max=inbox_max)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """redis-py errors become StoreError naming the server (its address only, never credentials)."""
        try:
            yield
        except MasterNotFoundError as exc:  # its text is the repr of every sentinel client
            raise StoreError(f"redis at {self.where} unavailable: no sentinel names a master for it") from exc
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreError(f"redis at {self.where} unavailable: {self._scrub(exc)}") from exc
        except RedisError as exc:
            raise StoreError(f"redis at {self.where} failed: {type(exc).__name__}: {self._scrub(exc)}") from exc

    def _scrub(self, exc: BaseException) -> str:
        """The error's text, with the password masked should redis-py ever include it."""
        text = str(exc)
        password = self._redis.connection_pool.connection_kwargs.get("password")
        return text.replace(password, "***") if isinstance(password, str) and password else text

    def _sc(self, scenario_id: str, suffix: str) -> str:
        return f"{self.prefix}:{{sc:{scenario_id}}}:{suffix}"

    # typed reads: the client never decodes replies (checked in __init__), so they are bytes
    async def _hget(self, key: str, field: str) -> bytes | None:
        return cast("bytes | None", await self._redis.hget(key, field))

    async def _hgetall(self, key: str) -> dict[bytes, bytes]:
        return cast("dict[bytes, bytes]", await self._redis.hgetall(key))

    async def _hmget(self, key: str, fields: list[str]) -> list[bytes | None]:
        return cast("list[bytes | None]", await self._redis.hmget(key, fields))

    async def _members(self, key: str) -> list[str]:
        return [_text(m) for m in cast("set[bytes]", await self._redis.smembers(key))]

    async def _xrange(
        self, key: str, start: str = "-", count: int | None = None
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        return cast("list[tuple[bytes, dict[bytes, bytes]]]", await self._redis.xrange(key, min=start, count=count))

    async def _many(self, command: str, keys: Sequence[str], *args: str) -> list[Any]:
        """One command per key, in one round trip (a pipeline, not a transaction)."""
        if not keys:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.execute_command(command, key, *args)
            rows: list[Any] = await pipe.execute()
        return rows

    async def _hgetall_many(self, keys: Sequence[str]) -> list[dict[bytes, bytes]]:
        return cast("list[dict[bytes, bytes]]", await self._many("HGETALL", keys))

    def _tokens_key(self, owner: str) -> str:
        return f"{self.prefix}:idx:tokens:{owner}"

    async def _stored(self, cls: type[R], key: str, field: str, blob: bytes, layout: tuple[str, ...]) -> R:
        """The record kept in ``blob`` at ``key``/``field``; a positional one is rewritten by name."""
        record = decode_record(cls, blob, legacy=layout)
        await self._rewrite_positional(key, field, blob, record)
        return record

    async def _rewrite_positional(self, key: str, field: str, blob: bytes, record: Any) -> None:
        """Migrate a blob read in the old positional form (see ``_MIGRATE_BLOB`` for why on read)."""
        if is_positional(blob):
            with self._errors():
                await self._migrate_blob(keys=[key], args=[field, blob, encode_record(record)])

    async def ping(self) -> None:
        """Check that the server answers (at start-up, say). Raises StoreError if it does not."""
        with self._errors():
            await self._redis.ping()

    async def close(self) -> None:
        with self._errors():
            await self._redis.aclose()


def machine_args(machines: list[MachineSpec]) -> list[str | bytes]:
    """Eight script arguments per machine, as create_scenario.lua and add_machines.lua read them."""
    args: list[str | bytes] = []
    for spec in machines:
        certificate = b"" if spec.certificate is None else _pack(spec.certificate)
        args += [spec.id, spec.name, spec.os, spec.role, spec.public_key, spec.report_key, _pack(spec.labels),
                 certificate]  # fmt: skip
    return args
