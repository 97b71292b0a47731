"""The full Vultr path against the local emulator of its v2 API, with every realistic behaviour on and time
compressed (``TIME_FACTOR`` real seconds per API second, shared by the emulator and ``crc``): ``crc up`` uploads
one startup script per machine and creates tagged instances; they answer 404 for a while, stay pending 30-90 s,
are locked through their install; the emulator "boots" a Linux instance by running its startup script here (as
the local provider does), the daemon connects and reports SystemReady, a command runs. A Windows instance cannot
boot here: the test checks what Vultr would run (the uploaded boot script, as C:\\image\firstboot.cmd under
cmd.exe) and that crc up says it never got ready. One ``crc down`` waits out the locks and leaves no instance,
no startup script and no key behind."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from clients.master.sdk import Master
from protocol import RemoteError
from provisioning.providers import LocalProvider
from provisioning.scenario_file import MachinePlan
from tests.e2e.support import HubProcess, eventually, run_crc
from tests.provisioning.vultr_emulator import GuestBoot, VultrEmulator

pytestmark = pytest.mark.timeout(300)
KEY = "test-vultr-key"
TIME_FACTOR = 0.1  # pending 30-90 s -> 3-9 s; Windows install lock 900 s -> 90 s


@pytest.fixture
async def booting_emulator(tmp_path: Path) -> AsyncIterator[tuple[VultrEmulator, LocalProvider]]:
    """A realistic emulator whose Linux instances boot as local machines running their startup script; Windows
    boots are only recorded (``emulator.boots``): no Windows installer can run here."""
    machines = LocalProvider(tmp_path / "vms", netns=False)
    booted: list[str] = []

    async def boot(guest: GuestBoot) -> None:
        scenario, _, name = guest.instance["label"].removeprefix("crc:").partition("/")
        assert scenario and name
        if guest.os == "windows":
            return  # recorded in emulator.boots; the instance is active, and nothing pretends it booted
        assert guest.source == "startup_script" and guest.command == ("/bin/bash", "/tmp/firstboot.exec")
        await machines.prepare(scenario, "")
        plan = MachinePlan(name, "linux", name, guest.instance["region"], guest.instance["plan"], 0)
        await machines.create(scenario, plan, guest.text)
        booted.append(scenario)

    emulator = VultrEmulator.realistic(TIME_FACTOR, api_key=KEY, on_boot=boot)
    server = TestServer(emulator.app, host="127.0.0.1")
    await server.start_server()
    emulator.base_url = str(server.make_url("/v2"))
    try:
        yield emulator, machines
    finally:
        for scenario in set(booted):
            await machines.destroy(scenario)
        await server.close()


def vultr_env(emulator: VultrEmulator, state: Path) -> dict[str, str]:
    return {
        "VULTR_API_KEY": KEY,
        "VULTR_API_URL": emulator.base_url,
        "CRC_STATE_DIR": str(state),
        "CRC_VULTR_TIME_SCALE": str(TIME_FACTOR),
    }


@pytest.mark.slow  # ~90 s: crc up waits out its timeout for the Windows machine, crc down the emulated lock
async def test_crc_up_on_vultr_then_one_crc_down_leaves_nothing_behind(
    dist_hub: HubProcess, booting_emulator: tuple[VultrEmulator, LocalProvider], tmp_path: Path
) -> None:
    emulator, vms = booting_emulator
    scenario_file = tmp_path / "lab.toml"
    scenario_file.write_text(
        '[scenario]\nname = "lab"\n\n[provider]\nkind = "vultr"\nregion = "ams"\nplan = "vc2-1c-2gb"\n'
        'tags = ["team-qa"]\n\n'
        '[[machine]]\nname = "db"\nrole = "database"\n\n'
        '[[machine]]\nname = "windows-build-agent"\nos = "windows"\n'
    )
    env = vultr_env(emulator, tmp_path / "state")
    emulator.fail_next(429, 500, retry_after="2")  # a rate limit (retried after Retry-After), a 500 on an upload
    emulator.fail_next(502, html=True)  # nginx's HTML page in front of the API: not JSON, retried all the same
    up = await asyncio.to_thread(run_crc, dist_hub, "up", str(scenario_file), "--timeout", "60", timeout=240, env=env)
    # The Windows machine never reports (nothing runs its boot file here): crc up says exactly that.
    assert up.returncode == 1, up.stdout + up.stderr
    assert "1/2 machines ready" in up.stdout and "windows-build-agent: timed_out" in up.stderr
    assert KEY not in up.stdout + up.stderr
    assert {429, 500, 502} <= set(emulator.statuses())

    # Addresses were learned through the 404 window after each create.
    instances = {i.data["label"]: i for i in emulator.instances.values()}
    assert set(instances) == {"crc:lab/db", "crc:lab/windows-build-agent"}
    for label, instance in instances.items():
        path = f"/v2/instances/{instance.data['id']}"
        assert 404 in emulator.statuses("GET", path) and emulator.statuses("GET", path)[-1] == 200, label
        assert f"instance active at {instance.data['main_ip']}" in up.stdout
    db, win = instances["crc:lab/db"].data, instances["crc:lab/windows-build-agent"].data
    assert db["os_id"] == 2136 and win["os_id"] == 501
    assert db["backups"] == win["backups"] == "disabled"
    assert all({"crc-scenario:lab", "team-qa"} <= set(i["tags"]) for i in (db, win))
    # A Windows computer name has at most 15 characters: derived from the machine name, and shown.
    assert len(win["hostname"]) <= 15 and win["hostname"].startswith("windows-bu")
    assert f"hostname {win['hostname']}" in up.stdout

    # What Vultr would run on the Windows machine: its own uploaded boot script, as C:\image\firstboot.cmd by cmd.exe.
    [windows_boot] = [boot for boot in emulator.boots if boot.os == "windows"]
    uploaded = {s["name"]: base64.b64decode(s["script"]) for s in emulator.scripts.values()}
    assert windows_boot.source == "startup_script" and windows_boot.path == "C:\\image\\firstboot.cmd"
    assert windows_boot.command == ("cmd.exe", "/c", "C:\\image\\firstboot.cmd")
    assert windows_boot.content == uploaded["crc:lab/windows-build-agent"] != uploaded["crc:lab/db"]

    async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
        results = await master.run("lab", "db", "echo up on $(hostname)")
        assert all(r.ok and r.verified for r in results), results

    # The Windows install still holds Vultr's lock: one crc down waits it out, saying so.
    assert emulator.server_status(win["id"]) in ("none", "locked"), "crc up outlasted the emulated install lock"
    down = await asyncio.to_thread(run_crc, dist_hub, "down", "lab", timeout=200, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "deleted 2 machines, 2 startup scripts" in down.stdout
    assert f"instance {win['id']} is locked by Vultr" in down.stdout
    assert 500 in emulator.statuses("DELETE", f"/v2/instances/{win['id']}")
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


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_crc_down_finds_machines_by_tag_without_any_local_record(
    dist_hub: HubProcess, booting_emulator: tuple[VultrEmulator, LocalProvider], tmp_path: Path
) -> None:
    """The master that ran `crc up` crashed and its records are gone: the tags are enough."""
    emulator, _vms = booting_emulator
    scenario_file = tmp_path / "solo.toml"
    scenario_file.write_text('[scenario]\nname = "solo"\n[provider]\nkind = "vultr"\n[[machine]]\nname = "box"\n')
    emulator.tag_filter = "legacy_only"  # the old filter finds nothing: crc down must not rely on it
    first = vultr_env(emulator, tmp_path / "a")
    up = await asyncio.to_thread(run_crc, dist_hub, "up", str(scenario_file), timeout=240, env=first)
    assert up.returncode == 0, up.stdout + up.stderr
    other = {**first, "CRC_STATE_DIR": str(tmp_path / "elsewhere")}
    refused = await asyncio.to_thread(run_crc, dist_hub, "down", "solo", env=other)
    assert refused.returncode == 2 and "--provider" in refused.stderr
    down = await asyncio.to_thread(run_crc, dist_hub, "down", "solo", "--provider", "vultr", env=other)
    assert down.returncode == 0, down.stderr
    assert emulator.instances == {} and emulator.scripts == {}
