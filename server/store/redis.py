"""The store on Redis, so that several hub replicas share one state.

Key layout (``P`` is the prefix, ``crc`` by default; ``S`` a scenario id, ``M`` a machine id, ``O`` an order id)::

    P:{sc:S}:meta          hash    owner, name, created; cursor (last event cursor), orders (last order number)
    P:{sc:S}:machines      set     the scenario's machine ids
    P:{sc:S}:machine:M     hash    name, os, role, public_key, report_key, former_keys*, labels*, status, facts*,
                                   ips*, last_seen, certificate*, key_proofs*, ready_proof*
    P:{sc:S}:orders        zset    order ids scored by their number in the scenario: submission order
    P:{sc:S}:order:O       hash    machine, kind, body*, state, created, updated, seq, result*, inbox
    P:{sc:S}:chunks:O      list    a file order's chunks, dropped with the result
    P:{sc:S}:inbox:M       stream  one entry (order=O) per QUEUED order of machine M, in submission order
    P:{sc:S}:inboxes       set     the machines that have an inbox key
    P:{sc:S}:kv:K          string  a future's value (with a TTL when it has one); gone with the scenario
    P:{sc:S}:kvs           set     the keys that were set (so deleting the scenario finds them)
    P:{sc:S}:mail:M        stream  machine M's scenario messages (entry ids ``<seq>-0``: topic, sender, data, ts)
    P:{sc:S}:mailboxes     set     the machines with a mailbox key
    P:{sc:S}:plan:ID       string  a plan (spec, signed orders, step states)*
    P:{sc:S}:plans         zset    the scenario's plan ids by creation time
    P:idx:plans            hash    plan id -> scenario id
    P:idx:open-plans       hash    plan id -> scenario id, for plans not done (resumed after a restart)
    P:planlease:ID         string  the replica running plan ID (its lease), with a PX expiry: see ``claim_plan``
    P:{sc:S}:events        stream  the event log: entry id ``<cursor>-0``, fields ts, kind, machine, data*
    P:masters              hash    master id -> [id, name, public_key, created]*
    P:idx:master-names     hash    master name -> master id
    P:jobs:<owner>         hash    job name -> [owner, name, shell, script, created, updated, version, statement,
                                   signature]* (the last two absent in jobs stored before jobs were signed)
    P:token:ID             hash    owner, role, scenario, secret_hash, created, expires, label, delegation*,
                                   sealed_key (raw bytes), revoked (0 or 1): an access token
    P:idx:tokens:<owner>   set     the token ids of one owner (a master id)
    P:idx:owner:<owner>    hash    scenario name -> scenario id, for one owner (a master id)
    P:idx:machines         hash    machine id -> scenario id
    P:idx:orders           hash    order id -> scenario id
    P:present              set     machine ids whose status is not offline (for ``reset_presence``)
    P:bootseen:M:MAC       string  a boot report of machine M already accepted (its MAC), with a PX expiry: replays

    * msgpack (bin type for bytes), like the SQLite store's blobs; numbers are decimal text.

Why this shape:

- Every key of one scenario carries the hash tag ``{sc:S}``, so a scenario's keys live in one cluster slot: the
  scripts that touch several of them stay single-slot, and deleting a scenario is one pass over one node. The few
  index keys are global by nature (a name is unique per owner, a machine key and an order id across the hub).
  The scripts derive some per-scenario key names inside Lua (from the prefix they are given), which standalone and
  Sentinel-managed Redis allow and which is what ``server.redis_url`` connects to; Redis Cluster would need those
  passed as KEYS (all within the scenario's slot) and the index writes split off.
- Every write that must be atomic (enrolling, creating and deleting a scenario, queueing an order, moving it on,
  storing its result, appending an event, resetting presence) is one Lua script, so replicas never see half of one
  and never race each other between a check and a write.
- The event log is a Stream whose entry ids are the cursors (``<n>-0``): ordered, durable (with AOF), read by
  ``XRANGE`` from any cursor, and trimmed with ``XADD MAXLEN ~ event_log_max``, which keeps the newest entries
  (approximately: whole stream nodes go, so a few more than the limit may stay). Cursors keep counting: a trimmed
  log simply starts later, and ``events_after`` from an older cursor returns what is left.
- A machine's inbox is a Stream of the ids of its queued orders, in submission order. An order leaves its inbox
  (``XDEL``) when it is delivered or gets a result, so the inbox stays short and its length is the number of queued
  orders. Inboxes are never trimmed, which would silently drop queued orders: ``add_order`` refuses (StoreError) an
  order for a machine that already has ``inbox_max`` queued.
- A plan lease is a key whose value is its owner and whose expiry is the lease's: Redis expires it on its own
  clock (PX), so the replicas' clocks never have to agree and the ``now`` given to ``claim_plan`` is not used.

Every redis-py error becomes a ``StoreError`` that names the server (never its password).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import msgpack
import redis.asyncio
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from protocol import OrderState
from protocol.orders import sources as order_sources
from server.redis_url import endpoint, redis_from_url
from server.store.base import Store
from server.store.records import (
    EventRecord,
    JobRecord,
    MachineRecord,
    MachineSpec,
    MachineStatus,
    MasterRecord,
    MessageRecord,
    OrderRecord,
    PlanRecord,
    ScenarioRecord,
    StoreConflict,
    StoreError,
    TokenRecord,
)

# A prelude for the scripts that derive per-scenario key names: ARGV[1] is always the prefix.
_KEYS_LUA = """
local P = ARGV[1]
local function sc_key(sc, suffix) return P .. ':{sc:' .. sc .. '}:' .. suffix end
"""

SEQ_SPLIT = 1_000_000  # a mailbox message's seq: stream id <ms>-<n> as ms * SEQ_SPLIT + n

# KEYS: masters, master names. ARGV: name, id, packed record.
# Returns {0} enrolled, {1, packed} already enrolled under that name, {2} the key is enrolled under another name.
_ENROLL = """
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then return {1, redis.call('HGET', KEYS[1], known)} end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {2} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {0}
"""

# KEYS: masters, master names. ARGV: prefix, old id, new id, packed new record, name.
# Returns 0 unknown master, 2 the new key is enrolled already, 1 moved (record, name, scenarios' and tokens' owner).
_REKEY_MASTER = """
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 2 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
local old_index = ARGV[1] .. ':idx:owner:' .. ARGV[2]
local owned = redis.call('HGETALL', old_index)
for i = 2, #owned, 2 do
  redis.call('HSET', ARGV[1] .. ':{sc:' .. owned[i] .. '}:meta', 'owner', ARGV[3])
end
if #owned > 0 then redis.call('RENAME', old_index, ARGV[1] .. ':idx:owner:' .. ARGV[3]) end
local old_tokens = ARGV[1] .. ':idx:tokens:' .. ARGV[2]
local tokens = redis.call('SMEMBERS', old_tokens)
for _, id in ipairs(tokens) do
  redis.call('HSET', ARGV[1] .. ':token:' .. id, 'owner', ARGV[3])
end
if #tokens > 0 then
  local new_tokens = ARGV[1] .. ':idx:tokens:' .. ARGV[3]
  redis.call('SUNIONSTORE', new_tokens, new_tokens, old_tokens)
  redis.call('DEL', old_tokens)
end
return 1
"""

# KEYS: token, owner's token index. ARGV: token id, then field, value pairs. Returns 0 if the id is taken.
_PUT_TOKEN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: token. ARGV: owner. Returns 0 if there is no such token of that owner.
_REVOKE_TOKEN = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'revoked', 1, 'sealed_key', '')
return 1
"""

# KEYS: the token. ARGV: owner, packed delegation. Only a live token of that owner gets its new delegation.
_RENEW_TOKEN = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'delegation', ARGV[2])
return 1
"""

# KEYS: owner's token index. ARGV: prefix. Deletes the owner's tokens (with a removed master).
_DROP_TOKENS = """
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', ARGV[1] .. ':token:' .. id) end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: owner index, machine index, meta, machines, then one machine hash per machine.
# ARGV: scenario id, owner, name, created, then (machine id, name, os, role, public key, report key, labels*,
# certificate* or '') per machine.
# Returns {0} created, {1} the owner has a scenario of that name, {2, machine id} a machine key is in use.
_CREATE = """
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {1} end
for i = 5, #ARGV, 8 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {2, ARGV[i]} end
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], 'owner', ARGV[2], 'name', ARGV[3], 'created', ARGV[4], 'cursor', 0, 'orders', 0)
local n = 5
for i = 5, #ARGV, 8 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[i])
  redis.call('HSET', KEYS[n], 'name', ARGV[i + 1], 'os', ARGV[i + 2], 'role', ARGV[i + 3],
             'public_key', ARGV[i + 4], 'report_key', ARGV[i + 5], 'labels', ARGV[i + 6], 'status', 'offline')
  if ARGV[i + 7] ~= '' then redis.call('HSET', KEYS[n], 'certificate', ARGV[i + 7]) end
  n = n + 1
end
return {0}
"""

# KEYS: machine index, orders index, present. ARGV: prefix, scenario id. Returns the machine ids.
_DELETE = (
    _KEYS_LUA
    + """
local sc = ARGV[2]
local meta = sc_key(sc, 'meta')
local owner = redis.call('HGET', meta, 'owner')
if not owner then return {} end
redis.call('HDEL', P .. ':idx:owner:' .. owner, redis.call('HGET', meta, 'name'))
local machines = redis.call('SMEMBERS', sc_key(sc, 'machines'))
for _, m in ipairs(machines) do
  redis.call('DEL', sc_key(sc, 'machine:' .. m), sc_key(sc, 'inbox:' .. m))
  redis.call('HDEL', KEYS[1], m)
  redis.call('SREM', KEYS[3], m)
end
for _, m in ipairs(redis.call('SMEMBERS', sc_key(sc, 'inboxes'))) do
  redis.call('DEL', sc_key(sc, 'inbox:' .. m))
end
for _, o in ipairs(redis.call('ZRANGE', sc_key(sc, 'orders'), 0, -1)) do
  redis.call('DEL', sc_key(sc, 'order:' .. o), sc_key(sc, 'chunks:' .. o))
  redis.call('HDEL', KEYS[2], o)
end
for _, m in ipairs(redis.call('SMEMBERS', sc_key(sc, 'mailboxes'))) do
  redis.call('DEL', sc_key(sc, 'mail:' .. m))
end
redis.call('DEL', sc_key(sc, 'mailboxes'))
for _, k in ipairs(redis.call('SMEMBERS', sc_key(sc, 'kvs'))) do
  redis.call('DEL', sc_key(sc, 'kv:' .. k))
end
for _, id in ipairs(redis.call('ZRANGE', sc_key(sc, 'plans'), 0, -1)) do
  redis.call('DEL', sc_key(sc, 'plan:' .. id))
  redis.call('HDEL', P .. ':idx:open-plans', id)
  redis.call('HDEL', P .. ':idx:plans', id)
end
redis.call('DEL', sc_key(sc, 'plans'))
redis.call('DEL', meta, sc_key(sc, 'machines'), sc_key(sc, 'orders'), sc_key(sc, 'inboxes'), sc_key(sc, 'events'),
           sc_key(sc, 'kvs'))
return machines
"""
)

# KEYS: machine index, present. ARGV: prefix, machine id. Returns 1 if the machine existed.
_DELETE_MACHINE = (
    _KEYS_LUA
    + """
local sc = redis.call('HGET', KEYS[1], ARGV[2])
if not sc then return 0 end
redis.call('DEL', sc_key(sc, 'machine:' .. ARGV[2]), sc_key(sc, 'inbox:' .. ARGV[2]))
redis.call('SREM', sc_key(sc, 'machines'), ARGV[2])
redis.call('SREM', sc_key(sc, 'inboxes'), ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS: machine index, present. ARGV: prefix, machine id, status, last seen, facts or '', ips or ''.
_UPDATE_MACHINE = (
    _KEYS_LUA
    + """
local sc = redis.call('HGET', KEYS[1], ARGV[2])
if not sc then return 0 end
local key = sc_key(sc, 'machine:' .. ARGV[2])
redis.call('HSET', key, 'status', ARGV[3], 'last_seen', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', key, 'facts', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'ips', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', key, 'ready_proof', ARGV[7]) end
if ARGV[3] == 'offline' then redis.call('SREM', KEYS[2], ARGV[2]) else redis.call('SADD', KEYS[2], ARGV[2]) end
return 1
"""
)

# KEYS: the machine hash. ARGV: the packed certificate. Returns 1 if the machine exists (and was certified).
_CERTIFY = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'certificate', ARGV[1])
return 1
"""

# KEYS: present, machine index. ARGV: prefix. Returns how many machines were not offline.
_RESET_PRESENCE = (
    _KEYS_LUA
    + """
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local sc = redis.call('HGET', KEYS[2], m)
  if sc then
    local key = sc_key(sc, 'machine:' .. m)
    local status = redis.call('HGET', key, 'status')
    if status and status ~= 'offline' then
      redis.call('HSET', key, 'status', 'offline')
      n = n + 1
    end
  end
end
redis.call('DEL', KEYS[1])
return n
"""
)

# KEYS: orders index, meta, orders, order, chunks, inbox, inboxes.
# ARGV: order id, scenario id, machine id, kind, body, state, created, updated, inbox max, chunk count, chunks...
# Returns {0} queued, {1} the id was used before, {2} no such scenario, {3} the inbox is full.
_ADD_ORDER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
local queued = ARGV[6] == 'queued'
if queued and redis.call('XLEN', KEYS[6]) >= tonumber(ARGV[9]) then return {3} end
local seq = redis.call('HINCRBY', KEYS[2], 'orders', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('HSET', KEYS[4], 'machine', ARGV[3], 'kind', ARGV[4], 'body', ARGV[5], 'state', ARGV[6],
           'created', ARGV[7], 'updated', ARGV[8], 'seq', seq)
for i = 11, 10 + tonumber(ARGV[10]) do redis.call('RPUSH', KEYS[5], ARGV[i]) end
if queued then
  redis.call('HSET', KEYS[4], 'inbox', redis.call('XADD', KEYS[6], '*', 'order', ARGV[1]))
  redis.call('SADD', KEYS[7], ARGV[3])
end
return {0}
"""

# A prelude for the two scripts that move an order: finds it and takes it out of its inbox.
_ORDER_LUA = (
    _KEYS_LUA
    + """
local function order_key(index, id)
  local sc = redis.call('HGET', index, id)
  if not sc then return nil, nil end
  return sc, sc_key(sc, 'order:' .. id)
end
local function leave_inbox(sc, key)
  local entry = redis.call('HGET', key, 'inbox')
  if entry then
    redis.call('XDEL', sc_key(sc, 'inbox:' .. redis.call('HGET', key, 'machine')), entry)
    redis.call('HDEL', key, 'inbox')
  end
end
"""
)

# KEYS: orders index. ARGV: prefix, order id, new state, now, the states it may move from...
_SET_ORDER_STATE = (
    _ORDER_LUA
    + """
local sc, key = order_key(KEYS[1], ARGV[2])
if not sc then return 0 end
local state = redis.call('HGET', key, 'state')
if not state then return 0 end
for i = 5, #ARGV do
  if state == ARGV[i] then
    redis.call('HSET', key, 'state', ARGV[3], 'updated', ARGV[4])
    leave_inbox(sc, key)
    return 1
  end
end
return 0
"""
)

# KEYS: orders index. ARGV: prefix, order id, final state, now, result.
_STORE_RESULT = (
    _ORDER_LUA
    + """
local sc, key = order_key(KEYS[1], ARGV[2])
if not sc or redis.call('EXISTS', key) == 0 or redis.call('HEXISTS', key, 'result') == 1 then return 0 end
redis.call('HSET', key, 'state', ARGV[3], 'updated', ARGV[4], 'result', ARGV[5])
redis.call('DEL', sc_key(sc, 'chunks:' .. ARGV[2]))
if ARGV[3] ~= 'queued' then leave_inbox(sc, key) end
return 1
"""
)

# KEYS: meta, events. ARGV: max length, ts, kind, machine, data. Returns the new cursor, or nil (no scenario).
_APPEND_EVENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local cursor = redis.call('HINCRBY', KEYS[1], 'cursor', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], cursor .. '-0',
           'ts', ARGV[2], 'kind', ARGV[3], 'machine', ARGV[4], 'data', ARGV[5])
return cursor
"""

# KEYS: plan lease. ARGV: owner, ttl in ms. Returns 1 if the lease is now the owner's (taken or renewed), else 0.
_CLAIM_PLAN = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: plan lease. ARGV: owner. Deletes the lease only if it is the owner's (it may have expired and been taken).
_RELEASE_PLAN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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


class RedisStore(Store):
    """The hub's state in Redis (see the module docstring for the layout).

    Args:
        client: an asyncio client that does not decode replies (``server.redis_url.redis_from_url`` makes one);
            the store owns it and closes it in ``close()``.
        prefix: the first part of every key, so several hubs (or tests) can share a database.
        event_log_max: each scenario's event log keeps about this many of its newest events.
        inbox_max: at most this many queued orders per machine; ``add_order`` refuses more.
    """

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
        self._enroll = client.register_script(_ENROLL)
        self._rekey_master = client.register_script(_REKEY_MASTER)
        self._put_token = client.register_script(_PUT_TOKEN)
        self._revoke_token = client.register_script(_REVOKE_TOKEN)
        self._renew_token = client.register_script(_RENEW_TOKEN)
        self._drop_tokens = client.register_script(_DROP_TOKENS)
        self._create = client.register_script(_CREATE)
        self._delete = client.register_script(_DELETE)
        self._update_machine = client.register_script(_UPDATE_MACHINE)
        self._delete_machine = client.register_script(_DELETE_MACHINE)
        self._reset_presence = client.register_script(_RESET_PRESENCE)
        self._add_order = client.register_script(_ADD_ORDER)
        self._set_order_state = client.register_script(_SET_ORDER_STATE)
        self._store_result = client.register_script(_STORE_RESULT)
        self._append_event = client.register_script(_APPEND_EVENT)
        self._claim_plan = client.register_script(_CLAIM_PLAN)
        self._release_plan = client.register_script(_RELEASE_PLAN)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "crc",
        event_log_max: int = 100_000,
        inbox_max: int = 100_000,
        **client_options: Any,
    ) -> RedisStore:
        """A store on the server at ``url`` (``redis://``, ``rediss://`` or ``redis+sentinel://``).

        ``client_options`` go to the redis client (``socket_timeout=...``, say). Nothing connects yet.
        """
        client = redis_from_url(url, **client_options)
        return cls(client, prefix=prefix, event_log_max=event_log_max, inbox_max=inbox_max)

    # plumbing
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

    async def ping(self) -> None:
        """Check that the server answers (at start-up, say). Raises StoreError if it does not."""
        with self._errors():
            await self._redis.ping()

    # masters
    async def enroll_master(self, name: str, public_key: str, now: float) -> MasterRecord:
        master_id = MachineSpec(name, "", "", public_key).id
        record = MasterRecord(master_id, name, public_key, float(now))
        with self._errors():
            reply = await self._enroll(
                keys=[self._masters, self._master_names],
                args=[name, master_id, _pack([record.id, record.name, record.public_key, record.created])],
            )
        if reply[0] == 1:
            known = MasterRecord(*_unpack(reply[1], None))
            if known.public_key != public_key:
                raise StoreConflict(f"a master named {name!r} is enrolled with another key")
            return known
        if reply[0] == 2:
            raise StoreConflict(f"the key of master {name!r} is already enrolled under another name")
        return record

    async def master(self, master_id: str) -> MasterRecord | None:
        with self._errors():
            packed = await self._hget(self._masters, master_id)
        return None if packed is None else MasterRecord(*_unpack(packed, None))

    async def rekey_master(self, master_id: str, public_key: str) -> MasterRecord | None:
        old = await self.master(master_id)
        if old is None:
            return None
        record = MasterRecord(MachineSpec("", "", "", public_key).id, old.name, public_key, old.created)
        packed = _pack([record.id, record.name, record.public_key, record.created])
        with self._errors():
            moved = await self._rekey_master(
                keys=[self._masters, self._master_names], args=[self.prefix, master_id, record.id, packed, old.name]
            )
        if moved == 2:
            raise StoreConflict("the new master key is enrolled already")
        return record if moved == 1 else None

    # access tokens
    def _token_key(self, token_id: str) -> str:
        return f"{self.prefix}:token:{token_id}"

    def _tokens_key(self, owner: str) -> str:
        return f"{self.prefix}:idx:tokens:{owner}"

    @staticmethod
    def _token(token_id: str, row: dict[bytes, bytes]) -> TokenRecord | None:
        if b"owner" not in row:
            return None
        return TokenRecord(
            id=token_id, owner=_text(row[b"owner"]), role=_text(row[b"role"]), scenario=_text(row[b"scenario"]),
            secret_hash=_text(row[b"secret_hash"]), created=float(row[b"created"]), expires=float(row[b"expires"]),
            label=_text(row[b"label"]), delegation=_unpack(row.get(b"delegation"), None),
            sealed_key=row.get(b"sealed_key", b""), revoked=row.get(b"revoked") == b"1",
        )  # fmt: skip

    async def put_token(self, token: TokenRecord) -> None:
        fields: list[str | bytes] = [
            "owner", token.owner, "role", token.role, "scenario", token.scenario, "secret_hash", token.secret_hash,
            "created", _number(token.created), "expires", _number(token.expires), "label", token.label,
            "sealed_key", token.sealed_key, "revoked", "1" if token.revoked else "0",
        ]  # fmt: skip
        if token.delegation is not None:
            fields += ["delegation", _pack(token.delegation)]
        with self._errors():
            stored = await self._put_token(
                keys=[self._token_key(token.id), self._tokens_key(token.owner)], args=[token.id, *fields]
            )
        if not stored:
            raise StoreConflict(f"token id {token.id} is taken")

    async def token(self, token_id: str) -> TokenRecord | None:
        with self._errors():
            row = await self._hgetall(self._token_key(token_id))
        return self._token(token_id, row)

    async def tokens(self, owner: str) -> list[TokenRecord]:
        with self._errors():
            ids = await self._members(self._tokens_key(owner))
            rows = await self._hgetall_many([self._token_key(i) for i in ids])
        records = [self._token(i, row) for i, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None and r.owner == owner), key=lambda r: (r.created, r.id))

    async def revoke_token(self, owner: str, token_id: str) -> bool:
        with self._errors():
            revoked = await self._revoke_token(keys=[self._token_key(token_id)], args=[owner])
        return bool(revoked)

    async def renew_token(self, owner: str, token_id: str, delegation: dict[str, Any]) -> bool:
        with self._errors():
            renewed = await self._renew_token(keys=[self._token_key(token_id)], args=[owner, _pack(delegation)])
        return bool(renewed)

    # plans
    async def put_plan(self, plan: PlanRecord) -> None:
        open_index = f"{self.prefix}:idx:open-plans"
        with self._errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._sc(plan.scenario_id, f"plan:{plan.id}"), _pack(plan.__dict__))
                pipe.zadd(self._sc(plan.scenario_id, "plans"), {plan.id: plan.created})
                pipe.hset(f"{self.prefix}:idx:plans", plan.id, plan.scenario_id)
                if plan.done:
                    pipe.hdel(open_index, plan.id)
                else:
                    pipe.hset(open_index, plan.id, plan.scenario_id)
                await pipe.execute()

    async def _plan_in(self, scenario_id: str, plan_id: str) -> PlanRecord | None:
        packed = await self._redis.get(self._sc(scenario_id, f"plan:{plan_id}"))
        return None if packed is None else PlanRecord(**_unpack(packed if isinstance(packed, bytes) else b"", {}))

    async def plan(self, plan_id: str) -> PlanRecord | None:
        with self._errors():
            scenario_id = await self._hget(f"{self.prefix}:idx:plans", plan_id)
            return None if scenario_id is None else await self._plan_in(_text(scenario_id), plan_id)

    async def plans(self, scenario_id: str) -> list[PlanRecord]:
        with self._errors():
            ids = await self._redis.zrange(self._sc(scenario_id, "plans"), 0, -1)
            found = [await self._plan_in(scenario_id, i.decode() if isinstance(i, bytes) else str(i)) for i in ids]
        return [p for p in found if p is not None]

    async def open_plans(self) -> list[PlanRecord]:
        with self._errors():
            index = await self._hgetall(f"{self.prefix}:idx:open-plans")
            found = [await self._plan_in(_text(sc), _text(pid)) for pid, sc in index.items()]
        return sorted((p for p in found if p is not None), key=lambda p: (p.created, p.id))

    def _plan_lease(self, plan_id: str) -> str:
        return f"{self.prefix}:planlease:{plan_id}"

    async def claim_plan(self, plan_id: str, owner: str, now: float, ttl: float) -> bool:
        with self._errors():
            claimed = await self._claim_plan(keys=[self._plan_lease(plan_id)], args=[owner, max(1, int(ttl * 1000))])
        return bool(claimed)

    async def release_plan(self, plan_id: str, owner: str) -> None:
        with self._errors():
            await self._release_plan(keys=[self._plan_lease(plan_id)], args=[owner])

    # scenario messages
    async def post_message(
        self, scenario_id: str, machine_ids: list[str], topic: str, sender: str, data: bytes, now: float
    ) -> None:
        with self._errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                for machine_id in machine_ids:
                    fields = {"topic": topic, "sender": sender, "data": data, "ts": _number(now)}
                    pipe.xadd(self._sc(scenario_id, f"mail:{machine_id}"), fields)  # type: ignore[arg-type]
                    pipe.sadd(self._sc(scenario_id, "mailboxes"), machine_id)
                await pipe.execute()

    async def messages_after(self, machine_id: str, after: int, topic: str, limit: int) -> list[MessageRecord]:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return []
            key = self._sc(_text(scenario_id), f"mail:{machine_id}")
            found: list[MessageRecord] = []
            # Stream ids are <ms>-<n>; a message's seq packs both, so seqs order a mailbox like its ids.
            start = f"({after // SEQ_SPLIT}-{after % SEQ_SPLIT}" if after else "-"
            while len(found) < limit:
                entries = await self._xrange(key, start, count=max(limit, 100))
                if not entries:
                    break
                for entry_id, fields in entries:
                    ms, n = (int(part) for part in _text(entry_id).split("-"))
                    kind, sender = _text(fields[b"topic"]), _text(fields[b"sender"])
                    if not topic or kind == topic:
                        found.append(
                            MessageRecord(ms * SEQ_SPLIT + n, kind, sender, fields[b"data"], float(fields[b"ts"]))
                        )
                start = f"({_text(entries[-1][0])}"
        return found[:limit]

    # futures
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

    # boot-report replay memory
    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        name = f"{self.prefix}:bootseen:{machine_id}:{signature}"
        with self._errors():  # SET NX is the check and the write in one; Redis expires it on its own clock
            created = await self._redis.set(name, b"1", nx=True, px=max(1, int((expires - now) * 1000)))
        return bool(created)

    # stored jobs
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
                        old = None if packed is None else JobRecord(*_unpack(packed, None))
                        next_version = version if version is not None else old.version + 1 if old else 1
                        job = JobRecord(owner, name, shell, script, old.created if old else float(now), float(now),
                                        next_version, statement, signature)  # fmt: skip
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(key, name, _pack(list(job.__dict__.values())))
                        await pipe.execute()
                        return job
                except WatchError:
                    continue
        raise StoreError(f"job {name!r} kept changing under concurrent writes; try again")

    async def job(self, owner: str, name: str) -> JobRecord | None:
        with self._errors():
            packed = await self._hget(self._jobs_key(owner), name)
        return None if packed is None else JobRecord(*_unpack(packed, None))

    async def jobs(self, owner: str) -> list[JobRecord]:
        with self._errors():
            rows = await self._hgetall(self._jobs_key(owner))
        return sorted((JobRecord(*_unpack(v, None)) for v in rows.values()), key=lambda j: j.name)

    async def delete_job(self, owner: str, name: str) -> bool:
        with self._errors():
            return bool(await self._redis.hdel(self._jobs_key(owner), name))

    async def master_by_name(self, name: str) -> MasterRecord | None:
        with self._errors():
            master_id = await self._hget(self._master_names, name)
        return None if master_id is None else await self.master(_text(master_id))

    async def remove_master(self, name: str) -> MasterRecord | None:
        with self._errors():
            master_id = await self._hget(self._master_names, name)
            if master_id is None:
                return None
            packed = await self._hget(self._masters, _text(master_id))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._master_names, name)
                pipe.hdel(self._masters, _text(master_id))
                await self._drop_tokens(keys=[self._tokens_key(_text(master_id))], args=[self.prefix], client=pipe)
                await pipe.execute()
        return None if packed is None else MasterRecord(*_unpack(packed, None))

    # scenarios and machines
    async def create_scenario(self, owner: str, name: str, machines: list[MachineSpec], now: float) -> ScenarioRecord:
        record = ScenarioRecord(uuid.uuid4().hex, owner, name, float(now))
        ids = [m.id for m in machines]
        if len(set(ids)) != len(ids):
            raise StoreConflict("a machine key appears twice in the scenario")
        if len({m.name for m in machines}) != len(machines):
            raise StoreConflict("two machines of the scenario have the same name")
        args: list[str | bytes] = [record.id, owner, name, _number(now)]
        for machine_id, spec in zip(ids, machines, strict=True):
            certificate = b"" if spec.certificate is None else _pack(spec.certificate)
            args += [machine_id, spec.name, spec.os, spec.role, spec.public_key, spec.report_key, _pack(spec.labels),
                     certificate]  # fmt: skip
        keys = [
            f"{self.prefix}:idx:owner:{owner}",
            self._machine_index,
            self._sc(record.id, "meta"),
            self._sc(record.id, "machines"),
        ] + [self._sc(record.id, f"machine:{machine_id}") for machine_id in ids]
        with self._errors():
            reply = await self._create(keys=keys, args=args)
        if reply[0] == 1:
            raise StoreConflict(f"{owner} already has a scenario named {name!r}")
        if reply[0] == 2:
            raise StoreConflict(f"machine key {_text(reply[1])} already belongs to a scenario")
        return record

    @staticmethod
    def _scenario(scenario_id: str, fields: Sequence[bytes | None]) -> ScenarioRecord | None:
        owner, name, created = fields
        if owner is None or name is None or created is None:
            return None
        return ScenarioRecord(scenario_id, _text(owner), _text(name), float(created))

    async def scenarios(self, owner: str) -> list[ScenarioRecord]:
        with self._errors():
            names = await self._hgetall(f"{self.prefix}:idx:owner:{owner}")
            ids = [_text(i) for i in names.values()]
            rows = await self._many("HMGET", [self._sc(i, "meta") for i in ids], "owner", "name", "created")
        records = [self._scenario(i, row) for i, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None), key=lambda r: (r.created, r.name))

    async def scenario_by_name(self, owner: str, name: str) -> ScenarioRecord | None:
        with self._errors():
            scenario_id = await self._hget(f"{self.prefix}:idx:owner:{owner}", name)
        return None if scenario_id is None else await self.scenario(_text(scenario_id))

    async def scenario(self, scenario_id: str) -> ScenarioRecord | None:
        with self._errors():
            fields = await self._hmget(self._sc(scenario_id, "meta"), ["owner", "name", "created"])
        return self._scenario(scenario_id, fields)

    async def delete_scenario(self, scenario_id: str) -> list[str]:
        with self._errors():
            machine_ids = await self._delete(
                keys=[self._machine_index, self._order_index, self._present], args=[self.prefix, scenario_id]
            )
        return [_text(m) for m in machine_ids]

    async def delete_machine(self, machine_id: str) -> bool:
        with self._errors():
            deleted = await self._delete_machine(
                keys=[self._machine_index, self._present], args=[self.prefix, machine_id]
            )
        return bool(deleted)

    @staticmethod
    def _machine(machine_id: str, scenario_id: str, row: dict[bytes, bytes]) -> MachineRecord | None:
        if b"name" not in row:
            return None
        last_seen = row.get(b"last_seen")
        return MachineRecord(
            id=machine_id, scenario_id=scenario_id, name=_text(row[b"name"]), os=_text(row[b"os"]),
            role=_text(row[b"role"]), public_key=_text(row[b"public_key"]),
            status=MachineStatus(_text(row[b"status"])), facts=_unpack(row.get(b"facts"), {}),
            ips=_unpack(row.get(b"ips"), []), last_seen=None if last_seen is None else float(last_seen),
            report_key=_text(row.get(b"report_key", b"")), former_keys=_unpack(row.get(b"former_keys"), []),
            labels=_unpack(row.get(b"labels"), {}), certificate=_unpack(row.get(b"certificate"), None),
            key_proofs=_unpack(row.get(b"key_proofs"), []), ready_proof=_unpack(row.get(b"ready_proof"), None),
        )  # fmt: skip

    async def machine(self, machine_id: str) -> MachineRecord | None:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return None
            sc = _text(scenario_id)
            row = await self._hgetall(self._sc(sc, f"machine:{machine_id}"))
        return self._machine(machine_id, sc, row)

    async def rotate_machine_key(
        self, machine_id: str, public_key: str, report_key: str, proof: dict[str, Any] | None = None
    ) -> MachineRecord | None:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return None
            key = self._sc(_text(scenario_id), f"machine:{machine_id}")
            for _ in range(10):  # optimistic: WATCH the machine, retry if another replica wrote it meanwhile
                try:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        await pipe.watch(key)
                        old_key, packed, packed_proofs = await pipe.hmget(
                            key, ["public_key", "former_keys", "key_proofs"]
                        )
                        if old_key is None:
                            return None
                        assert isinstance(old_key, bytes) and (packed is None or isinstance(packed, bytes))
                        assert packed_proofs is None or isinstance(packed_proofs, bytes)
                        former = [*_unpack(packed, []), _text(old_key)]
                        proofs = [*_unpack(packed_proofs, []), *([proof] if proof is not None else [])]
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(key, mapping={"public_key": public_key, "report_key": report_key,
                                                "former_keys": _pack(former), "key_proofs": _pack(proofs)})  # fmt: skip
                        await pipe.execute()
                        break
                except WatchError:
                    continue
        return await self.machine(machine_id)

    async def certify_machine(self, machine_id: str, certificate: dict[str, Any]) -> bool:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return False
            key = self._sc(_text(scenario_id), f"machine:{machine_id}")
            # HSET only where the machine hash still exists: a concurrent delete must not leave a stub behind.
            updated = await self._redis.eval(_CERTIFY, 1, key, _pack(certificate))
        return bool(updated)

    async def machines(self, scenario_id: str) -> list[MachineRecord]:
        with self._errors():
            ids = sorted(await self._members(self._sc(scenario_id, "machines")))
            rows = await self._hgetall_many([self._sc(scenario_id, f"machine:{m}") for m in ids])
        records = [self._machine(m, scenario_id, row) for m, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None), key=lambda r: r.name)

    async def update_machine(
        self,
        machine_id: str,
        *,
        status: MachineStatus,
        last_seen: float,
        facts: dict[str, Any] | None = None,
        ips: list[str] | None = None,
        ready_proof: dict[str, Any] | None = None,
    ) -> None:
        args = [
            self.prefix, machine_id, status.value, _number(last_seen),
            b"" if facts is None else _pack(facts), b"" if ips is None else _pack(ips),
            b"" if ready_proof is None else _pack(ready_proof),
        ]  # fmt: skip
        with self._errors():
            await self._update_machine(keys=[self._machine_index, self._present], args=args)

    async def reset_presence(self, now: float) -> int:
        with self._errors():
            count = await self._reset_presence(keys=[self._present, self._machine_index], args=[self.prefix])
        return int(count)

    # orders
    @staticmethod
    def _order(order_id: str, scenario_id: str, row: dict[bytes, bytes]) -> OrderRecord | None:
        if b"state" not in row:
            return None
        return OrderRecord(
            id=order_id, scenario_id=scenario_id, machine_id=_text(row[b"machine"]), kind=_text(row[b"kind"]),
            order=_unpack(row[b"body"], {}), state=OrderState(_text(row[b"state"])),
            created=float(row[b"created"]), updated=float(row[b"updated"]), result=_unpack(row.get(b"result"), None),
        )  # fmt: skip

    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        sc, machine = order.scenario_id, order.machine_id
        keys = [
            self._order_index, self._sc(sc, "meta"), self._sc(sc, "orders"), self._sc(sc, f"order:{order.id}"),
            self._sc(sc, f"chunks:{order.id}"), self._sc(sc, f"inbox:{machine}"), self._sc(sc, "inboxes"),
        ]  # fmt: skip
        args: list[str | bytes | int] = [
            order.id, sc, machine, order.kind, _pack(order.order), order.state.value,
            _number(order.created), _number(order.updated), self.inbox_max, len(chunks), *chunks,
        ]  # fmt: skip
        with self._errors():
            reply = await self._add_order(keys=keys, args=args)
        if reply[0] == 1:
            raise StoreConflict(f"order id {order.id} was used before")
        if reply[0] == 2:
            raise StoreError(f"scenario {sc} does not exist (deleted?)")
        if reply[0] == 3:
            raise StoreError(f"machine {machine} already has {self.inbox_max} queued orders (the store's inbox_max)")

    async def _order_scenario(self, order_id: str) -> str | None:
        scenario_id = await self._hget(self._order_index, order_id)
        return None if scenario_id is None else _text(scenario_id)

    async def order(self, order_id: str) -> OrderRecord | None:
        with self._errors():
            sc = await self._order_scenario(order_id)
            if sc is None:
                return None
            row = await self._hgetall(self._sc(sc, f"order:{order_id}"))
        return self._order(order_id, sc, row)

    async def order_chunks(self, order_id: str) -> list[bytes]:
        with self._errors():
            sc = await self._order_scenario(order_id)
            if sc is None:
                return []
            chunks = cast("list[bytes]", await self._redis.lrange(self._sc(sc, f"chunks:{order_id}"), 0, -1))
        return chunks

    async def queued_count(self, machine_id: str) -> int:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return 0
            return int(await self._redis.xlen(self._sc(_text(scenario_id), f"inbox:{machine_id}")))

    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return []
            sc = _text(scenario_id)
            inbox = self._sc(sc, f"inbox:{machine_id}")
            entries = await self._xrange(inbox)
            ids = [_text(fields[b"order"]) for _, fields in entries]
            rows = await self._hgetall_many([self._sc(sc, f"order:{o}") for o in ids])
            queued: list[OrderRecord] = []
            stale: list[bytes] = []
            for (entry, _), order_id, row in zip(entries, ids, rows, strict=True):
                record = self._order(order_id, sc, row)
                if record is not None and record.state is OrderState.QUEUED:
                    queued.append(record)
                else:
                    stale.append(entry)
            if stale:  # orders that left the queue without leaving the inbox: keep it short
                await self._redis.xdel(inbox, *stale)
        return queued

    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        earlier = sorted(s.value for s in order_sources(state))
        if state.final or not earlier:
            return False  # queued is where orders start; final states come with a result (store_result)
        with self._errors():
            moved = await self._set_order_state(
                keys=[self._order_index], args=[self.prefix, order_id, state.value, _number(now), *earlier]
            )
        return bool(moved)

    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        with self._errors():
            stored = await self._store_result(
                keys=[self._order_index], args=[self.prefix, order_id, state.value, _number(now), _pack(result)]
            )
        return bool(stored)

    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]:
        with self._errors():
            if order_ids:
                ids = list(dict.fromkeys(order_ids))
            else:
                listed = cast("list[bytes]", await self._redis.zrange(self._sc(scenario_id, "orders"), 0, -1))
                ids = [_text(o) for o in listed]
            rows = await self._hgetall_many([self._sc(scenario_id, f"order:{o}") for o in ids])
        found = [(row, self._order(o, scenario_id, row)) for o, row in zip(ids, rows, strict=True)]
        ordered = sorted((int(row[b"seq"]), record) for row, record in found if record is not None)
        return [record for _, record in ordered]

    # events
    async def append_event(
        self, scenario_id: str, kind: str, machine: str, data: dict[str, Any], now: float
    ) -> EventRecord:
        with self._errors():
            cursor = await self._append_event(
                keys=[self._sc(scenario_id, "meta"), self._sc(scenario_id, "events")],
                args=[self.event_log_max, _number(now), kind, machine, _pack(data)],
            )
        if cursor is None:
            raise StoreError(f"scenario {scenario_id} does not exist (deleted?)")
        return EventRecord(scenario_id, int(cursor), float(now), kind, machine, data)

    async def events_after(self, scenario_id: str, cursor: int, limit: int) -> list[EventRecord]:
        if limit == 0:
            return []
        count = None if limit < 0 else limit  # as SQL's LIMIT: a negative one is no limit
        with self._errors():
            entries = await self._xrange(self._sc(scenario_id, "events"), f"{max(cursor, 0) + 1}-0", count)
        return [
            EventRecord(
                scenario_id,
                int(entry.partition(b"-")[0]),
                float(fields[b"ts"]),
                _text(fields[b"kind"]),
                _text(fields[b"machine"]),
                _unpack(fields[b"data"], {}),
            )
            for entry, fields in entries
        ]

    async def last_cursor(self, scenario_id: str) -> int:
        with self._errors():
            cursor = await self._hget(self._sc(scenario_id, "meta"), "cursor")
        return 0 if cursor is None else int(cursor)

    async def close(self) -> None:
        with self._errors():
            await self._redis.aclose()
