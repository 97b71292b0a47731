"""Plans run by the hub: independent steps run together, a failed step's dependents are skipped while the rest
finish, a cycle is refused before anything runs, gorchestrator's example graph runs in an order it allows, and a
plan goes on after its master disconnects and after the hub restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

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
