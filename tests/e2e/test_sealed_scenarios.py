"""Sealed scenarios against a real hub and real daemons (``crc scenario create --sealed``): commands, hosts entries,
plans and their output travel and rest as ciphertext the hub cannot open; the master reads them, the hub's store,
log and events hold none of it, and a daemon of a sealed scenario refuses a plain order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from clients.daemon.config import DaemonConfig, write_config
from clients.master.models import OutputChunk
from clients.master.sdk import Master, MasterError
from protocol import Order, OrderKind
from tests.e2e.support import Daemons, HubProcess, eventually, run_crc, wait_results
from tests.e2e.test_enrollment import enroll

# What must never be readable at the hub: in the command text, its output, a hosts entry, a plan step.
COMMAND_MARK = "cmd-mark-5f1e"
OUTPUT_MARK = "out-mark-9c2d"  # the command prints it, built so the command text does not hold it
HOSTS_MARK = "hosts-mark-a77b"
PLAN_MARK = "plan-mark-30cd"
FILE_MARK = "file-mark-61ab"  # a file's content: sealed in a sealed scenario without asking
MARKS = (COMMAND_MARK, OUTPUT_MARK, HOSTS_MARK, PLAN_MARK, FILE_MARK)
COMMAND = f'# {COMMAND_MARK}\nprintf "out-mark-%s\\n" 9c2d; echo "$CRC_MACHINE err" >&2'


def leaked(data: bytes | str) -> list[str]:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return [mark for mark in MARKS if mark in text]


async def sealed_scenario(hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path) -> None:
    minted = await master.create_scenario("vault", [("web", "linux"), ("db", "linux")], sealed=True)
    for m in minted:
        config = tmp_path / f"{m.name}.toml"
        assert m.sealed
        write_config(config, DaemonConfig(hub.url, "vault", m.name, m.identity, master.identity.public, sealed=True))
        daemons.start(config)
    await master.wait_ready("vault", timeout=30)


async def test_a_sealed_scenarios_commands_hosts_plans_and_output_never_reach_the_hub_readable(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    chunks: list[OutputChunk] = []

    results = await master.run("vault", "all", COMMAND, on_output=chunks.append, wait_timeout=30)

    assert sorted(r.machine for r in results) == ["db", "web"]
    for r in results:
        assert (r.status, r.verified, r.stdout) == ("succeeded", True, b"out-mark-9c2d\n"), r
        assert r.stderr == f"{r.machine} err\n".encode()
    assert OUTPUT_MARK.encode() in b"".join(c.data for c in chunks)  # live output, opened by the master
    failed = await master.run("vault", "web", "echo nope >&2; exit 3", wait_timeout=30)
    assert (failed[0].status, failed[0].exit_code, failed[0].stderr) == ("failed", 3, b"nope\n")
    hosts = await master.distribute_hosts("vault", "all", extra={HOSTS_MARK: "10.9.8.7"}, wait_timeout=30)
    assert all(r.ok for r in hosts)
    for name in ("web", "db"):
        assert HOSTS_MARK in daemons.started[name].hosts_file.read_text()
    target_file = tmp_path / "deployed.conf"
    put = await master.put_file("vault", "web", f"password = {FILE_MARK}\n".encode(), str(target_file))
    assert put[0].ok and target_file.read_text() == f"password = {FILE_MARK}\n"
    plan = {"name": "p", "steps": [{"id": "s", "target": "db", "command": f"echo {PLAN_MARK} | tr a-z A-Z"}]}
    await master.run_plan("vault", plan)

    async def plan_done() -> bool:
        return any(r.stdout == PLAN_MARK.upper().encode() + b"\n" for r in await master.results("vault"))

    await eventually(plan_done, timeout=30, what="the sealed plan step to run")

    assert [path for path in hub.data_dir.rglob("*") if path.is_file() and leaked(path.read_bytes())] == []
    assert leaked(hub.log_text()) == []
    events = run_crc(hub, "--json", "watch", "vault", "--no-follow")
    assert events.returncode == 0 and '"sealed": true' in events.stdout and leaked(events.stdout) == []
    shown = run_crc(hub, "--json", "results", "vault")  # the CLI, as the master, opens them
    assert shown.returncode == 0 and OUTPUT_MARK in shown.stdout
    for daemon in daemons.started.values():
        assert leaked(daemon.log_text()) == []


async def test_a_daemon_of_a_sealed_scenario_refuses_a_plain_order_and_the_master_never_sends_one(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    _, (web,) = await master.targets("vault", "web")
    marks = tmp_path / "ran"
    plain = Order("plain-1", "vault", web.id, OrderKind.EXEC, {"command": f"touch {marks}"}, time.time() + 60,
                  master.identity.id).signed(master.identity)  # fmt: skip

    [refused] = await wait_results(master, "vault", [await master.submit(plain)], timeout=30)

    assert refused.status == "rejected" and "scenario is sealed: a plain exec order is refused" in refused.error
    assert not marks.exists()
    await master.put_job("tune", "echo tune")
    try:
        await master.assign_job("vault", "all", "tune")
    except MasterError as exc:
        assert "is sealed" in str(exc)
    else:
        raise AssertionError("a composition was assigned in a sealed scenario")


async def test_a_machine_joining_a_sealed_scenario_with_its_token_is_sealed_too(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    token = await master.create_enrollment("vault", "workers")  # sealed: the scenario's certificates say so
    assert token.claims.sealed
    joined = await enroll(hub, token.text(), "w1", tmp_path / "w1.toml")
    assert joined.returncode == 0, joined.stderr
    assert "sealed = true" in (tmp_path / "w1.toml").read_text()
    daemons.start(tmp_path / "w1.toml")
    [machine] = [m for m in (await master.scenario("vault")).machines if m.name == "w1"]
    assert machine.trusted and machine.sealed

    async def runs() -> bool:
        [r] = await master.run("vault", "w1", COMMAND, wait_timeout=10)
        return r.ok and r.stdout == b"out-mark-9c2d\n"

    await eventually(runs, timeout=30, what="the joiner to run a sealed command")
    await asyncio.sleep(0.2)
    assert [path for path in hub.data_dir.rglob("*") if path.is_file() and leaked(path.read_bytes())] == []


async def test_the_cli_creates_a_sealed_scenario_and_its_configs_say_so(
    hub: HubProcess, master: Master, tmp_path: Path
) -> None:
    created = await asyncio.to_thread(run_crc, hub, "scenario", "create", "vault", "--sealed", "--machine", "db:linux",
                                      "--out", str(tmp_path / "configs"))  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert "sealed = true" in (tmp_path / "configs" / "db.toml").read_text()
    assert (await master.scenario("vault")).sealed
    with_token = await asyncio.to_thread(run_crc, hub, "--json", "enroll", "create", "vault", "--role", "w")
    assert with_token.returncode == 0 and '"sealed": true' in with_token.stdout


async def test_sealed_delivery_goes_on_across_machine_and_master_key_rotations_offline_machines_included(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    """A machine that rotated its key gets orders sealed to its new key; an offline machine runs, after the
    master moved to a new key, an order sealed before it, and the master reads that result with the sealing key
    it kept from before the rotation (``<key>.former-sealing-keys``)."""
    await sealed_scenario(hub, master, daemons, tmp_path)
    await master.rotate_machine_key("vault", "web", timeout=30)
    [after_rotation] = await master.run("vault", "web", COMMAND, wait_timeout=30)
    assert after_rotation.ok and after_rotation.stdout == b"out-mark-9c2d\n"
    daemons.started["db"].terminate()
    await eventually(lambda: not daemons.started["db"].running, timeout=10, what="db to stop")
    [queued] = await master.run("vault", "db", COMMAND, wait=False)

    rotated = await asyncio.to_thread(run_crc, hub, "rotate-key", "--timeout", "8", timeout=60)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    daemons.started["db"].start()
    async with await Master.connect(hub.url, hub.key_path, timeout=10) as moved:
        [done] = await wait_results(moved, "vault", [queued.order_id], timeout=30)
        assert (done.status, done.verified, done.stdout) == ("succeeded", True, b"out-mark-9c2d\n")

        async def both_run() -> bool:
            results = await moved.run("vault", "all", COMMAND, wait_timeout=10)
            return len(results) == 2 and all(r.ok and r.stdout == b"out-mark-9c2d\n" for r in results)

        await eventually(both_run, timeout=30, what="both machines to run sealed orders of the new master key")
    assert [path for path in hub.data_dir.rglob("*") if path.is_file() and leaked(path.read_bytes())] == []
