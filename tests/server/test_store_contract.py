"""The contract every ``Store`` implementation must meet, run against each of them.

To add a backend, add a ``Backend`` to ``BACKENDS``: a name, a function that opens the store on a location that
survives ``close()`` (so reopening sees the same data), and the fixture that gives each test a fresh location: a
temporary directory for SQLite, the URL of an emptied database on the session's real ``redis-server`` for Redis
(``tests/conftest.py``; it fails, naming the fix, when ``redis-server`` is missing).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from protocol import Identity, OrderState
from protocol.orders import sources as order_sources
from server.store import (
    CompositionRecord,
    EnrollmentRecord,
    EnrollOutcome,
    MachineSpec,
    MachineStatus,
    OrderRecord,
    SqliteStore,
    Store,
    StoreConflict,
    StoreError,
    TokenRecord,
)
from server.store.redis import RedisStore

NOW = 1_700_000_000.0


@dataclass(frozen=True)
class Backend:
    name: str
    open: Callable[[Any], Store]
    """Open (or reopen) the store kept at this location."""
    location: str
    """The fixture that gives one test a fresh location."""


BACKENDS = [
    Backend("sqlite", lambda where: SqliteStore(where / "hub.sqlite3"), location="tmp_path"),
    Backend("redis", lambda url: RedisStore.from_url(url), location="redis_url"),
]


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def location(backend: Backend, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(backend.location)


@pytest.fixture
async def store(backend: Backend, location: Any) -> AsyncIterator[Store]:
    opened = backend.open(location)
    try:
        yield opened
    finally:
        await opened.close()


def public_key() -> str:
    return Identity.generate(secrets.token_bytes).public.to_text()


def machine(name: str, key: str | None = None) -> MachineSpec:
    return MachineSpec(name, "linux", f"{name}-role", key or public_key())


def order(order_id: str, scenario_id: str, machine_id: str, created: float = NOW) -> OrderRecord:
    body = {"id": order_id, "kind": "exec", "body": {"command": "true"}, "signature": b"\x01" * 64}
    return OrderRecord(order_id, scenario_id, machine_id, "exec", body, OrderState.QUEUED, created, created)


# masters
async def test_enrolling_a_master_is_idempotent(store: Store) -> None:
    key = public_key()
    first = await store.enroll_master("alice", key, NOW)
    again = await store.enroll_master("alice", key, NOW + 10)
    assert again == first
    assert first.name == "alice" and first.public_key == key and first.created == NOW
    assert await store.master(first.id) == first
    assert await store.master("no-such-master") is None


async def test_enrolling_a_known_name_with_another_key_conflicts(store: Store) -> None:
    first = await store.enroll_master("alice", public_key(), NOW)
    with pytest.raises(StoreConflict):
        await store.enroll_master("alice", public_key(), NOW)
    assert await store.master(first.id) == first


async def test_one_key_cannot_be_enrolled_under_two_names(store: Store) -> None:
    key = public_key()
    first = await store.enroll_master("alice", key, NOW)
    with pytest.raises(StoreConflict):
        await store.enroll_master("alice2", key, NOW)
    assert await store.master(first.id) == first


async def test_a_removed_master_is_forgotten_and_its_name_and_key_can_be_enrolled_again(store: Store) -> None:
    key = public_key()
    enrolled = await store.enroll_master("alice", key, NOW)
    assert await store.master_by_name("alice") == enrolled
    assert await store.remove_master("alice") == enrolled
    assert await store.master(enrolled.id) is None and await store.master_by_name("alice") is None
    assert await store.remove_master("alice") is None
    assert (await store.enroll_master("alice2", key, NOW)).id == enrolled.id


async def test_rekeying_a_master_moves_its_name_and_scenarios_to_the_new_key(store: Store) -> None:
    old = await store.enroll_master("alice", public_key(), NOW)
    await store.create_scenario(old.id, "shop", [machine("web")], NOW)
    await store.create_scenario(old.id, "lab", [machine("db")], NOW)
    new_key = public_key()
    moved = await store.rekey_master(old.id, new_key)
    assert moved is not None and moved.name == "alice" and moved.public_key == new_key and moved.created == NOW
    assert await store.master(old.id) is None and await store.master(moved.id) == moved
    assert await store.master_by_name("alice") == moved
    assert sorted(s.name for s in await store.scenarios(moved.id)) == ["lab", "shop"]
    assert await store.scenarios(old.id) == []
    shop = await store.scenario_by_name(moved.id, "shop")
    assert shop is not None and shop.owner == moved.id and await store.scenario(shop.id) == shop
    assert await store.rekey_master(old.id, public_key()) is None
    other = await store.enroll_master("bob", public_key(), NOW)
    with pytest.raises(StoreConflict):
        await store.rekey_master(other.id, new_key)


async def test_the_master_id_is_the_fingerprint_of_its_key(store: Store) -> None:
    identity = Identity.generate(secrets.token_bytes)
    record = await store.enroll_master("bob", identity.public.to_text(), NOW)
    assert record.id == identity.id


# access tokens
def token(token_id: str, owner: str, created: float = NOW, role: str = "viewer", **fields: Any) -> TokenRecord:
    return TokenRecord(token_id, owner, role, "", secrets.token_hex(32), created, 0.0, **fields)


async def test_a_token_round_trips_every_field(store: Store) -> None:
    delegation = {
        "master": "m1", "scenarios": ["shop", "lab"], "limits": {"expires": NOW + 3600, "kinds": ["exec"]},
        "nested": {"deep": [1, 2.5, None, True, {"k": "v"}]}, "signature": b"\x00\x01" * 32,
    }  # fmt: skip
    operator = TokenRecord(
        "tok-op", "alice", "operator", "shop", secrets.token_hex(32), NOW, NOW + 86400, label="ci deploys",
        delegation=delegation, sealed_key=b"\x00sealed\xff" * 8,
    )  # fmt: skip
    viewer = token("tok-view", "alice", NOW + 1)
    await store.put_token(operator)
    await store.put_token(viewer)
    assert await store.token("tok-op") == operator and await store.token("tok-view") == viewer
    again = await store.token("tok-op")
    assert again is not None and again.delegation == delegation and again.sealed_key == operator.sealed_key
    assert viewer.delegation is None and viewer.sealed_key == b"" and not viewer.revoked
    assert await store.token("no-such-token") is None
    wire = operator.to_wire()
    assert wire == {
        "id": "tok-op", "role": "operator", "scenario": "shop", "created": NOW, "expires": NOW + 86400,
        "label": "ci deploys", "revoked": False,
    }  # fmt: skip
    assert operator.secret_hash not in repr(wire) and "sealed" not in repr(wire)


async def test_a_token_id_can_only_be_used_once(store: Store) -> None:
    first = token("tok", "alice")
    await store.put_token(first)
    with pytest.raises(StoreConflict):
        await store.put_token(token("tok", "bob", NOW + 1))
    assert await store.token("tok") == first and await store.tokens("bob") == []


async def test_tokens_are_listed_per_owner_oldest_first(store: Store) -> None:
    await store.put_token(token("t-b", "alice", NOW + 5))
    await store.put_token(token("t-c", "alice", NOW))
    await store.put_token(token("t-a", "alice", NOW + 5))
    await store.put_token(token("t-bob", "bob", NOW))
    assert [t.id for t in await store.tokens("alice")] == ["t-c", "t-a", "t-b"]
    assert [t.id for t in await store.tokens("bob")] == ["t-bob"]
    assert await store.tokens("carol") == []


async def test_revoking_a_token_keeps_it_listed_without_its_sealed_key(store: Store) -> None:
    sealed = token("tok", "alice", delegation={"d": 1}, sealed_key=b"secret-key", role="operator")
    others = token("bobs", "bob", sealed_key=b"bob-key")
    await store.put_token(sealed)
    await store.put_token(others)
    assert await store.revoke_token("alice", "tok")
    revoked = await store.token("tok")
    assert revoked is not None and revoked.revoked and revoked.sealed_key == b""
    assert revoked == TokenRecord(**{**sealed.__dict__, "revoked": True, "sealed_key": b""})
    assert await store.tokens("alice") == [revoked]
    assert await store.revoke_token("alice", "tok")  # again: still revoked
    assert await store.token("tok") == revoked
    # another owner's token is not found, and stays as it was
    assert not await store.revoke_token("alice", "bobs")
    assert await store.token("bobs") == others
    assert not await store.revoke_token("alice", "no-such-token")
    assert await store.tokens("alice") == [revoked]


async def test_renewing_a_token_replaces_only_a_live_tokens_delegation(store: Store) -> None:
    live = token("tok", "alice", delegation={"d": 1}, sealed_key=b"k", role="operator")
    gone = token("old", "alice", delegation={"d": 1}, sealed_key=b"k", role="operator")
    await store.put_token(live)
    await store.put_token(gone)
    await store.revoke_token("alice", "old")
    assert await store.renew_token("alice", "tok", {"d": 2})
    assert await store.token("tok") == TokenRecord(**{**live.__dict__, "delegation": {"d": 2}})
    revoked = await store.token("old")
    assert not await store.renew_token("alice", "old", {"d": 2})  # a revoked token stays revoked
    assert await store.token("old") == revoked
    assert not await store.renew_token("bob", "tok", {"d": 3})  # another owner's token is not found
    assert not await store.renew_token("alice", "no-such-token", {"d": 3})
    assert (await store.token("tok")) == TokenRecord(**{**live.__dict__, "delegation": {"d": 2}})


async def test_removing_a_master_deletes_its_tokens(store: Store) -> None:
    alice = await store.enroll_master("alice", public_key(), NOW)
    bob = await store.enroll_master("bob", public_key(), NOW)
    await store.put_token(token("t1", alice.id, sealed_key=b"k"))
    await store.put_token(token("t2", alice.id, NOW + 1))
    kept = token("t3", bob.id)
    await store.put_token(kept)
    assert await store.remove_master("alice") == alice
    assert await store.token("t1") is None and await store.token("t2") is None
    assert await store.tokens(alice.id) == []
    assert await store.tokens(bob.id) == [kept]
    # the ids are free again
    await store.put_token(token("t1", bob.id))


async def test_rekeying_a_master_moves_its_tokens_to_the_new_id(store: Store) -> None:
    old = await store.enroll_master("alice", public_key(), NOW)
    bob = await store.enroll_master("bob", public_key(), NOW)
    first = token("t1", old.id, delegation={"master": old.id}, sealed_key=b"k")
    await store.put_token(first)
    await store.put_token(token("t2", old.id, NOW + 1))
    await store.put_token(token("t3", bob.id))
    moved = await store.rekey_master(old.id, public_key())
    assert moved is not None
    record = await store.token("t1")
    assert record == TokenRecord(**{**first.__dict__, "owner": moved.id})
    assert [t.id for t in await store.tokens(moved.id)] == ["t1", "t2"]
    assert await store.tokens(old.id) == []
    assert [t.id for t in await store.tokens(bob.id)] == ["t3"]
    assert not await store.revoke_token(old.id, "t1") and await store.revoke_token(moved.id, "t1")
    assert await store.remove_master("alice") == moved
    assert await store.token("t1") is None and await store.token("t2") is None


# scenarios and machines
async def test_messages_wait_in_each_machines_mailbox_in_order(store: Store) -> None:
    web, db = machine("web"), machine("db")
    shop = await store.create_scenario("alice", "shop", [web, db], NOW)
    await store.post_message(shop.id, [web.id, db.id], "deploy", "", b"v1", NOW)
    await store.post_message(shop.id, [web.id], "config", "db", b"port=5432", NOW + 1)
    await store.post_message(shop.id, [web.id], "deploy", "", b"v2", NOW + 2)
    mail = await store.messages_after(web.id, 0, "", 10)
    assert [(m.topic, m.sender, m.data) for m in mail] == [("deploy", "", b"v1"), ("config", "db", b"port=5432"),
                                                            ("deploy", "", b"v2")]  # fmt: skip
    assert [m.seq for m in mail] == sorted(m.seq for m in mail) and len({m.seq for m in mail}) == 3
    assert [m.data for m in await store.messages_after(web.id, mail[0].seq, "deploy", 10)] == [b"v2"]
    assert [m.data for m in await store.messages_after(web.id, 0, "deploy", 1)] == [b"v1"]
    assert [m.data for m in await store.messages_after(db.id, 0, "", 10)] == [b"v1"]
    assert await store.messages_after(web.id, mail[-1].seq, "", 10) == []
    await store.delete_scenario(shop.id)
    assert await store.messages_after(web.id, 0, "", 10) == []


async def test_plans_are_stored_updated_listed_and_resumable(store: Store) -> None:
    from server.store import PlanRecord

    shop = await store.create_scenario("alice", "shop", [machine("web")], NOW)
    spec = {"name": "p", "steps": [{"id": "a", "target": "web", "command": "true"}]}
    first = PlanRecord("p1", shop.id, "p", spec, {"a": [{"id": "o1"}]}, {"a": "pending"}, NOW, NOW)
    await store.put_plan(first)
    second = PlanRecord("p2", shop.id, "q", spec, {}, {"a": "succeeded"}, NOW + 1, NOW + 1, done=True)
    await store.put_plan(second)
    assert await store.plan("p1") == first and await store.plan("nope") is None
    assert [p.id for p in await store.plans(shop.id)] == ["p1", "p2"]
    assert [p.id for p in await store.open_plans()] == ["p1"]
    running = PlanRecord(**{**first.__dict__, "states": {"a": "running"}, "started": {"a": NOW + 2}})
    await store.put_plan(running)
    assert (await store.plan("p1")) == running
    await store.put_plan(PlanRecord(**{**running.__dict__, "done": True}))
    assert await store.open_plans() == []
    await store.delete_scenario(shop.id)
    assert await store.plan("p1") is None and await store.plans(shop.id) == []


async def test_a_plan_lease_is_held_by_one_owner_renewed_by_it_and_released_only_by_it(store: Store) -> None:
    now = time.time()
    assert await store.claim_plan("p1", "r0", now, 30.0)
    assert not await store.claim_plan("p1", "r1", now + 1, 30.0)
    assert await store.claim_plan("p1", "r0", now + 1, 30.0)  # renewed
    assert await store.claim_plan("p2", "r1", now, 30.0)  # one lease per plan
    await store.release_plan("p1", "r1")  # not r1's: nothing happens
    assert not await store.claim_plan("p1", "r1", now + 2, 30.0)
    await store.release_plan("p1", "r0")
    assert await store.claim_plan("p1", "r1", now + 2, 30.0)
    assert not await store.claim_plan("p1", "r0", now + 2, 30.0)


async def test_an_expired_plan_lease_can_be_taken_by_another_owner(store: Store) -> None:
    now = time.time()
    assert await store.claim_plan("p1", "r0", now, 0.2)
    assert not await store.claim_plan("p1", "r1", time.time(), 0.2)
    await asyncio.sleep(0.3)  # Redis expires leases on its own clock (PX): real time must pass
    assert await store.claim_plan("p1", "r1", time.time(), 30.0)
    assert not await store.claim_plan("p1", "r0", time.time(), 30.0)
    await store.release_plan("p1", "r0")  # r0 lost it: its release must not free r1's lease
    assert not await store.claim_plan("p1", "r0", time.time(), 30.0)


async def test_futures_are_per_scenario_expire_and_go_with_the_scenario(store: Store) -> None:
    shop = await store.create_scenario("alice", "shop", [machine("web")], NOW)
    lab = await store.create_scenario("alice", "lab", [machine("db")], NOW)
    await store.kv_set(shop.id, "db/ready", b"yes", None, NOW)
    await store.kv_set(shop.id, "lease", b"l1", 10.0, NOW)
    assert (
        await store.kv_get(shop.id, "db/ready", NOW) == b"yes" and await store.kv_get(lab.id, "db/ready", NOW) is None
    )
    assert await store.kv_get(shop.id, "lease", NOW + 5) == b"l1"
    await store.kv_set(shop.id, "db/ready", b"again", None, NOW)
    assert await store.kv_get(shop.id, "db/ready", NOW) == b"again"
    await store.delete_scenario(shop.id)
    assert await store.kv_get(shop.id, "db/ready", NOW) is None


async def test_stored_jobs_are_kept_per_owner_and_versioned(store: Store) -> None:
    first = await store.put_job("alice", "deploy", "sh", "echo one", NOW)
    assert (first.name, first.shell, first.script, first.version, first.created) == ("deploy", "sh", "echo one", 1, NOW)
    second = await store.put_job("alice", "deploy", "powershell", "Write-Output two", NOW + 5)
    assert (second.version, second.created, second.updated, second.shell) == (2, NOW, NOW + 5, "powershell")
    await store.put_job("alice", "backup", "sh", "true", NOW)
    await store.put_job("bob", "deploy", "sh", "echo bob", NOW)
    assert [j.name for j in await store.jobs("alice")] == ["backup", "deploy"]
    assert (await store.job("alice", "deploy")) == second and (await store.job("bob", "deploy")).script == "echo bob"
    assert await store.job("alice", "nope") is None
    assert await store.delete_job("alice", "deploy") and not await store.delete_job("alice", "deploy")
    assert [j.name for j in await store.jobs("alice")] == ["backup"] and len(await store.jobs("bob")) == 1


async def test_a_signed_job_keeps_its_statement_signature_and_the_masters_version(store: Store) -> None:
    statement = {"master": "alice", "scenario": "", "name": "deploy", "version": 7, "shell": "sh",
                 "script": "echo seven", "created": NOW}  # fmt: skip
    seventh = await store.put_job("alice", "deploy", "sh", "echo seven", NOW, version=7, statement=statement,
                                  signature=b"\x00sig")  # fmt: skip
    assert (seventh.version, seventh.statement, seventh.signature) == (7, statement, b"\x00sig")
    assert await store.job("alice", "deploy") == seventh and (await store.jobs("alice")) == [seventh]
    assert seventh.to_wire()["signed"] and seventh.to_wire()["statement"] == statement
    # The version is the master's choice, even a lower one (replacing a copy the hub altered).
    lower = {**statement, "version": 2, "script": "echo two"}
    second = await store.put_job("alice", "deploy", "sh", "echo two", NOW + 1, version=2, statement=lower,
                                 signature=b"s2")  # fmt: skip
    assert (second.version, second.created, second.statement, second.signature) == (2, NOW, lower, b"s2")
    unsigned = await store.put_job("alice", "deploy", "sh", "echo plain", NOW + 2)
    assert (unsigned.version, unsigned.statement, unsigned.signature) == (3, None, b"")
    assert not unsigned.to_wire()["signed"]


async def test_machine_labels_round_trip(store: Store) -> None:
    spec = MachineSpec("web", "linux", "web", public_key(), labels={"tier": "front", "team/owner": "ops"})
    scenario = await store.create_scenario("alice", "shop", [spec, machine("db")], NOW)
    by_name = {m.name: m for m in await store.machines(scenario.id)}
    assert by_name["web"].labels == {"tier": "front", "team/owner": "ops"} and by_name["db"].labels == {}
    assert by_name["web"].to_wire()["labels"] == {"tier": "front", "team/owner": "ops"}


async def test_rotating_a_machine_key_keeps_its_id_and_remembers_the_old_key(store: Store) -> None:
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    new_key = public_key()
    rotated = await store.rotate_machine_key(spec.id, new_key, "ab" * 32)
    assert rotated is not None and rotated.id == spec.id and rotated.scenario_id == scenario.id
    assert rotated.public_key == new_key and rotated.report_key == "ab" * 32
    assert rotated.former_keys == [spec.public_key] and rotated.to_wire()["former_keys"] == [spec.public_key]
    third = public_key()
    again = await store.rotate_machine_key(spec.id, third, "cd" * 32)
    assert again is not None and again.former_keys == [spec.public_key, new_key]
    assert (await store.machines(scenario.id))[0].public_key == third
    assert await store.rotate_machine_key("nosuchmachine000000", third, "") is None


async def test_creating_a_scenario_stores_it_with_its_machines_offline(store: Store) -> None:
    specs = [machine("web"), machine("db")]
    scenario = await store.create_scenario("alice", "shop", specs, NOW)
    assert (scenario.owner, scenario.name, scenario.created) == ("alice", "shop", NOW)
    assert await store.scenario(scenario.id) == scenario
    assert await store.scenario_by_name("alice", "shop") == scenario
    machines = await store.machines(scenario.id)
    assert sorted(m.name for m in machines) == ["db", "web"]
    for spec in specs:
        record = await store.machine(spec.id)
        assert record is not None
        assert (record.scenario_id, record.name, record.os, record.role, record.public_key) == (
            scenario.id, spec.name, "linux", spec.role, spec.public_key,
        )  # fmt: skip
        assert record.status is MachineStatus.OFFLINE
        assert (record.facts, record.ips, record.last_seen) == ({}, [], None)
    assert await store.last_cursor(scenario.id) == 0


async def test_a_scenario_name_is_unique_per_owner(store: Store) -> None:
    first = await store.create_scenario("alice", "shop", [machine("web")], NOW)
    with pytest.raises(StoreConflict):
        await store.create_scenario("alice", "shop", [machine("web")], NOW)
    assert [s.id for s in await store.scenarios("alice")] == [first.id]


async def test_a_machine_key_cannot_serve_two_scenarios_and_a_failed_create_leaves_nothing(store: Store) -> None:
    shared = public_key()
    await store.create_scenario("alice", "shop", [machine("web", shared)], NOW)
    fresh = machine("cache")
    for owner in ("alice", "bob"):
        with pytest.raises(StoreConflict):
            await store.create_scenario(owner, "other", [fresh, machine("web2", shared)], NOW)
        assert await store.scenario_by_name(owner, "other") is None
    assert await store.machine(fresh.id) is None, "the create must be atomic"


async def test_machines_added_to_a_scenario_join_it_offline(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("web")], NOW)
    added = [machine("db"), MachineSpec("win", "windows", "dev", public_key(), "ab" * 32, {"tier": "dev"})]
    assert await store.add_machines(scenario.id, added)
    assert sorted(m.name for m in await store.machines(scenario.id)) == ["db", "web", "win"]
    win = await store.machine(added[1].id)
    assert win is not None and win.scenario_id == scenario.id and win.status is MachineStatus.OFFLINE
    assert (win.os, win.role, win.report_key, win.labels) == ("windows", "dev", "ab" * 32, {"tier": "dev"})


async def test_adding_a_taken_name_or_key_adds_nothing(store: Store) -> None:
    shared = public_key()
    scenario = await store.create_scenario("alice", "shop", [machine("web", shared)], NOW)
    other = await store.create_scenario("bob", "lab", [machine("box")], NOW)
    fresh = machine("cache")
    for clash in ([fresh, machine("web")], [fresh, machine("web2", shared)], [fresh, machine("cache")]):
        with pytest.raises(StoreConflict):
            await store.add_machines(scenario.id, clash)
        assert await store.machine(fresh.id) is None, "adding must be atomic"
    with pytest.raises(StoreConflict):  # a key serves one scenario, whoever owns the other
        await store.add_machines(other.id, [machine("web", shared)])
    assert await store.add_machines(other.id, [machine("web")])  # names are per scenario


async def test_adding_to_an_unknown_scenario_adds_nothing(store: Store) -> None:
    spec = machine("db")
    assert not await store.add_machines("no-such-scenario", [spec])
    assert await store.machine(spec.id) is None


async def test_a_revoked_machines_name_can_be_used_again(store: Store) -> None:
    old = machine("db")
    scenario = await store.create_scenario("alice", "shop", [old], NOW)
    assert await store.delete_machine(old.id)
    assert await store.add_machines(scenario.id, [machine("db")])
    assert [m.name for m in await store.machines(scenario.id)] == ["db"]


def enrollment(token_id: str, scenario_id: str, uses: int = 2, expires: float = NOW + 3600) -> EnrollmentRecord:
    return EnrollmentRecord(token_id, scenario_id, {"id": token_id, "role": "web"}, b"\x02" * 64, uses, expires, NOW)


async def test_a_token_lets_as_many_machines_join_as_its_uses_and_keeps_their_registrations(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    assert await store.put_enrollment(enrollment("t1", scenario.id, uses=2))
    joiners = [machine(f"web{i}") for i in range(3)]
    outcomes = [await store.enroll_machine(scenario.id, "t1", spec, {"name": spec.name}, NOW + 1) for spec in joiners]

    assert outcomes == [EnrollOutcome.ENROLLED, EnrollOutcome.ENROLLED, EnrollOutcome.USED_UP]
    assert sorted(m.name for m in await store.machines(scenario.id)) == ["db", "web0", "web1"]
    assert await store.machine(joiners[2].id) is None
    [record] = await store.enrollments(scenario.id)
    assert (record.id, record.uses, record.used, record.revoked) == ("t1", 2, 2, False)
    assert record.registrations == [{"name": "web0"}, {"name": "web1"}]
    assert (record.claims, record.signature, record.expires) == ({"id": "t1", "role": "web"}, b"\x02" * 64, NOW + 3600)


async def test_a_revoked_expired_or_unknown_token_adds_nothing(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    other = await store.create_scenario("bob", "lab", [machine("box")], NOW)
    await store.put_enrollment(enrollment("live", scenario.id))
    await store.put_enrollment(enrollment("old", scenario.id, expires=NOW + 10))
    await store.put_enrollment(enrollment("gone", scenario.id))
    assert await store.revoke_enrollment(scenario.id, "gone")
    assert not await store.revoke_enrollment(other.id, "live")  # tokens are per scenario
    spec = machine("web")

    assert await store.enroll_machine(scenario.id, "gone", spec, {}, NOW) is EnrollOutcome.REVOKED
    assert await store.enroll_machine(scenario.id, "old", spec, {}, NOW + 10) is EnrollOutcome.EXPIRED
    assert await store.enroll_machine(scenario.id, "nope", spec, {}, NOW) is EnrollOutcome.NO_TOKEN
    assert await store.enroll_machine(other.id, "live", spec, {}, NOW) is EnrollOutcome.NO_TOKEN
    assert await store.machine(spec.id) is None
    assert sorted((r.id, r.revoked, r.used) for r in await store.enrollments(scenario.id)) == [
        ("gone", True, 0), ("live", False, 0), ("old", False, 0),
    ]  # fmt: skip


async def test_a_join_with_a_taken_name_or_key_uses_nothing(store: Store) -> None:
    shared = public_key()
    scenario = await store.create_scenario("alice", "shop", [machine("db", shared)], NOW)
    await store.put_enrollment(enrollment("t1", scenario.id, uses=1))
    for clash in (machine("db"), machine("web", shared)):
        with pytest.raises(StoreConflict):
            await store.enroll_machine(scenario.id, "t1", clash, {}, NOW)
    assert [r.used for r in await store.enrollments(scenario.id)] == [0]
    assert await store.enroll_machine(scenario.id, "t1", machine("web"), {}, NOW) is EnrollOutcome.ENROLLED


async def test_tokens_go_with_their_scenario_and_need_one(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    await store.put_enrollment(enrollment("t1", scenario.id))
    with pytest.raises(StoreConflict):
        await store.put_enrollment(enrollment("t1", scenario.id))
    assert not await store.put_enrollment(enrollment("t2", "no-such-scenario"))
    await store.delete_scenario(scenario.id)
    assert await store.enrollments(scenario.id) == []
    again = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    assert await store.enrollments(again.id) == []


# compositions
def composition(composition_id: str, scenario_id: str, created: float = NOW, job: str = "setup") -> CompositionRecord:
    wire = {"id": composition_id, "target": "role:web", "body": {"command": "true", "job": job}, "sig": b"\x03" * 64}
    return CompositionRecord(composition_id, scenario_id, wire, created)


async def test_compositions_are_kept_per_scenario_oldest_first_and_replaced_by_id(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    other = await store.create_scenario("bob", "lab", [machine("box")], NOW)
    assert await store.put_composition(composition("c2", scenario.id, NOW + 2))
    assert await store.put_composition(composition("c1", scenario.id, NOW + 1))
    assert await store.put_composition(composition("c1", other.id, NOW))
    assert await store.put_composition(composition("c2", scenario.id, NOW + 2, job="again"))

    kept = await store.compositions(scenario.id)
    assert [(c.id, c.created) for c in kept] == [("c1", NOW + 1), ("c2", NOW + 2)]
    assert kept[1].composition == composition("c2", scenario.id, job="again").composition
    assert kept[1].scenario_id == scenario.id
    assert [c.id for c in await store.compositions(other.id)] == ["c1"]


async def test_a_removed_composition_is_forgotten_only_in_its_scenario(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    other = await store.create_scenario("bob", "lab", [machine("box")], NOW)
    await store.put_composition(composition("c1", scenario.id))
    await store.put_composition(composition("c1", other.id))
    assert await store.remove_composition(scenario.id, "c1")
    assert not await store.remove_composition(scenario.id, "c1")
    assert not await store.remove_composition(scenario.id, "never")
    assert await store.compositions(scenario.id) == []
    assert [c.id for c in await store.compositions(other.id)] == ["c1"]


async def test_compositions_go_with_their_scenario_and_need_one(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("db")], NOW)
    await store.put_composition(composition("c1", scenario.id))
    assert not await store.put_composition(composition("c2", "no-such-scenario"))
    await store.delete_scenario(scenario.id)
    assert await store.compositions(scenario.id) == []
    assert await store.compositions("no-such-scenario") == []


async def test_a_scenario_may_start_empty_and_grow(store: Store) -> None:
    scenario = await store.create_scenario("alice", "office", [], NOW)
    assert await store.machines(scenario.id) == []
    assert (await store.scenario_by_name("alice", "office")) == scenario
    assert await store.add_machines(scenario.id, [machine("pc1")])
    assert [m.name for m in await store.machines(scenario.id)] == ["pc1"]


async def test_scenarios_are_per_owner(store: Store) -> None:
    alices = await store.create_scenario("alice", "shop", [machine("web")], NOW)
    bobs = await store.create_scenario("bob", "shop", [machine("web")], NOW + 1)
    other = await store.create_scenario("alice", "lab", [machine("box")], NOW + 2)
    assert [s.id for s in await store.scenarios("alice")] == [alices.id, other.id]
    assert [s.id for s in await store.scenarios("bob")] == [bobs.id]
    assert await store.scenarios("carol") == []
    assert await store.scenario_by_name("bob", "shop") == bobs
    assert await store.scenario_by_name("bob", "lab") is None
    assert await store.scenario("no-such-id") is None


async def test_deleting_a_scenario_removes_its_machines_orders_and_events(store: Store) -> None:
    specs = [machine("web"), machine("db")]
    doomed = await store.create_scenario("alice", "doomed", specs, NOW)
    kept = await store.create_scenario("alice", "kept", [machine("box")], NOW)
    (kept_box,) = await store.machines(kept.id)
    await store.add_order(order("o-doomed", doomed.id, specs[0].id), [b"chunk"])
    await store.add_order(order("o-kept", kept.id, kept_box.id), [])
    await store.append_event(doomed.id, "scenario_created", "", {}, NOW)
    await store.append_event(kept.id, "scenario_created", "", {}, NOW)

    revoked = await store.delete_scenario(doomed.id)

    assert sorted(revoked) == sorted(s.id for s in specs)
    assert await store.scenario(doomed.id) is None
    assert await store.scenario_by_name("alice", "doomed") is None
    assert await store.machines(doomed.id) == []
    assert [await store.machine(s.id) for s in specs] == [None, None]
    assert await store.order("o-doomed") is None
    assert await store.order_chunks("o-doomed") == []
    assert await store.orders(doomed.id) == []
    assert await store.queued_orders(specs[0].id) == []
    assert await store.events_after(doomed.id, 0, 100) == []
    assert await store.last_cursor(doomed.id) == 0
    # the other scenario is untouched
    assert [s.name for s in await store.scenarios("alice")] == ["kept"]
    assert [o.id for o in await store.orders(kept.id)] == ["o-kept"]
    assert [e.cursor for e in await store.events_after(kept.id, 0, 100)] == [1]


async def test_deleting_one_machine_revokes_it_and_keeps_the_rest_and_its_history(store: Store) -> None:
    web, db = machine("web"), machine("db")
    scenario = await store.create_scenario("alice", "shop", [web, db], NOW)
    await store.add_order(order("o1", scenario.id, web.id), [])
    await store.update_machine(web.id, status=MachineStatus.READY, last_seen=NOW)

    assert await store.delete_machine(web.id) is True
    assert await store.machine(web.id) is None
    assert [m.name for m in await store.machines(scenario.id)] == ["db"]
    assert [o.id for o in await store.orders(scenario.id)] == ["o1"]  # history stays
    assert await store.delete_machine(web.id) is False
    # its key may join a scenario again
    again = await store.create_scenario("alice", "lab", [MachineSpec("web", "linux", "web", web.public_key)], NOW)
    record = await store.machine(web.id)
    assert record is not None and record.scenario_id == again.id


async def test_a_deleted_machine_key_can_be_used_again(store: Store) -> None:
    key = public_key()
    first = await store.create_scenario("alice", "one", [machine("web", key)], NOW)
    await store.delete_scenario(first.id)
    second = await store.create_scenario("alice", "one", [machine("web", key)], NOW)
    record = await store.machine(MachineSpec("web", "linux", "web", key).id)
    assert record is not None and record.scenario_id == second.id


async def test_deleting_an_unknown_scenario_revokes_nothing(store: Store) -> None:
    assert await store.delete_scenario("no-such-id") == []


async def test_update_machine_sets_status_and_keeps_facts_unless_given(store: Store) -> None:
    spec = machine("web")
    await store.create_scenario("alice", "shop", [spec], NOW)
    facts = {"hostname": "web-1", "cpus": {"logical": 4}, "disks": [{"mountpoint": "/"}]}
    await store.update_machine(spec.id, status=MachineStatus.READY, last_seen=NOW + 1, facts=facts, ips=["10.0.0.5"])
    record = await store.machine(spec.id)
    assert record is not None
    assert (record.status, record.last_seen, record.facts, record.ips) == (
        MachineStatus.READY, NOW + 1, facts, ["10.0.0.5"],
    )  # fmt: skip

    await store.update_machine(spec.id, status=MachineStatus.OFFLINE, last_seen=NOW + 2)
    record = await store.machine(spec.id)
    assert record is not None
    assert (record.status, record.last_seen, record.facts, record.ips) == (
        MachineStatus.OFFLINE, NOW + 2, facts, ["10.0.0.5"],
    )  # fmt: skip
    assert record.to_wire()["status"] == "offline"


async def test_updating_an_unknown_machine_changes_nothing(store: Store) -> None:
    await store.update_machine("no-such-machine", status=MachineStatus.READY, last_seen=NOW)
    assert await store.machine("no-such-machine") is None


async def test_reset_presence_marks_every_machine_offline_and_keeps_what_it_knew(store: Store) -> None:
    web, db, cache = machine("web"), machine("db"), machine("cache")
    await store.create_scenario("alice", "shop", [web, db, cache], NOW)
    await store.update_machine(
        web.id, status=MachineStatus.READY, last_seen=NOW, facts={"os": "Linux"}, ips=["10.0.0.1"]
    )
    await store.update_machine(db.id, status=MachineStatus.CONNECTED, last_seen=NOW)
    assert await store.reset_presence(NOW + 5) == 2
    assert {m.name: m.status for m in await store.machines((await store.scenario_by_name("alice", "shop")).id)} == {
        "web": MachineStatus.OFFLINE, "db": MachineStatus.OFFLINE, "cache": MachineStatus.OFFLINE,
    }  # fmt: skip
    record = await store.machine(web.id)
    assert record is not None and (record.facts, record.ips) == ({"os": "Linux"}, ["10.0.0.1"])
    assert await store.reset_presence(NOW + 6) == 0


# orders
async def test_an_order_is_stored_with_its_chunks(store: Store) -> None:
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    record = order("o1", scenario.id, spec.id)
    chunks = [b"first", b"\x00" * 1000, b"last"]
    await store.add_order(record, chunks)
    assert await store.order("o1") == record
    assert await store.order_chunks("o1") == chunks
    assert await store.order("o2") is None
    assert await store.order_chunks("o2") == []


async def test_an_order_id_can_only_be_used_once(store: Store) -> None:
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    await store.add_order(order("o1", scenario.id, spec.id), [b"a"])
    with pytest.raises(StoreConflict):
        await store.add_order(order("o1", scenario.id, spec.id, created=NOW + 5), [b"b"])
    stored = await store.order("o1")
    assert stored is not None and stored.created == NOW
    assert await store.order_chunks("o1") == [b"a"]


async def test_an_order_for_an_unknown_scenario_fails(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.add_order(order("o1", "no-such-scenario", "no-such-machine"), [])
    assert await store.order("o1") is None


async def test_queued_orders_come_oldest_first_and_leave_the_queue_when_acknowledged(store: Store) -> None:
    web, db = machine("web"), machine("db")
    scenario = await store.create_scenario("alice", "shop", [web, db], NOW)
    # submission order, not id order nor timestamps, decides
    for order_id in ("o-c", "o-a", "o-b"):
        await store.add_order(order(order_id, scenario.id, web.id, created=NOW), [])
    await store.add_order(order("o-db", scenario.id, db.id), [])
    assert [o.id for o in await store.queued_orders(web.id)] == ["o-c", "o-a", "o-b"]
    assert [o.id for o in await store.queued_orders(db.id)] == ["o-db"]
    assert await store.queued_count(web.id) == 3 and await store.queued_count("no-such-machine") == 0

    assert await store.set_order_state("o-a", OrderState.DELIVERED, NOW + 1)
    assert [o.id for o in await store.queued_orders(web.id)] == ["o-c", "o-b"]
    assert await store.queued_count(web.id) == 2
    assert [o.id for o in await store.orders(scenario.id)] == ["o-c", "o-a", "o-b", "o-db"]
    assert [o.id for o in await store.orders(scenario.id, ["o-b", "o-db"])] == ["o-b", "o-db"]


async def test_set_order_state_moves_open_orders_and_refuses_final_or_unknown_ones(store: Store) -> None:
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    await store.add_order(order("o1", scenario.id, spec.id), [])
    assert await store.set_order_state("o1", OrderState.DELIVERED, NOW + 1)
    assert await store.set_order_state("o1", OrderState.RUNNING, NOW + 2)
    stored = await store.order("o1")
    assert stored is not None and (stored.state, stored.updated) == (OrderState.RUNNING, NOW + 2)

    assert await store.store_result("o1", OrderState.SUCCEEDED, {"exit_code": 0}, NOW + 3)
    assert not await store.set_order_state("o1", OrderState.RUNNING, NOW + 4)
    stored = await store.order("o1")
    assert stored is not None and (stored.state, stored.updated) == (OrderState.SUCCEEDED, NOW + 3)
    assert not await store.set_order_state("no-such-order", OrderState.DELIVERED, NOW)


async def test_a_result_is_stored_only_once(store: Store) -> None:
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    await store.add_order(order("o1", scenario.id, spec.id), [])
    result = {"order_id": "o1", "status": "succeeded", "stdout": b"out\x00bytes", "exit_code": 0}
    assert await store.store_result("o1", OrderState.SUCCEEDED, result, NOW + 1)
    assert not await store.store_result("o1", OrderState.FAILED, {"exit_code": 1}, NOW + 2)
    stored = await store.order("o1")
    assert stored is not None
    assert (stored.state, stored.result, stored.updated) == (OrderState.SUCCEEDED, result, NOW + 1)
    assert await store.queued_orders(spec.id) == []
    assert not await store.store_result("no-such-order", OrderState.SUCCEEDED, {}, NOW)


async def test_a_queued_order_can_be_finished_without_a_daemon_result(store: Store) -> None:
    """What the hub does when a master cancels an order its machine never received."""
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    await store.add_order(order("o1", scenario.id, spec.id), [b"chunk"])
    assert await store.store_result("o1", OrderState.CANCELLED, {}, NOW + 1)
    stored = await store.order("o1")
    assert stored is not None and stored.state is OrderState.CANCELLED
    assert await store.queued_orders(spec.id) == []


# How the contract suite puts an order in each state: along the table, from queued.
_REACH = {
    OrderState.QUEUED: [],
    OrderState.DELIVERED: [OrderState.DELIVERED],
    OrderState.RUNNING: [OrderState.DELIVERED, OrderState.RUNNING],
    **{s: [s] for s in OrderState if s.final},
}


@pytest.mark.parametrize("start", list(OrderState), ids=str)
async def test_orders_move_only_from_the_states_the_transition_table_names(store: Store, start: OrderState) -> None:
    """Both backends check-and-set against ``protocol.orders.sources``: each target is reached exactly from the
    states the table moves to it from, and the order stays as it was otherwise."""
    spec = machine("web")
    scenario = await store.create_scenario("alice", "shop", [spec], NOW)
    for target in OrderState:
        order_id = f"o-{target.value}"
        await store.add_order(order(order_id, scenario.id, spec.id), [])
        for step in _REACH[start]:
            if step.final:
                assert await store.store_result(order_id, step, {}, NOW)
            else:
                assert await store.set_order_state(order_id, step, NOW)
        if target.final:
            moved = await store.store_result(order_id, target, {"status": target.value}, NOW + 1)
        else:
            moved = await store.set_order_state(order_id, target, NOW + 1)
        assert moved is (start in order_sources(target)), (start, target)
        stored = await store.order(order_id)
        assert stored is not None and stored.state is (target if moved else start)


# events
async def test_events_are_numbered_from_one_per_scenario(store: Store) -> None:
    one = await store.create_scenario("alice", "one", [machine("a")], NOW)
    two = await store.create_scenario("alice", "two", [machine("b")], NOW)
    appended = []
    for i in range(4):
        appended.append(await store.append_event(one.id, "tick", "a", {"i": i}, NOW + i))
        if i % 2:
            appended.append(await store.append_event(two.id, "tock", "b", {"i": i}, NOW + i))
    assert [(e.scenario_id, e.cursor) for e in appended] == [
        (one.id, 1), (one.id, 2), (two.id, 1), (one.id, 3), (one.id, 4), (two.id, 2),
    ]  # fmt: skip
    assert await store.last_cursor(one.id) == 4
    assert await store.last_cursor(two.id) == 2
    events = await store.events_after(two.id, 0, 10)
    assert [(e.cursor, e.kind, e.machine, e.data, e.ts) for e in events] == [
        (1, "tock", "b", {"i": 1}, NOW + 1), (2, "tock", "b", {"i": 3}, NOW + 3),
    ]  # fmt: skip


async def test_events_after_pages_through_the_log(store: Store) -> None:
    scenario = await store.create_scenario("alice", "shop", [machine("a")], NOW)
    for i in range(25):
        await store.append_event(scenario.id, "tick", "", {"i": i, "blob": b"\xff" * i}, NOW + i)
    pages, cursor = [], 0
    while page := await store.events_after(scenario.id, cursor, 10):
        pages.append([e.cursor for e in page])
        cursor = page[-1].cursor
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    assert [e.data["i"] for e in await store.events_after(scenario.id, 20, 3)] == [20, 21, 22]
    assert (await store.events_after(scenario.id, 24, 10))[0].data == {"i": 24, "blob": b"\xff" * 24}
    assert await store.events_after(scenario.id, 25, 10) == []
    assert await store.events_after(scenario.id, 1000, 10) == []


async def test_appending_to_an_unknown_scenario_fails(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.append_event("no-such-scenario", "tick", "", {}, NOW)


# durability
async def test_everything_survives_closing_and_reopening(backend: Backend, location: Any) -> None:
    first = backend.open(location)
    try:
        master = await first.enroll_master("alice", public_key(), NOW)
        spec = machine("web")
        scenario = await first.create_scenario(master.id, "shop", [spec], NOW)
        await first.update_machine(spec.id, status=MachineStatus.READY, last_seen=NOW, facts={"os": "Linux"})
        await first.add_order(order("done", scenario.id, spec.id), [])
        await first.store_result("done", OrderState.SUCCEEDED, {"stdout": b"ok"}, NOW + 1)
        await first.add_order(order("queued", scenario.id, spec.id), [b"c1", b"c2"])
        await first.put_token(token("tok", master.id, delegation={"sig": b"\x01"}, sealed_key=b"sealed"))
        for i in range(3):
            await first.append_event(scenario.id, "tick", "web", {"i": i}, NOW + i)
    finally:
        await first.close()

    second = backend.open(location)
    try:
        assert await second.master(master.id) == master
        assert await second.scenario_by_name(master.id, "shop") == scenario
        record = await second.machine(spec.id)
        assert record is not None and (record.status, record.facts) == (MachineStatus.READY, {"os": "Linux"})
        done = await second.order("done")
        assert done is not None and (done.state, done.result) == (OrderState.SUCCEEDED, {"stdout": b"ok"})
        assert [o.id for o in await second.queued_orders(spec.id)] == ["queued"]
        assert await second.order_chunks("queued") == [b"c1", b"c2"]
        kept = await second.token("tok")
        assert kept is not None and (kept.delegation, kept.sealed_key) == ({"sig": b"\x01"}, b"sealed")
        assert await second.tokens(master.id) == [kept]
        assert [e.data["i"] for e in await second.events_after(scenario.id, 0, 10)] == [0, 1, 2]
        assert (await second.append_event(scenario.id, "tick", "", {}, NOW)).cursor == 4
    finally:
        await second.close()


async def test_the_report_key_round_trips_but_is_never_on_the_wire(store: Store) -> None:
    keyed = MachineSpec("web", "linux", "web", public_key(), secrets.token_hex(32))
    keyless = machine("db")
    scenario = await store.create_scenario("alice", "boot", [keyed, keyless], NOW)
    record = await store.machine(keyed.id)
    assert record is not None and record.report_key == keyed.report_key
    other = await store.machine(keyless.id)
    assert other is not None and other.report_key == ""
    assert {m.name: m.report_key for m in await store.machines(scenario.id)} == {"web": keyed.report_key, "db": ""}
    for listed in (record, other, *await store.machines(scenario.id)):
        wire = listed.to_wire()
        assert "report_key" not in wire
        if listed.report_key:
            assert listed.report_key not in repr(wire)
    # updates and a presence reset leave the key alone
    await store.update_machine(
        keyed.id, status=MachineStatus.READY, last_seen=NOW + 1, facts={"a": 1}, ips=["10.0.0.1"]
    )
    await store.reset_presence(NOW + 2)
    again = await store.machine(keyed.id)
    assert again is not None and again.report_key == keyed.report_key


async def test_the_report_key_survives_a_reopen(backend: Backend, location: Any) -> None:
    spec = MachineSpec("web", "linux", "web", public_key(), secrets.token_hex(32))
    first = backend.open(location)
    try:
        await first.create_scenario("alice", "boot", [spec], NOW)
    finally:
        await first.close()
    second = backend.open(location)
    try:
        record = await second.machine(spec.id)
        assert record is not None and record.report_key == spec.report_key
    finally:
        await second.close()


# boot-report replay memory
async def test_a_boot_report_is_first_only_once_per_machine(store: Store) -> None:
    now = time.time()
    mac = "hmac-sha256=" + "ab" * 32
    assert await store.first_boot_report("m1", mac, now + 60, now)
    assert not await store.first_boot_report("m1", mac, now + 60, now + 1)
    assert not await store.first_boot_report("m1", mac, now + 600, now + 2)  # remembering again changes nothing
    assert await store.first_boot_report("m2", mac, now + 60, now)  # per machine
    assert await store.first_boot_report("m1", "hmac-sha256=" + "cd" * 32, now + 60, now)


async def test_a_remembered_boot_report_is_forgotten_once_expired(store: Store) -> None:
    now = time.time()
    mac = "hmac-sha256=" + "ef" * 32
    assert await store.first_boot_report("m1", mac, now + 0.2, now)
    # Redis expires entries on its own clock (PX), so real time must pass; how long it takes is not asserted, only
    # that the entry goes (a slow machine just loops longer). Asking while remembered changes nothing.
    for _ in range(200):
        await asyncio.sleep(0.05)
        if await store.first_boot_report("m1", mac, time.time() + 60, time.time()):
            break
    else:
        pytest.fail("a boot report past its expiry was still remembered after 10 s")
    assert not await store.first_boot_report("m1", mac, time.time() + 60, time.time())  # remembered anew


async def test_boot_report_memory_survives_a_reopen_and_is_shared_by_two_openings(
    backend: Backend, location: Any
) -> None:
    now = time.time()
    mac = "hmac-sha256=" + "01" * 32
    first = backend.open(location)
    try:
        assert await first.first_boot_report("m1", mac, now + 60, now)
        beside = backend.open(location)  # another replica on the same store
        try:
            assert not await beside.first_boot_report("m1", mac, now + 60, now)
        finally:
            await beside.close()
    finally:
        await first.close()
    reopened = backend.open(location)  # a restarted hub
    try:
        assert not await reopened.first_boot_report("m1", mac, now + 60, now + 1)
    finally:
        await reopened.close()
