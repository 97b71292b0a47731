"""``crc up`` / ``crc down`` with the local provider: the real Linux startup script installs the daemon from the
hub's wheels into a fresh virtual environment per machine, reports each step, and the daemons come up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from clients.master.models import EventInfo
from clients.master.sdk import Master
from provisioning import lifecycle
from provisioning.lifecycle import Outcome, down, up
from provisioning.providers import LocalProvider
from provisioning.providers.local import netns_available
from provisioning.release import DaemonRelease, publish_release
from provisioning.scenario_file import parse_scenario
from provisioning.startup import WheelRef
from tests.e2e.support import HubProcess, assert_one_line_error, eventually, run_crc

pytestmark = pytest.mark.timeout(300)
BOOT_STEPS = [
    "script-started", "installing-python", "creating-venv", "downloading-daemon", "installing-daemon",
    "writing-config", "starting-daemon", "daemon-started",
]  # fmt: skip


def scenario_text(name: str, *machines: str, kind: str = "local") -> str:
    tables = "".join(f'\n[[machine]]\nname = "{m}"\nos = "linux"\nrole = "{m}-role"\n' for m in machines)
    return f'[scenario]\nname = "{name}"\n\n[provider]\nkind = "{kind}"\n{tables}'


def daemon_pids(local_dir: Path) -> list[int]:
    return [int(p.read_text()) for p in local_dir.glob("*/machines/*/root/run/crc/daemon.pid")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_crc_up_runs_the_startup_scripts_and_crc_down_leaves_nothing(
    dist_hub: HubProcess, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    scenario_file = tmp_path / "shop.toml"
    scenario_file.write_text(scenario_text("shop", "db", "web"))
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}  # where `crc up` records the provider for `crc down NAME`
    try:
        up_run = await asyncio.to_thread(
            run_crc, dist_hub, "up", str(scenario_file), "--local-dir", str(local), "--no-netns", timeout=240, env=env
        )
        assert up_run.returncode == 0, up_run.stdout + up_run.stderr
        assert "2/2 machines ready" in up_run.stdout
        for step in ("installing-python", "installing-daemon ok", "SystemReady"):
            assert step in up_run.stdout, up_run.stdout

        async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
            scenario = await master.scenario("shop")
            assert {m.name: (m.status, m.role) for m in scenario.machines} == {
                "db": ("ready", "db-role"),
                "web": ("ready", "web-role"),
            }

            async def all_steps_reported() -> bool:
                # The script's last reports may land just after SystemReady.
                steps = [
                    (e.machine, e.data["step"], e.data["status"])
                    async for e in master.events("shop", 0, follow=False)
                    if isinstance(e, EventInfo) and e.kind == "boot_step"
                ]
                return all(
                    [s for m, s, status in steps if m == machine and status == "ok"] == BOOT_STEPS
                    for machine in ("db", "web")
                )

            await eventually(all_steps_reported, timeout=15, what="every boot step of both machines reported ok")
            results = await master.run("shop", "all", "echo hello from $(hostname)")
            assert all(r.ok and r.verified for r in results)
            await master.distribute_hosts("shop", "all", extra={"db.internal": "10.9.9.9"})
            hosts = (local / "shop" / "machines" / "web" / "root" / "etc" / "hosts").read_text()
            assert "db.internal" in hosts

        # The private key is only in the 0600 config, never in a process list.
        config = local / "shop" / "machines" / "web" / "root" / "etc" / "crc" / "daemon.toml"
        assert config.stat().st_mode & 0o777 == 0o600
        private = next(line for line in config.read_text().splitlines() if line.startswith("private_key"))
        key_text = private.split('"')[1]
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    assert key_text.encode() not in (proc / "cmdline").read_bytes()
        pids = daemon_pids(local)
        assert len(pids) == 2 and all(alive(p) for p in pids)

        down_run = await asyncio.to_thread(run_crc, dist_hub, "down", "shop", timeout=60, env=env)
        assert down_run.returncode == 0, down_run.stdout + down_run.stderr
        assert "deleted 2 machines" in down_run.stdout and "scenario and machine keys deleted" in down_run.stdout
        assert not (local / "shop").exists()
        for pid in pids:
            for _ in range(100):
                if not alive(pid):
                    break
                await asyncio.sleep(0.05)
            assert not alive(pid)
        again = await asyncio.to_thread(run_crc, dist_hub, "down", "shop", "--provider", "local", "--local-dir",
                                        str(local), timeout=60, env=env)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "deleted 0 machines" in again.stdout and "no scenario left" in again.stdout
    finally:
        await LocalProvider(local).destroy("shop")


async def test_a_failing_step_is_reported_with_its_output(
    dist_hub: HubProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = parse_scenario(scenario_text("broken", "web"))
    provider = LocalProvider(tmp_path / "local", netns=False)
    lines: list[str] = []

    async def other_bytes_than_signed(master: Master, wheel: Path | None = None) -> DaemonRelease:
        # What a machine sees when the hub serves other bytes than the master signed: the digests differ.
        release = await publish_release(master, wheel)
        return DaemonRelease(WheelRef(release.wheel.name, "0" * 64), release.lock)

    monkeypatch.setattr(lifecycle, "publish_release", other_bytes_than_signed)
    async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
        try:
            report = await up(
                master, spec, provider, timeout=120, progress=lambda m, text: lines.append(f"{m.name} {text}")
            )
            web = report.machines["web"]
            assert not report.ok and web.outcome is Outcome.FAILED
            assert web.step == "downloading-daemon"
            assert "SHA-256 mismatch" in web.detail
            assert "web startup step 'downloading-daemon' failed" in lines
        finally:
            gone = await down(master, "broken", provider)
    assert gone.teardown.machines == ["web"] and gone.scenario_deleted


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_crc_up_exits_non_zero_naming_the_machine_and_step(tmp_path: Path, daemon_dist: Path) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    bad_wheel = tmp_path / "cloudremotecontrol-0.1.0-py3-none-any.whl"
    bad_wheel.write_bytes(b"this is not a zip file")
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    hub.start()
    scenario_file = tmp_path / "s.toml"
    scenario_file.write_text(scenario_text("bad", "app"))
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}
    try:
        result = await asyncio.to_thread(
            run_crc, hub, "up", str(scenario_file), "--local-dir", str(tmp_path / "local"), "--no-netns",
            "--timeout", "120", "--wheel", str(bad_wheel), timeout=200, env=env,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert "app: failed at step 'installing-daemon'" in result.stderr
        assert "crc down bad" in result.stderr
        assert (await asyncio.to_thread(run_crc, hub, "down", "bad", env=env)).returncode == 0
    finally:
        await LocalProvider(tmp_path / "local").destroy("bad")
        hub.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
@pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")
async def test_network_namespace_machines_have_their_own_address_and_hosts_file(
    tmp_path: Path, daemon_dist: Path
) -> None:
    provider = LocalProvider(tmp_path / "local", netns=True)
    scenario = f"ns{os.getpid() % 10000}"
    port = free_port()
    hosts_before = Path("/etc/hosts").read_text()
    machine_url = await provider.prepare(scenario, f"http://127.0.0.1:{port}")
    gateway = provider.gateway(scenario)
    assert machine_url == f"http://{gateway}:{port}"
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(daemon_dist), "--host", gateway])
    hub.port = port
    try:
        await hub.astart()
        spec = parse_scenario(scenario_text(scenario, "db", "web"))
        async with await Master.connect(hub.url, hub.key_path) as master:
            report = await up(master, spec, provider, timeout=200)
            assert report.ok, report.machines
            addresses = {name: m.address for name, m in report.machines.items()}
            assert all(a.startswith(gateway.rsplit(".", 1)[0] + ".") for a in addresses.values())
            scenario_info = await master.scenario(scenario)
            assert {m.name: set(m.ips) for m in scenario_info.machines}["web"] >= {addresses["web"]}
            await master.distribute_hosts(scenario, "all")
            [lookup] = await master.run(scenario, "db", "getent hosts web")
            assert lookup.ok and lookup.stdout.split()[0].decode() == addresses["web"], lookup
            await down(master, scenario, provider)
        assert Path("/etc/hosts").read_text() == hosts_before
        assert not Path(f"/etc/netns/crc-{scenario}-web").exists()
        shown = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
        assert f"crc-{scenario}-" not in shown
    finally:
        await provider.destroy(scenario)
        hub.cleanup()


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_crc_up_of_the_local_example_brings_every_machine_to_system_ready(
    dist_hub: HubProcess, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}
    try:
        up_run = await asyncio.to_thread(
            run_crc, dist_hub, "up", str(EXAMPLES / "local.toml"), "--local-dir", str(local), "--no-netns",
            timeout=240, env=env,
        )  # fmt: skip
        assert up_run.returncode == 0, up_run.stdout + up_run.stderr
        assert "3/3 machines ready" in up_run.stdout
        async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
            scenario = await master.scenario("local-shop")
            assert {m.name: m.status for m in scenario.machines} == {"db": "ready", "web": "ready", "worker": "ready"}
        down_run = await asyncio.to_thread(run_crc, dist_hub, "down", "local-shop", timeout=60, env=env)
        assert down_run.returncode == 0, down_run.stdout + down_run.stderr
    finally:
        await LocalProvider(local).destroy("local-shop")


async def test_crc_up_on_a_hub_without_the_locked_dependencies_names_the_command_that_adds_them(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")  # an empty DATA_DIR/dist: what a newcomer has before `crc hub dist`
    hub.start()
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}
    try:
        result = await asyncio.to_thread(
            run_crc, hub, "up", str(EXAMPLES / "local.toml"), "--local-dir", str(tmp_path / "local"), env=env
        )
        assert_one_line_error(result, 1, "crc up:", "lacks locked dependencies", "`crc hub dist`")
        async with await Master.connect(hub.url, hub.key_path) as master:
            assert await master.scenarios() == []  # nothing was created
    finally:
        hub.cleanup()


async def test_crc_up_expected_failures_are_one_line_each(dist_hub: HubProcess, tmp_path: Path) -> None:
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}
    local = ["--local-dir", str(tmp_path / "local"), "--no-netns"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nname = "x"\n[provider]\nkind = "local"\ncolour = "blue"\n')
    result = await asyncio.to_thread(run_crc, dist_hub, "up", str(bad), *local, env=env)
    assert_one_line_error(result, 2, "crc up:", "bad.toml", "colour")
    result = await asyncio.to_thread(run_crc, dist_hub, "up", str(tmp_path / "absent.toml"), *local, env=env)
    assert_one_line_error(result, 2, "crc up:", "absent.toml")
    unreachable = {**env, "CRC_HUB": f"http://127.0.0.1:{free_port()}"}
    result = await asyncio.to_thread(run_crc, dist_hub, "up", str(EXAMPLES / "local.toml"), *local, env=unreachable)
    assert_one_line_error(result, 1, "cannot reach the hub")


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_crc_up_run_again_adds_what_the_file_gained_and_removes_what_it_lost_only_with_prune(
    dist_hub: HubProcess, tmp_path: Path
) -> None:
    """As Terraform applies a changed configuration: machines the file gained are created and join; those it lost
    are named and left alone, until ``--prune`` revokes their keys and deletes them."""
    local = tmp_path / "local"
    scenario_file = tmp_path / "grow.toml"
    env = {"CRC_STATE_DIR": str(tmp_path / "state")}

    def crc_up(*machines: str, prune: bool = False) -> subprocess.CompletedProcess[str]:
        scenario_file.write_text(scenario_text("grow", *machines))
        extra = ["--prune"] if prune else []
        return run_crc(dist_hub, "up", str(scenario_file), "--local-dir", str(local), "--no-netns", *extra,
                       timeout=240, env=env)  # fmt: skip

    try:
        first = await asyncio.to_thread(crc_up, "db")
        assert first.returncode == 0 and "1/1 machines ready" in first.stdout, first.stdout + first.stderr
        grown = await asyncio.to_thread(crc_up, "db", "web")
        assert grown.returncode == 0, grown.stdout + grown.stderr
        assert "adding web with the local provider (1 present)" in grown.stdout
        assert "1/1 machines ready" in grown.stdout and "db  " not in grown.stdout  # db is left as it was
        async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
            assert all(r.ok for r in await master.run("grow", "all", "true", wait_timeout=30))
        db_pid = int((local / "grow" / "machines" / "db" / "root" / "run" / "crc" / "daemon.pid").read_text())

        shrunk = await asyncio.to_thread(crc_up, "web")
        assert shrunk.returncode == 0, shrunk.stdout + shrunk.stderr
        assert "nothing to add (1 machines present)" in shrunk.stdout
        assert "db of scenario grow are not in" in shrunk.stderr and "--prune" in shrunk.stderr
        assert (local / "grow" / "machines" / "db").exists()

        pruned = await asyncio.to_thread(crc_up, "web", prune=True)
        assert pruned.returncode == 0, pruned.stdout + pruned.stderr
        assert "crc up: removed db" in pruned.stderr
        assert not (local / "grow" / "machines" / "db").exists() and (local / "grow" / "machines" / "web").exists()
        async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
            assert [m.name for m in (await master.scenario("grow")).machines] == ["web"]
            (still,) = await master.run("grow", "web", "echo still", wait_timeout=30)
            assert still.stdout == b"still\n"
        await eventually(lambda: not alive(db_pid), timeout=10, what="the pruned machine's daemon to stop")
    finally:
        await LocalProvider(local).destroy("grow")


class UnreachableHubProvider(LocalProvider):
    """Local machines told a hub address nothing listens on: what machines see when the hub is on 127.0.0.1
    only and they are in namespaces or on VMs."""

    def __init__(self, state_dir: Path, hub_url: str) -> None:
        super().__init__(state_dir, netns=False)
        self.hub_url = hub_url

    async def prepare(self, scenario: str, hub_url: str) -> str:
        await super().prepare(scenario, hub_url)
        return self.hub_url


async def test_up_says_when_no_machine_reported_a_first_step_naming_the_hub_url_they_were_given(
    dist_hub: HubProcess, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    provider = UnreachableHubProvider(tmp_path / "local", nowhere)
    spec = parse_scenario(scenario_text("quiet", "web"))
    notices: list[str] = []
    async with await Master.connect(dist_hub.url, dist_hub.key_path) as master:
        try:
            report = await up(master, spec, provider, timeout=6, quiet_warning=2, notice=notices.append)
        finally:
            await down(master, "quiet", provider)
    assert report.machines["web"].outcome is Outcome.TIMED_OUT
    assert len(notices) == 1
    assert "no machine has reported a first boot step after 2 s" in notices[0]
    assert nowhere in notices[0] and "127.0.0.1" in notices[0]
