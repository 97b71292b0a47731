"""Plans run by the hub: independent steps run together, a failed step's dependents are skipped while the rest
finish, a cycle is refused before anything runs, gorchestrator's example graph runs in an order it allows, and a
plan goes on after its master disconnects and after the hub restarts. Steps may wait for futures: such a step
starts once its keys are set, times out when they do not come, and a plan waiting for a key nothing can set is
refused before anything runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clients.master.models import EventInfo
from clients.master.sdk import Master
from protocol import RemoteError
from protocol.plans import PlanError, from_gorch
from tests.e2e.support import HubProcess, run_crc

GORCH_EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "gorch-example.json"


def log_step(log: Path, name: str, *, fail: bool = False, sleep: float = 0.0) -> str:
    command = f'echo "+ {name} $(date +%s%N)" >> {log}; sleep {sleep}; echo "- {name} $(date +%s%N)" >> {log}'
    return command + ("; exit 1" if fail else "")


def spans(log: Path) -> dict[str, tuple[int, int]]:
    found: dict[str, list[int]] = {}
    for line in log.read_text().splitlines():
        _sign, name, stamp = line.split()
        found.setdefault(name, []).append(int(stamp))
    return {name: (min(t), max(t)) for name, t in found.items()}


async def test_branches_run_together_and_a_failure_skips_only_its_dependents(
    master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("pl", "db", "web")
    log = tmp_path / "steps.log"
    plan = {"name": "shop", "steps": [
        {"id": "db", "target": "db", "command": log_step(log, "db", sleep=0.5)},
        {"id": "web", "target": "web", "command": log_step(log, "web", sleep=0.5)},
        {"id": "schema", "target": "db", "command": log_step(log, "schema", fail=True), "depends_on": ["db"]},
        {"id": "data", "target": "db", "command": log_step(log, "data"), "depends_on": ["schema"]},
        {"id": "config", "target": "web", "command": log_step(log, "config"), "depends_on": ["web"]},
        {"id": "smoke", "target": "all", "command": log_step(log, "smoke"), "depends_on": ["data", "config"]},
    ]}  # fmt: skip
    submitted = await master.run_plan("pl", plan)
    done = await master.wait_plan("pl", submitted["id"], timeout=60)
    states = {s["id"]: s["state"] for s in done["steps"]}
    assert states == {"db": "succeeded", "web": "succeeded", "schema": "failed", "data": "skipped",
                      "config": "succeeded", "smoke": "skipped"}  # fmt: skip
    assert {s["id"]: s["gorch_state"] for s in done["steps"]}["data"] == 5
    ran = spans(log)
    assert set(ran) == {"db", "web", "schema", "config"}  # skipped steps never ran
    assert ran["db"][0] < ran["web"][1] and ran["web"][0] < ran["db"][1]  # the two branches overlapped
    assert ran["schema"][0] >= ran["db"][1] and ran["config"][0] >= ran["web"][1]
    kinds = [s["id"] for s in (await master.plans("pl"))[0]["steps"]]
    assert kinds == ["db", "web", "schema", "data", "config", "smoke"]


async def test_a_cycle_or_an_unknown_step_is_refused_before_anything_runs(master: Master, deploy) -> None:
    await deploy("bad", "box")
    cyclic = {"name": "c", "steps": [{"id": "a", "target": "box", "command": "true", "depends_on": ["b"]},
                                     {"id": "b", "target": "box", "command": "true", "depends_on": ["a"]}]}  # fmt: skip
    with pytest.raises(PlanError, match="form a cycle"):
        await master.run_plan("bad", cyclic)
    with pytest.raises(PlanError, match="not a step"):
        await master.run_plan("bad", {"name": "u", "steps": [
            {"id": "a", "target": "box", "command": "true", "depends_on": ["ghost"]}]})  # fmt: skip
    assert await master.plans("bad") == [] and await master.results("bad") == []


async def test_gorchestrators_example_runs_in_an_order_its_graph_allows(master: Master, deploy, tmp_path: Path) -> None:
    await deploy("gorch", "test")
    plan = from_gorch(json.loads(GORCH_EXAMPLE.read_text()))
    log = tmp_path / "gorch.log"
    steps = [s.__class__(**{**s.__dict__, "command": f"echo {s.id} >> {log}"}) for s in plan.steps]
    ok = await master.wait_plan(
        "gorch", (await master.run_plan("gorch", plan.__class__(plan.name, tuple(steps))))["id"]
    )
    assert {s["gorch_state"] for s in ok["steps"]} == {3}
    order = log.read_text().split()
    for step in plan.steps:
        assert all(order.index(dep) < order.index(step.id) for dep in step.depends_on)
    # As published (its scripts do not exist here): a failing node marks its dependents not runnable.
    failed = await master.wait_plan("gorch", (await master.run_plan("gorch", plan))["id"])
    states = {s["id"]: s["gorch_state"] for s in failed["steps"]}
    assert states["5"] == 4 and states["0"] == 5 and states["1"] == 5  # f failed; a and b come after it


async def test_a_plan_goes_on_without_its_master_and_across_a_hub_restart(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("long", "box")
    log = tmp_path / "long.log"
    plan = {"name": "long", "steps": [
        {"id": "one", "target": "box", "command": log_step(log, "one", sleep=1.0)},
        {"id": "two", "target": "box", "command": log_step(log, "two"), "depends_on": ["one"]},
    ]}  # fmt: skip
    plan_id = (await master.run_plan("long", plan))["id"]
    await master.close()
    await hub.arestart()  # while "one" runs: the restarted hub resumes the plan from its stored states
    async with await Master.connect(hub.url, hub.key_path) as again:
        done = await again.wait_plan("long", plan_id, timeout=60)
        assert {s["id"]: s["state"] for s in done["steps"]} == {"one": "succeeded", "two": "succeeded"}
        with pytest.raises(RemoteError, match="not_found"):
            await again.plan("long", "no-such-plan")
    assert set(spans(log)) == {"one", "two"}


async def test_the_cli_runs_follows_lists_shows_and_cancels_plans(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("cli", "test")
    task = json.loads(GORCH_EXAMPLE.read_text())
    for node in task["nodes"]:
        node["engine"], node["artifact"], node["args"] = "shell", "true", None
    gorch_file = tmp_path / "task.json"
    gorch_file.write_text(json.dumps(task))
    followed = await asyncio.to_thread(run_crc, hub, "plan", "run", "cli", str(gorch_file), "--follow", timeout=60)
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.count("succeeded") == 8 and "done" in followed.stdout

    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps({"name": "slow", "steps": [
        {"id": "wait", "target": "test", "command": "sleep 30"},
        {"id": "after", "target": "test", "command": "true", "depends_on": ["wait"]},
    ]}))  # fmt: skip
    started = await asyncio.to_thread(run_crc, hub, "plan", "run", "cli", str(slow))
    plan_id = started.stdout.strip()
    assert started.returncode == 0 and len(plan_id) == 32, started.stderr
    listed = await asyncio.to_thread(run_crc, hub, "plan", "list", "cli")
    assert plan_id in listed.stdout and "running" in listed.stdout
    await asyncio.sleep(1.0)
    cancelled = await asyncio.to_thread(run_crc, hub, "plan", "cancel", "cli", plan_id)
    assert cancelled.returncode == 0 and cancelled.stdout.count("cancelled") == 2, cancelled.stdout
    shown = await master.plan("cli", plan_id)
    assert shown["done"] and {s["gorch_state"] for s in shown["steps"]} == {11}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    refused = await asyncio.to_thread(run_crc, hub, "plan", "run", "cli", str(bad))
    assert refused.returncode == 2 and "not valid JSON" in refused.stderr


async def plan_events(master: Master, scenario: str) -> list[tuple[str, ...]]:
    """("plan_step", step, state) and ("kv_set", key) events, in order."""
    found: list[tuple[str, ...]] = []
    async for e in master.events(scenario, 0, follow=False):
        if isinstance(e, EventInfo) and e.kind == "plan_step":
            found.append((e.kind, e.data["step"], e.data["state"]))
        elif isinstance(e, EventInfo) and e.kind == "kv_set":
            found.append((e.kind, e.data["key"]))
    return found


async def test_a_step_waiting_for_a_key_starts_once_another_machine_sets_it(
    master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("fw", "db", "web")
    log = tmp_path / "futures.log"
    plan = {"name": "shop", "steps": [
        # db/... may be set by the machine db: no step needs to declare it
        {"id": "db", "target": "db", "command": f'sleep 1; echo "= setting $(date +%s%N)" >> {log}; '
                                               "crc-daemon kv set db/ready yes"},
        {"id": "web", "target": "web", "command": log_step(log, "web") + "; crc-daemon kv get db/ready",
         "waits_for": ["db/ready"]},
    ]}  # fmt: skip
    done = await master.wait_plan("fw", (await master.run_plan("fw", plan))["id"], timeout=30)
    assert {s["id"]: s["state"] for s in done["steps"]} == {"db": "succeeded", "web": "succeeded"}
    assert {s["id"]: s.get("waits_for") for s in done["steps"]} == {"db": None, "web": ["db/ready"]}
    ran = spans(log)
    assert ran["web"][0] > ran["setting"][0]  # not dispatched before db was about to set the key
    [web] = [r for r in await master.results("fw") if r.stdout.endswith(b"yes\n")]
    assert web.ok
    events = await plan_events(master, "fw")
    waiting, key_set, running = ("plan_step", "web", "waiting"), ("kv_set", "db/ready"), ("plan_step", "web", "running")
    assert events.count(waiting) == 1 and events.index(waiting) < events.index(key_set) < events.index(running)


async def test_a_plan_waiting_for_a_key_nothing_can_set_is_refused(master: Master, deploy) -> None:
    await deploy("fn", "box")
    plan = {"name": "n", "steps": [
        {"id": "one", "target": "box", "command": "true"},
        {"id": "two", "target": "box", "command": "true", "waits_for": ["box/ok", "nobody/x"], "depends_on": ["one"]},
    ]}  # fmt: skip
    with pytest.raises(RemoteError, match="invalid_request") as refused:
        await master.run_plan("fn", plan)
    assert "step 'two' waits for key 'nobody/x'" in str(refused.value) and "box/ok" not in str(refused.value)
    assert await master.plans("fn") == [] and await master.results("fn") == []
    await master.kv_set("fn", "nobody/x", "now it is")  # set beforehand (by a master): accepted, and runs at once
    ok = {"name": "ok", "steps": [{"id": "two", "target": "box", "command": "true", "waits_for": ["nobody/x"]}]}
    done = await master.wait_plan("fn", (await master.run_plan("fn", ok))["id"], timeout=20)
    assert [s["state"] for s in done["steps"]] == ["succeeded"]


async def test_a_key_that_never_comes_times_the_step_out_and_cancel_stops_a_wait(master: Master, deploy) -> None:
    await deploy("ft", "db", "web")
    plan = {"name": "t", "steps": [
        {"id": "web", "target": "web", "command": "true", "waits_for": ["db/never"], "timeout": 2},
        {"id": "after", "target": "web", "command": "true", "depends_on": ["web"]},
        {"id": "other", "target": "db", "command": "true"},
    ]}  # fmt: skip
    started = asyncio.get_running_loop().time()
    done = await master.wait_plan("ft", (await master.run_plan("ft", plan))["id"], timeout=20)
    assert 2 <= asyncio.get_running_loop().time() - started < 8
    assert {s["id"]: (s["state"], s["gorch_state"]) for s in done["steps"]} == {
        "web": ("timed_out", 10), "after": ("skipped", 5), "other": ("succeeded", 3)}  # fmt: skip
    assert done["steps"][0]["orders"] and len(await master.results("ft")) == 1  # web's order was never queued

    waiting = await master.run_plan("ft", {"name": "w", "steps": [
        {"id": "web", "target": "web", "command": "true", "waits_for": ["db/never"]}]})  # fmt: skip
    await asyncio.sleep(1.0)
    shown = await master.plan("ft", waiting["id"])
    assert [(s["state"], s["gorch_state"]) for s in shown["steps"]] == [("waiting", 1)] and not shown["done"]
    cancelled = await master.cancel_plan("ft", waiting["id"])
    assert cancelled["done"] and [s["state"] for s in cancelled["steps"]] == ["cancelled"]
    assert len(await master.results("ft")) == 1


async def test_a_waiting_step_waits_on_across_a_hub_restart(hub: HubProcess, master: Master, deploy) -> None:
    await deploy("fr", "box")
    plan = {"name": "r", "steps": [{"id": "go", "target": "box", "command": "echo went", "waits_for": ["box/go"]}]}
    plan_id = (await master.run_plan("fr", plan))["id"]
    await asyncio.sleep(1.0)
    await master.close()
    await hub.arestart()
    async with await Master.connect(hub.url, hub.key_path) as again:
        assert [s["state"] for s in (await again.plan("fr", plan_id))["steps"]] == ["waiting"]
        await again.kv_set("fr", "box/go", "now")
        done = await again.wait_plan("fr", plan_id, timeout=30)
        assert [s["state"] for s in done["steps"]] == ["succeeded"]
        [went] = await again.results("fr")
        assert went.stdout == b"went\n"
