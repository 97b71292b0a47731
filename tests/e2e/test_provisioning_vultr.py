"""The full Vultr path against the local emulator of its v2 API: ``crc up`` uploads one startup script per
machine and creates tagged instances; the emulator "boots" each instance by running its startup script here
(as the local provider does), the daemons connect and report SystemReady, a command runs, and ``crc down``
leaves no instance, no startup script and no key behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from clients.master.sdk import Master
from protocol import RemoteError
from provisioning.providers import LocalProvider
from provisioning.scenario_file import MachinePlan
from tests.e2e.support import HubProcess, eventually, run_crc
from tests.provisioning.vultr_emulator import VultrEmulator

pytestmark = pytest.mark.timeout(300)
KEY = "test-vultr-key"


@pytest.fixture
async def booting_emulator(tmp_path: Path) -> AsyncIterator[tuple[VultrEmulator, LocalProvider]]:
    """An emulator whose instances boot as local machines running their startup script."""
    machines = LocalProvider(tmp_path / "vms", netns=False)
    booted: list[str] = []

    async def boot(instance: dict[str, Any], script: str | None) -> None:
        scenario, _, name = instance["label"].removeprefix("crc:").partition("/")
        assert script is not None and scenario and name
        await machines.prepare(scenario, "")
        await machines.create(
            scenario, MachinePlan(name, "linux", name, instance["region"], instance["plan"], 0), script
        )
        booted.append(scenario)

    emulator = VultrEmulator(api_key=KEY, on_boot=boot)
    server = TestServer(emulator.app, host="127.0.0.1")
    await server.start_server()
    emulator.base_url = str(server.make_url("/v2"))
    try:
        yield emulator, machines
    finally:
        for scenario in set(booted):
            await machines.destroy(scenario)
        await server.close()


async def test_crc_up_on_vultr_then_crc_down_leaves_nothing_behind(
    dist_hub: HubProcess, booting_emulator: tuple[VultrEmulator, LocalProvider], tmp_path: Path
) -> None:
    emulator, vms = booting_emulator
    scenario_file = tmp_path / "lab.toml"
    scenario_file.write_text(
        '[scenario]\nname = "lab"\n\n[provider]\nkind = "vultr"\nregion = "ams"\nplan = "vc2-1c-2gb"\n'
        'tags = ["team-qa"]\n\n'
        '[[machine]]\nname = "db"\nrole = "database"\n\n'
        '[[machine]]\nname = "web"\nplan = "vc2-2c-4gb"\nimage = 2284\n'
    )
    env = {"VULTR_API_KEY": KEY, "VULTR_API_URL": emulator.base_url, "CRC_STATE_DIR": str(tmp_path / "state")}
    emulator.fail_next(429, 500)  # a rate limit (the client retries) then a 500 on a script upload (retried too)
    up = await asyncio.to_thread(run_crc, dist_hub, "up", str(scenario_file), timeout=240, env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "2/2 machines ready" in up.stdout and "instance active at 192.0.2." in up.stdout
    assert KEY not in up.stdout + up.stderr

    # What Vultr was asked for: one startup script per machine, instances tagged with the scenario.
    assert sorted(s["name"] for s in emulator.scripts.values()) == ["crc:lab/db", "crc:lab/web"]
    instances = {i.data["label"]: i.data for i in emulator.instances.values()}
    assert set(instances) == {"crc:lab/db", "crc:lab/web"}
    assert instances["crc:lab/web"]["plan"] == "vc2-2c-4gb" and instances["crc:lab/web"]["os_id"] == 2284
    assert instances["crc:lab/db"]["os_id"] == 2136 and instances["crc:lab/db"]["region"] == "ams"
    assert all({"crc-scenario:lab", "team-qa"} <= set(i["tags"]) for i in instances.values())
    assert 429 in emulator.statuses() and 500 in emulator.statuses()

    async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
        results = await master.run("lab", "all", "echo up on $(hostname)")
        assert all(r.ok and r.verified for r in results), results

    down = await asyncio.to_thread(run_crc, dist_hub, "down", "lab", timeout=60, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "deleted 2 machines, 2 startup scripts" in down.stdout
    assert emulator.instances == {} and emulator.scripts == {}
    async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
        with pytest.raises(RemoteError, match="not_found"):
            await master.scenario("lab")

    # The daemons were revoked: they stop by themselves (exit 3 ends their supervising loop).
    async def all_stopped() -> bool:
        return all(m.state == "stopped" for m in await vms.machines("lab"))

    await eventually(all_stopped, timeout=20, what="the revoked daemons to exit")
    again = await asyncio.to_thread(run_crc, dist_hub, "down", "lab", "--provider", "vultr", timeout=60, env=env)
    assert again.returncode == 0 and "deleted 0 machines, 0 startup scripts" in again.stdout, again.stderr


async def test_crc_down_finds_machines_by_tag_without_any_local_record(
    dist_hub: HubProcess, booting_emulator: tuple[VultrEmulator, LocalProvider], tmp_path: Path
) -> None:
    """The master that ran `crc up` crashed and its records are gone: the tags are enough."""
    emulator, _vms = booting_emulator
    scenario_file = tmp_path / "solo.toml"
    scenario_file.write_text('[scenario]\nname = "solo"\n[provider]\nkind = "vultr"\n[[machine]]\nname = "box"\n')
    first = {"VULTR_API_KEY": KEY, "VULTR_API_URL": emulator.base_url, "CRC_STATE_DIR": str(tmp_path / "a")}
    up = await asyncio.to_thread(run_crc, dist_hub, "up", str(scenario_file), timeout=240, env=first)
    assert up.returncode == 0, up.stdout + up.stderr
    other = {**first, "CRC_STATE_DIR": str(tmp_path / "elsewhere")}
    refused = await asyncio.to_thread(run_crc, dist_hub, "down", "solo", env=other)
    assert refused.returncode == 2 and "--provider" in refused.stderr
    down = await asyncio.to_thread(run_crc, dist_hub, "down", "solo", "--provider", "vultr", env=other)
    assert down.returncode == 0, down.stderr
    assert emulator.instances == {} and emulator.scripts == {}
