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
    P:{sc:S}:plan:ID       string  a plan (spec, signed orders, step states): its PlanRecord**
    P:{sc:S}:plans         zset    the scenario's plan ids by creation time
    P:idx:plans            hash    plan id -> scenario id
    P:idx:open-plans       hash    plan id -> scenario id, for plans not done (resumed after a restart)
    P:planlease:ID         string  the replica running plan ID (its lease), with a PX expiry: see ``claim_plan``
    P:{sc:S}:events        stream  the event log: entry id ``<cursor>-0``, fields ts, kind, machine, data*
    P:masters              hash    master id -> its MasterRecord**
    P:idx:master-names     hash    master name -> master id
    P:jobs:<owner>         hash    job name -> its JobRecord**
    P:token:ID             hash    owner, role, scenario, secret_hash, created, expires, label, delegation*,
                                   sealed_key (raw bytes), revoked (0 or 1): an access token
    P:idx:tokens:<owner>   set     the token ids of one owner (a master id)
    P:idx:owner:<owner>    hash    scenario name -> scenario id, for one owner (a master id)
    P:idx:machines         hash    machine id -> scenario id
    P:idx:orders           hash    order id -> scenario id
    P:present              set     machine ids whose status is not offline (for ``reset_presence``)
    P:bootseen:M:MAC       string  a boot report of machine M already accepted (its MAC), with a PX expiry: replays

    * msgpack (bin type for bytes), like the SQLite store's blobs; numbers are decimal text.
    ** a record as a msgpack map by field name (``server.store.codec``); masters and jobs stored before it are
       positional lists, read with their frozen old layouts and rewritten by name when read (``base.py``).

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

from server.store.base import Store
from server.store.redis.base import RedisBase
from server.store.redis.compositions import RedisCompositions
from server.store.redis.enrollments import RedisEnrollments
from server.store.redis.events import RedisEvents
from server.store.redis.jobs import RedisJobs
from server.store.redis.kv import RedisKv
from server.store.redis.machines import RedisMachines
from server.store.redis.masters import RedisMasters
from server.store.redis.messages import RedisMessages
from server.store.redis.orders import RedisOrders
from server.store.redis.plans import RedisPlans
from server.store.redis.scenarios import RedisScenarios
from server.store.redis.tokens import RedisTokens

__all__ = ["RedisBase", "RedisStore"]


class RedisStore(
    RedisMasters,
    RedisJobs,
    RedisTokens,
    RedisPlans,
    RedisMessages,
    RedisKv,
    RedisScenarios,
    RedisEnrollments,
    RedisCompositions,
    RedisMachines,
    RedisOrders,
    RedisEvents,
    Store,
):
    """The hub's state in Redis (see the package docstring for the layout): one part per store Protocol, each in
    its module of this package, over the connection of ``RedisBase`` (its arguments are this class's)."""
