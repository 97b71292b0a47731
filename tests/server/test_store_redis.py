"""What only the Redis store has: trimmed event logs, short inboxes, hash slots, outages, several replicas.

The behaviour both stores share is in ``test_store_contract.py``, which runs against Redis too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import msgpack
import pytest
import redis.asyncio
from redis.crc import key_slot

from protocol import OrderState
from server.redis_url import redis_from_url
from server.store import JobRecord, MachineSpec, MachineStatus, MasterRecord, StoreConflict, StoreError
from server.store.codec import decode_record, encode_record
from server.store.redis import RedisStore
from tests.redis_server import RedisServer
from tests.server.test_store_codec import JobWithAFieldInTheMiddle
from tests.server.test_store_contract import NOW, machine, order, public_key

GLOBAL_KEYS = {"crc:masters", "crc:idx:master-names", "crc:idx:machines", "crc:idx:orders", "crc:present"}


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[RedisStore]:
    opened = RedisStore.from_url(redis_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client on the same database, to look at the keys."""
    client = redis_from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def keys(raw: redis.asyncio.Redis) -> set[str]:
    return {k.decode() async for k in raw.scan_iter(count=1000)}


# event log
async def test_a_trimmed_event_log_keeps_the_newest_events_and_resumes_from_the_oldest_kept(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, event_log_max=10)
    try:
        scenario = await store.create_scenario("alice", "shop", [machine("web")], NOW)
        for i in range(350):
            await store.append_event(scenario.id, "tick", "web", {"i": i}, NOW + i)
        kept = await store.events_after(scenario.id, 0, 1000)
        cursors = [e.cursor for e in kept]
        # MAXLEN ~ drops whole stream nodes (100 entries each by default): at least 10 stay, far fewer than 350
        assert 10 <= len(kept) <= 110
        assert cursors == list(range(cursors[0], 351)), "the newest events, in order, without gaps"
        assert [e.data["i"] for e in kept] == [c - 1 for c in cursors]
        oldest = cursors[0]
        assert oldest > 1
        # a reader behind the trimmed part resumes at the oldest event kept; one inside pages on as usual
        assert [e.cursor for e in await store.events_after(scenario.id, 5, 3)] == [oldest, oldest + 1, oldest + 2]
        assert [e.cursor for e in await store.events_after(scenario.id, oldest, 2)] == [oldest + 1, oldest + 2]
        assert await store.events_after(scenario.id, 350, 10) == []
        assert await store.last_cursor(scenario.id) == 350
        assert (await store.append_event(scenario.id, "tick", "web", {}, NOW)).cursor == 351
    finally:
        await store.close()


async def test_event_cursors_are_the_stream_ids(store: RedisStore, raw: redis.asyncio.Redis) -> None:
    scenario = await store.create_scenario("alice", "shop", [], NOW)
    for _ in range(3):
        await store.append_event(scenario.id, "tick", "", {}, NOW)
    entries = await raw.xrange(f"crc:{{sc:{scenario.id}}}:events")
    assert [entry for entry, _ in entries] == [b"1-0", b"2-0", b"3-0"]


# inboxes
async def test_an_inbox_holds_only_queued_orders(store: RedisStore, raw: redis.asyncio.Redis) -> None:
    web = machine("web")
    scenario = await store.create_scenario("alice", "shop", [web], NOW)
    inbox = f"crc:{{sc:{scenario.id}}}:inbox:{web.id}"
    for order_id in ("o1", "o2", "o3"):
        await store.add_order(order(order_id, scenario.id, web.id), [b"chunk"])
    assert await raw.xlen(inbox) == 3
    assert await store.set_order_state("o1", OrderState.DELIVERED, NOW + 1)
    assert await store.store_result("o2", OrderState.CANCELLED, {}, NOW + 1)
    assert await raw.xlen(inbox) == 1
    assert [o.id for o in await store.queued_orders(web.id)] == ["o3"]
    assert await store.order_chunks("o2") == [], "chunks go with the result"
    assert await store.order_chunks("o1") == [b"chunk"], "but stay until then"


async def test_queued_orders_drops_inbox_entries_of_orders_no_longer_queued(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    web = machine("web")
    scenario = await store.create_scenario("alice", "shop", [web], NOW)
    inbox = f"crc:{{sc:{scenario.id}}}:inbox:{web.id}"
    await store.add_order(order("o1", scenario.id, web.id), [])
    await store.add_order(order("o2", scenario.id, web.id), [])
    await raw.hset(f"crc:{{sc:{scenario.id}}}:order:o1", "state", "delivered")  # as if moved without the script
    await raw.xadd(inbox, {"order": "gone"})  # an entry whose order does not exist
    assert [o.id for o in await store.queued_orders(web.id)] == ["o2"]
    assert await raw.xlen(inbox) == 1


async def test_a_full_inbox_refuses_more_orders(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, inbox_max=2)
    try:
        web = machine("web")
        scenario = await store.create_scenario("alice", "shop", [web], NOW)
        await store.add_order(order("o1", scenario.id, web.id), [])
        await store.add_order(order("o2", scenario.id, web.id), [])
        with pytest.raises(StoreError, match="2 queued orders") as caught:
            await store.add_order(order("o3", scenario.id, web.id), [])
        assert not isinstance(caught.value, StoreConflict)
        assert await store.order("o3") is None
        assert await store.set_order_state("o1", OrderState.DELIVERED, NOW)
        await store.add_order(order("o3", scenario.id, web.id), [])
        assert [o.id for o in await store.queued_orders(web.id)] == ["o2", "o3"]
    finally:
        await store.close()


async def test_an_order_for_an_unknown_scenario_is_refused(store: RedisStore) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        await store.add_order(order("o1", "no-such-scenario", "m"), [])
    assert await store.order("o1") is None


async def test_final_states_are_not_set_with_set_order_state(store: RedisStore) -> None:
    assert await store.set_order_state("o1", OrderState.SUCCEEDED, NOW) is False


# key layout
async def test_every_key_of_a_scenario_shares_its_hash_slot_and_goes_with_it(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    web, db = machine("web"), machine("db")
    scenario = await store.create_scenario("alice", "shop", [web, db], NOW)
    other = await store.create_scenario("alice", "lab", [machine("box")], NOW)
    await store.enroll_master("alice", machine("x").public_key, NOW)
    await store.update_machine(web.id, status=MachineStatus.READY, last_seen=NOW, facts={"a": 1}, ips=["10.0.0.1"])
    await store.add_order(order("o1", scenario.id, web.id), [b"c1", b"c2"])
    await store.add_order(order("o2", scenario.id, db.id), [b"c3"])
    await store.append_event(scenario.id, "tick", "web", {}, NOW)
    await store.append_event(other.id, "tick", "box", {}, NOW)

    everything = await keys(raw)
    tag = f"{{sc:{scenario.id}}}"
    mine = {k for k in everything if scenario.id in k}
    assert {re.search(r"\{[^}]*\}", k).group(0) for k in mine} == {tag}  # type: ignore[union-attr]
    assert len({key_slot(k.encode()) for k in mine}) == 1
    assert {k.split(tag + ":")[1].split(":")[0] for k in mine} == {
        "meta", "machines", "machine", "orders", "order", "chunks", "inbox", "inboxes", "events",
    }  # fmt: skip
    untagged = {k for k in everything if "{" not in k}
    assert untagged == GLOBAL_KEYS | {"crc:idx:owner:alice"}

    assert sorted(await store.delete_scenario(scenario.id)) == sorted([web.id, db.id])
    left = await keys(raw)
    assert not any(scenario.id in k for k in left), "every key of the scenario is gone"
    assert all(tag not in k for k in left)
    for index in ("crc:idx:machines", "crc:idx:orders", "crc:idx:owner:alice"):
        assert scenario.id.encode() not in await raw.hvals(index)
    assert await raw.smembers("crc:present") == set()
    assert [m.name for m in await store.machines(other.id)] == ["box"]


async def test_prefixes_keep_hubs_apart(redis_url: str) -> None:
    one, two = RedisStore.from_url(redis_url, prefix="hub-one"), RedisStore.from_url(redis_url, prefix="hub-two")
    try:
        spec = machine("web")
        await one.create_scenario("alice", "shop", [spec], NOW)
        assert await two.scenario_by_name("alice", "shop") is None
        await two.create_scenario("alice", "shop", [spec], NOW)  # the same machine key, another hub
        assert await two.machine(spec.id) is not None
    finally:
        await one.close()
        await two.close()


async def test_the_store_refuses_bad_settings(redis_url: str) -> None:
    for kwargs in ({"prefix": "a{b}"}, {"prefix": ""}, {"event_log_max": 0}, {"inbox_max": 0}):
        client = redis_from_url(redis_url)
        with pytest.raises(ValueError):
            RedisStore(client, **kwargs)  # type: ignore[arg-type]
        await client.aclose()
    decoding = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisStore(decoding)
    await decoding.aclose()


# several replicas
async def test_replicas_share_state_and_races_have_one_winner(redis_url: str) -> None:
    replicas = [RedisStore.from_url(redis_url) for _ in range(4)]
    try:
        key = machine("web").public_key
        creates = [r.create_scenario("alice", "shop", [machine("web", key)], NOW) for r in replicas]
        outcomes = await asyncio.gather(*creates, return_exceptions=True)
        made = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(made) == 1 and all(isinstance(o, StoreConflict) for o in outcomes if o is not made[0])
        scenario = made[0]
        spec = machine("web", key)
        for i, replica in enumerate(replicas):
            await replica.add_order(order(f"o{i}", scenario.id, spec.id), [])
        moves = [r.set_order_state("o0", OrderState.DELIVERED, NOW) for r in replicas]
        assert sorted(await asyncio.gather(*moves)) == [False, False, False, True]
        results = [r.store_result("o1", OrderState.SUCCEEDED, {"by": i}, NOW) for i, r in enumerate(replicas)]
        assert sorted(await asyncio.gather(*results)) == [False, False, False, True]
        events = [r.append_event(scenario.id, "tick", "", {}, NOW) for r in replicas for _ in range(5)]
        assert sorted(e.cursor for e in await asyncio.gather(*events)) == list(range(1, 21))
        assert [o.id for o in await replicas[3].queued_orders(spec.id)] == ["o2", "o3"]
    finally:
        for replica in replicas:
            await replica.close()


# outages
async def test_an_unavailable_server_is_a_store_error_and_the_data_survives_a_restart(
    redis_server: RedisServer, redis_url: str
) -> None:
    store = RedisStore.from_url(redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        spec = machine("web")
        scenario = await store.create_scenario("alice", "shop", [spec], NOW)
        await store.add_order(order("o1", scenario.id, spec.id), [b"chunk"])
        await store.append_event(scenario.id, "tick", "web", {"i": 1}, NOW)

        redis_server.stop()
        calls = [
            store.scenario(scenario.id),
            store.machine(spec.id),
            store.machines(scenario.id),
            store.queued_orders(spec.id),
            store.append_event(scenario.id, "tick", "web", {}, NOW),
            store.create_scenario("alice", "other", [], NOW),
            store.events_after(scenario.id, 0, 10),
            store.ping(),
        ]
        for call in calls:
            with pytest.raises(StoreError) as caught:
                await call
            assert f"redis at 127.0.0.1:{redis_server.port} unavailable" in str(caught.value)
            assert not isinstance(caught.value, redis.RedisError)

        redis_server.start()  # the same port and directory: the AOF brings the data back
        assert await store.scenario(scenario.id) == scenario, "the same store reconnects"
        assert [o.id for o in await store.queued_orders(spec.id)] == ["o1"]
        assert await store.order_chunks("o1") == [b"chunk"]
        assert [e.data for e in await store.events_after(scenario.id, 0, 10)] == [{"i": 1}]
        assert (await store.append_event(scenario.id, "tick", "web", {}, NOW)).cursor == 2
    finally:
        redis_server.start()
        await store.close()


# signed stored jobs
async def test_a_job_stored_before_jobs_were_signed_reads_as_unsigned(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    old_row = msgpack.packb(["alice", "deploy", "sh", "echo old", NOW, NOW, 3], use_bin_type=True)
    await raw.hset("crc:jobs:alice", "deploy", old_row)
    old = await store.job("alice", "deploy")
    assert old is not None and (old.script, old.version, old.statement, old.signature) == ("echo old", 3, None, b"")
    assert [j.name for j in await store.jobs("alice")] == ["deploy"] and not old.to_wire()["signed"]


# records by field name (server.store.codec), and the positional blobs stored before it
async def stored(raw: redis.asyncio.Redis, key: str, field: str) -> object:
    return msgpack.unpackb(await raw.hget(key, field), raw=False)


async def test_masters_stored_positionally_read_back_right_and_are_rewritten_by_name(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    key = public_key()
    master_id = MachineSpec("", "", "", key).id
    await raw.hset("crc:masters", master_id, msgpack.packb([master_id, "alice", key, NOW], use_bin_type=True))
    await raw.hset("crc:idx:master-names", "alice", master_id)
    expected = MasterRecord(master_id, "alice", key, NOW)

    assert await store.master(master_id) == expected
    assert await stored(raw, "crc:masters", master_id) == {
        "id": master_id, "name": "alice", "public_key": key, "created": NOW,
    }  # fmt: skip
    assert await store.master_by_name("alice") == expected
    assert await store.enroll_master("alice", key, NOW + 5) == expected, "enrolling again finds the old record"


async def test_enrolling_again_migrates_a_positional_master_it_finds(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    key = public_key()
    master_id = MachineSpec("", "", "", key).id
    await raw.hset("crc:masters", master_id, msgpack.packb([master_id, "alice", key, NOW], use_bin_type=True))
    await raw.hset("crc:idx:master-names", "alice", master_id)
    assert await store.enroll_master("alice", key, NOW + 5) == MasterRecord(master_id, "alice", key, NOW)
    assert isinstance(await stored(raw, "crc:masters", master_id), dict)
    rekeyed = await store.rekey_master(master_id, public_key())
    assert rekeyed is not None and (rekeyed.name, rekeyed.created) == ("alice", NOW)
    assert await stored(raw, "crc:masters", rekeyed.id) == encode_dict(rekeyed)


def encode_dict(record: object) -> dict[str, object]:
    value: dict[str, object] = msgpack.unpackb(encode_record(record), raw=False)
    return value


async def test_jobs_stored_positionally_read_back_right_and_are_rewritten_by_name(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    unsigned = ["alice", "backup", "sh", "tar c /", NOW, NOW + 1, 3]
    signed = ["alice", "deploy", "sh", "echo hi", NOW, NOW + 2, 1, {"name": "deploy"}, b"\x02" * 64]
    await raw.hset("crc:jobs:alice", mapping={"backup": msgpack.packb(unsigned), "deploy": msgpack.packb(signed)})

    jobs = await store.jobs("alice")
    assert jobs == [JobRecord(*unsigned), JobRecord(*signed)]
    for job in jobs:
        assert await stored(raw, "crc:jobs:alice", job.name) == encode_dict(job)
    assert await store.jobs("alice") == jobs, "the rewritten records read the same"

    replaced = await store.put_job("alice", "backup", "sh", "tar c /srv", NOW + 10)
    assert (replaced.created, replaced.version) == (NOW, 4), "a positional job replaced keeps its history"


async def test_a_single_positional_job_read_is_rewritten(store: RedisStore, raw: redis.asyncio.Redis) -> None:
    await raw.hset("crc:jobs:bob", "x", msgpack.packb(["bob", "x", "sh", "true", NOW, NOW, 1]))
    assert await store.job("bob", "x") == JobRecord("bob", "x", "sh", "true", NOW, NOW, 1)
    assert isinstance(await stored(raw, "crc:jobs:bob", "x"), dict)


async def test_a_migration_never_overwrites_what_another_replica_wrote_since_the_read(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    old = msgpack.packb(["bob", "x", "sh", "true", NOW, NOW, 1])
    newer = await store.put_job("bob", "x", "sh", "false", NOW + 1)  # written after the old blob was read
    await store._rewrite_positional("crc:jobs:bob", "x", old, JobRecord("bob", "x", "sh", "true", NOW, NOW, 1))
    assert await store.job("bob", "x") == newer


async def test_a_record_class_with_a_field_inserted_in_the_middle_reads_what_redis_holds(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    job = await store.put_job("alice", "deploy", "sh", "echo hi", NOW, statement={"a": 1}, signature=b"\x03" * 64)
    blob = await raw.hget("crc:jobs:alice", "deploy")
    moved = decode_record(JobWithAFieldInTheMiddle, blob)
    assert (moved.owner, moved.script, moved.timeout, moved.created, moved.statement, moved.signature) == (
        job.owner, job.script, 60.0, job.created, job.statement, job.signature,
    )  # fmt: skip


async def test_a_stored_record_missing_a_required_field_is_a_clear_store_error(
    store: RedisStore, raw: redis.asyncio.Redis
) -> None:
    await raw.hset("crc:jobs:alice", "broken", msgpack.packb({"owner": "alice", "name": "broken"}))
    with pytest.raises(StoreError, match=r"JobRecord.*shell, script, created, updated"):
        await store.job("alice", "broken")
