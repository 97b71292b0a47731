"""The scenarios feature in process (harness.HubContext: the app's hub on SQLite and the local backplane, peers
over real sessions, no sockets)."""

from __future__ import annotations

import os
import time

from protocol import ErrorCode, Identity
from protocol.events import MachineConnected, MachineReady, MachineRevoked, MachinesAdded, ScenarioCreated
from protocol.messages import (
    EventsSubscribe,
    MachineAdd,
    MachineRevoke,
    ScenarioCreate,
    ScenarioDelete,
    ScenarioList,
    ScenarioShow,
    SystemReady,
)
from server.features.scenarios import scenario_summary, scenario_wire
from server.store import MachineSpec, MachineStatus
from tests.server.features.harness import HubContext, declared_machines


def spec(name: str) -> MachineSpec:
    return MachineSpec(name, "linux", "web", Identity.generate(os.urandom).public.to_text())


def machine_wire(name: str, *, os_name: str = "linux", key: str = "") -> dict[str, str]:
    key = key or Identity.generate(os.urandom).public.to_text()
    return {"name": name, "os": os_name, "role": "web", "public_key": key}


async def test_a_machine_whose_replica_died_is_offline_in_the_list_as_in_the_scenario(ctx: HubContext) -> None:
    """The store still says ready (its replica died without saying so), but no replica holds its session: the
    scenario list (WebSocket and REST share scenario_summary) and the scenario view agree that it is offline."""
    hub = ctx.hub
    master = await hub.store.enroll_master("ana", Identity.generate(os.urandom).public.to_text(), time.time())
    scenario = await hub.store.create_scenario(master.id, "shop", [spec("db"), spec("web")], time.time())
    db = next(m for m in await hub.store.machines(scenario.id) if m.name == "db")
    await hub.store.update_machine(db.id, status=MachineStatus.READY, last_seen=time.time())

    summary = await scenario_summary(hub, scenario)
    shown = await scenario_wire(hub, scenario)

    assert summary == {"name": "shop", "created": scenario.created, "machines": 2, "ready": 0}
    assert {m["name"]: m["status"] for m in shown["machines"]} == {"db": "offline", "web": "offline"}


async def test_a_created_scenario_is_shown_listed_and_announced_with_its_machines(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")

    shown = await ctx.ok(ana, ScenarioShow("shop"))
    listed = await ctx.ok(ana, ScenarioList())

    assert {m["name"]: m["id"] for m in shown["machines"]} == {name: m.id for name, m in machines.items()}
    assert [(s["name"], s["machines"], s["ready"]) for s in listed["scenarios"]] == [("shop", 2, 0)]
    assert await ctx.events(ana, "shop") == [(ScenarioCreated(machines=["db", "web"]), "")]


async def test_another_master_never_sees_nor_touches_a_scenario(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")

    assert (await ctx.ok(bob, ScenarioList()))["scenarios"] == []
    for body in (ScenarioShow("shop"), ScenarioDelete("shop"), MachineRevoke("shop", "db"), EventsSubscribe("shop")):
        error = await ctx.refused(bob, body)
        assert error.code == ErrorCode.NOT_FOUND.value and "no scenario named 'shop'" in error.message
    assert len((await ctx.ok(ana, ScenarioShow("shop")))["machines"]) == 2
    # Its own scenario of the same name is another one.
    await ctx.create_scenario(bob, "shop", [("cache", "cache")])
    assert [m["name"] for m in (await ctx.ok(bob, ScenarioShow("shop")))["machines"]] == ["cache"]


async def test_malformed_scenarios_are_refused_and_nothing_is_stored(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    key = Identity.generate(os.urandom).public.to_text()
    cases = {
        "bad/name": [machine_wire("db")],
        "twins": [machine_wire("db"), machine_wire("db")],
        "one-key": [machine_wire("db", key=key), machine_wire("web", key=key)],
        "dos": [machine_wire("db", os_name="dos")],
        "no-key": [machine_wire("db", key="ed25519:nope")],
        "bad-machine": [machine_wire("-db")],
    }
    for name, machines in cases.items():
        error = await ctx.refused(ana, ScenarioCreate(name, machines))
        assert error.code == ErrorCode.INVALID_REQUEST.value, (name, error.message)
    assert (await ctx.ok(ana, ScenarioList()))["scenarios"] == []


async def test_a_scenario_name_is_taken_once_per_master(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")

    error = await ctx.refused(ana, ScenarioCreate("shop", [machine_wire("db")]))

    assert error.code == ErrorCode.ALREADY_EXISTS.value


async def test_a_connected_machine_that_reports_ready_is_ready_with_its_facts(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db = await ctx.daemon(machines["db"])

    facts = {"hostname": "db-1", "addresses": ["10.0.0.5"], "os": "linux"}
    await ctx.tell(db, SystemReady(facts, "1.0"))

    shown = {m["name"]: m for m in (await ctx.ok(ana, ScenarioShow("shop")))["machines"]}
    assert shown["db"]["status"] == MachineStatus.READY.value and shown["web"]["status"] == "offline"
    assert (await ctx.ok(ana, ScenarioList()))["scenarios"][0]["ready"] == 1
    events = await ctx.events(ana, "shop")
    assert (MachineConnected(replica="here"), "db") in events
    [(ready, machine)] = [(p, m) for p, m in events if isinstance(p, MachineReady)]
    assert machine == "db" and ready.hostname == "db-1"


async def test_a_master_may_not_report_ready_and_a_machine_may_not_ask_for_scenarios(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    for peer, body in ((ana, SystemReady({}, "1.0")), (db, ScenarioList()), (db, ScenarioDelete("shop"))):
        error = await ctx.refused(peer, body)
        assert error.code == ErrorCode.INVALID_REQUEST.value
        assert f"a {peer.role.value} may not send {body.TYPE.value}" in error.message
    assert len((await ctx.ok(ana, ScenarioShow("shop")))["machines"]) == 2


async def test_a_revoked_machine_is_dropped_and_its_session_closed(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    db = await ctx.daemon(machines["db"])

    answer = await ctx.ok(ana, MachineRevoke("shop", "db"))
    unknown = await ctx.refused(ana, MachineRevoke("shop", "nope"))

    assert answer == {"revoked": machines["db"].id}
    assert unknown.code == ErrorCode.NOT_FOUND.value
    assert db.conn.closed and db.socket.closed
    assert [e.code for e in ctx.bodies(db, type(unknown))] == [ErrorCode.REVOKED.value]
    assert [m["name"] for m in (await ctx.ok(ana, ScenarioShow("shop")))["machines"]] == ["web"]
    assert (MachineRevoked(machine_id=machines["db"].id), "db") in await ctx.events(ana, "shop")


async def test_deleting_a_scenario_revokes_every_machine(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    web = await ctx.daemon(machines["web"])

    answer = await ctx.ok(ana, ScenarioDelete("shop"))

    assert sorted(answer["revoked"]) == sorted(m.id for m in machines.values())
    assert web.conn.closed
    assert (await ctx.ok(ana, ScenarioList()))["scenarios"] == []
    assert (await ctx.refused(ana, ScenarioShow("shop"))).code == ErrorCode.NOT_FOUND.value


async def test_machines_added_to_a_scenario_join_it_offline_and_can_connect(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.create_scenario(ana, "shop")
    minted, wire = declared_machines(ana, "shop", [("cache", "cache"), ("worker", "web")])

    shown = await ctx.ok(ana, MachineAdd("shop", wire))

    assert {m["name"]: m["status"] for m in shown["machines"]} == {
        "cache": "offline", "db": "offline", "web": "offline", "worker": "offline",
    }  # fmt: skip
    assert (MachinesAdded(machines=["cache", "worker"]), "") in await ctx.events(ana, "shop")
    cache = await ctx.daemon(minted["cache"])
    assert not cache.conn.closed and not cache.refusals
    assert {m["name"]: m["status"] for m in (await ctx.ok(ana, ScenarioShow("shop")))["machines"]}["cache"] != "offline"


async def test_adding_a_taken_name_or_a_key_in_use_adds_nothing(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    machines = await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "lab")
    _, taken = declared_machines(ana, "shop", [("cache", "cache"), ("db", "db")])
    _, fresh = declared_machines(ana, "shop", [("cache", "cache")])
    in_use = {**fresh[0], "name": "cache2", "public_key": machines["db"].identity.public.to_text()}

    name_error = await ctx.refused(ana, MachineAdd("shop", taken))
    key_error = await ctx.refused(ana, MachineAdd("shop", [in_use]))

    assert name_error.code == ErrorCode.ALREADY_EXISTS.value and "db" in name_error.message
    assert key_error.code in (ErrorCode.ALREADY_EXISTS.value, ErrorCode.INVALID_REQUEST.value)
    assert [m["name"] for m in (await ctx.ok(ana, ScenarioShow("shop")))["machines"]] == ["db", "web"]


async def test_machines_are_added_only_to_ones_own_scenario_with_ones_own_certificates(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.create_scenario(ana, "shop")
    await ctx.create_scenario(bob, "shop")
    _, anas = declared_machines(ana, "shop", [("cache", "cache")])
    _, other_scenario = declared_machines(ana, "lab", [("cache", "cache")])

    assert (await ctx.refused(bob, MachineAdd("nope", anas))).code == ErrorCode.NOT_FOUND.value
    # bob's own scenario "shop", with ana's certificate: not bob's word on the machine
    assert (await ctx.refused(bob, MachineAdd("shop", anas))).code == ErrorCode.INVALID_REQUEST.value
    assert (await ctx.refused(ana, MachineAdd("shop", other_scenario))).code == ErrorCode.INVALID_REQUEST.value
    assert (await ctx.refused(ana, MachineAdd("shop", []))).code == ErrorCode.INVALID_REQUEST.value
    for master in (ana, bob):
        assert len((await ctx.ok(master, ScenarioShow("shop")))["machines"]) == 2


async def test_a_removed_machines_name_can_be_added_again_with_a_new_key(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    machines = await ctx.create_scenario(ana, "shop")
    await ctx.ok(ana, MachineRevoke("shop", "db"))
    minted, wire = declared_machines(ana, "shop", [("db", "db")])

    shown = await ctx.ok(ana, MachineAdd("shop", wire))

    assert {m["name"]: m["id"] for m in shown["machines"]}["db"] == minted["db"].id != machines["db"].id
