"""The one-line installer on existing machines, for real: the line ``crc enroll create --print-install`` prints runs
``install.sh`` from a real hub in a network namespace machine, which installs the daemon build the master vouches
for, enrolls, and obeys; a hub that serves other installer bytes, or another wheel, gets nothing run or installed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from clients.daemon.enroll import default_name
from clients.master import enroll_install
from clients.master.sdk import Master
from provisioning.install_command import InstallParams, linux_command
from provisioning.providers import LocalProvider
from provisioning.providers.local import netns_available
from provisioning.release import DaemonRelease
from provisioning.scenario_file import MachinePlan
from provisioning.startup import LockRef, WheelRef
from tests.e2e.support import HubProcess, assert_one_line_error, eventually, run_crc
from tests.e2e.test_tls import _init_tls

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_line(line: str, root: Path) -> subprocess.CompletedProcess[str]:
    """The line as an admin's shell runs it, with linux.sh's overrides: paths under ``root``, no systemd."""
    env = {**os.environ, "CRC_ROOT": str(root), "CRC_SERVICE": "process"}
    return subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=240, check=False)


@pytest.mark.slow  # a venv and the daemon's dependencies installed for real: over 15 s on 2 cores
@pytest.mark.skipif(not netns_available(), reason="needs root and `ip netns`")
async def test_the_printed_line_installs_and_enrolls_a_network_namespace_machine_that_then_obeys(
    tmp_path: Path, daemon_dist: Path
) -> None:
    # The machine: a namespace of its own on a bridge (the local provider's), reaching the hub at the bridge's
    # address, running the line with bash as an admin would paste it.
    provider = LocalProvider(tmp_path / "local", netns=True)
    scenario = f"inst{os.getpid() % 10000}"
    port = free_port()
    machine_hub = await provider.prepare(scenario, f"http://127.0.0.1:{port}")
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist), "--host", provider.gateway(scenario)])
    hub.port = port
    try:
        await hub.astart()
        async with await Master.connect(hub.url, hub.key_path) as master:
            await master.create_scenario(scenario, [("db", "linux", "db")])  # db never connects
            created = await asyncio.to_thread(
                run_crc, hub, "enroll", "create", scenario, "--role", "workers", "--label", "site=lab",
                "--print-install", "linux", "--machine-hub", machine_hub, timeout=180,
            )  # fmt: skip
            assert created.returncode == 0, created.stderr
            token, line = created.stdout.strip().splitlines()
            assert "install on an existing linux machine" in created.stderr
            assert token in line and line.startswith("(set -e; ")

            await provider.create(scenario, MachinePlan("m1", "linux", "workers", "", "", ""), f"{line}\n")
            name = default_name()  # ip netns keeps the host's name: the machine joins under it

            async def joined() -> bool:
                machines = {m.name: m for m in (await master.scenario(scenario)).machines}
                m = machines.get(name)
                return m is not None and m.trusted and m.status == "ready" and m.labels.get("site") == "lab"

            boot_log = tmp_path / "local" / scenario / "machines" / "m1" / "boot.out"
            try:
                await eventually(joined, timeout=200, what="the machine to install, enroll and report SystemReady")
            except BaseException:
                print(boot_log.read_text() if boot_log.exists() else "(no boot log)")
                raise
            [result] = await master.run(scenario, "role:workers", "ip -4 -o addr show dev eth0", wait_timeout=30)
            assert result.ok and result.verified, result
            assert provider.gateway(scenario).rsplit(".", 1)[0] + "." in result.stdout.decode()  # in its namespace
        log = boot_log.read_text()
        assert "crc install: downloading" in log and "crc-daemon enroll: joined" in log
        root = tmp_path / "local" / scenario / "machines" / "m1" / "root"
        assert (root / "etc" / "crc" / "daemon.toml").stat().st_mode & 0o777 == 0o600
    finally:
        await provider.destroy(scenario)
        hub.cleanup()
    shown = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert f"crc-{scenario}-" not in shown


@pytest.fixture
async def hostile_hub(tmp_path: Path) -> AsyncIterator[str]:
    """Stands in for a hostile hub: it serves ``/v1/install.sh`` where server/install.py does, but other
    bytes, which would leave a mark if they ever ran."""
    marker = tmp_path / "ran"

    async def installer(request: web.Request) -> web.Response:
        return web.Response(text=f"#!/bin/sh\ntouch {marker}\n", content_type="text/plain")

    app = web.Application()
    app.router.add_get("/v1/install.sh", installer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_hub_serving_another_installer_gets_it_refused_before_it_runs(hostile_hub: str, tmp_path: Path) -> None:
    release = DaemonRelease(WheelRef("cloudremotecontrol-0.1.0-py3-none-any.whl", "ab" * 32), LockRef.local())
    line = linux_command(InstallParams(hostile_hub, release, token="crc-enroll-v1.x"))
    done = await asyncio.to_thread(run_line, line, tmp_path / "root")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "crc install: the hub's install.sh is not the one this master ships (SHA-256 "
        f"{line.split('!= ')[1].split(' ')[0]} expected): not run"
    ]
    assert not (tmp_path / "ran").exists() and not (tmp_path / "root").exists()


@pytest.mark.slow  # builds and publishes this checkout's wheel: over 15 s on 2 cores
async def test_a_hub_serving_another_wheel_gets_nothing_installed_and_no_use_of_the_token(
    tmp_path: Path, daemon_dist: Path
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    try:
        await hub.astart()
        async with await Master.connect(hub.url, hub.key_path) as master:
            await master.create_scenario("farm", [("db", "linux", "db")])
            params = await enroll_install.prepare(master, os_name="linux", hub=hub.url, pin="", token_path="",
                                                  wheel=None)  # fmt: skip
            # The hub swaps the wheel the master published for its own build (same name, other bytes).
            (dist / params.release.wheel.name).write_bytes(b"PK\x03\x04 a wheel the master never saw")
            token = await master.create_enrollment("farm", "workers")
            line = enroll_install.lines(params, token.text(), "linux")["linux"]
            root = tmp_path / "root"
            done = await asyncio.to_thread(run_line, line, root)
            assert done.returncode == 1, done.stdout + done.stderr
            [error] = done.stderr.strip().splitlines()
            assert error.startswith(f"crc install: SHA-256 mismatch for {params.release.wheel.name} from the hub: ")
            assert f"expected {params.release.wheel.sha256} (the master's)" in error
            assert error.endswith("nothing was installed")
            assert not (root / "opt" / "crc" / "venv").exists() and not (root / "etc" / "crc" / "daemon.toml").exists()
            [info] = await master.enrollments("farm")
            assert info.used == 0 and info.joiners == []
    finally:
        hub.cleanup()


def stop_daemon(root: Path) -> None:
    """Ends the supervising loop install.sh started (it leads a session of its own: setsid) and its daemon."""
    pid_file = root / "run" / "crc" / "daemon.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)


@pytest.mark.slow  # a venv and the daemon's dependencies installed for real: over 15 s on 2 cores
async def test_over_tls_the_installer_checks_the_pin_before_fetching_anything_and_then_joins(
    tmp_path: Path, daemon_dist: Path
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    root = tmp_path / "root"
    try:
        pin = _init_tls(hub)
        await hub.astart()
        assert hub.url.startswith("https://")
        async with await Master.connect(hub.url, hub.key_path, pin=pin) as master:
            await master.create_scenario("secure", [("db", "linux", "db")])
            token = await master.create_enrollment("secure", "workers", uses=2)
            params = await enroll_install.prepare(master, os_name="linux", hub=hub.url, pin=pin, token_path="",
                                                  wheel=None)  # fmt: skip
            # Someone in the middle with another certificate: the pin the line carries is not its certificate's.
            fooled = dataclasses.replace(params, pin="sha256:" + "ab" * 32)
            done = await asyncio.to_thread(run_line, enroll_install.lines(fooled, token.text(), "linux")["linux"],
                                           tmp_path / "fooled")  # fmt: skip
            assert done.returncode == 1, done.stderr
            [error] = done.stderr.strip().splitlines()
            assert f"crc install: the hub's certificate is {pin}, not the pinned sha256:abab" in error
            assert not list((tmp_path / "fooled").rglob("*.whl"))  # refused before any download

            done = await asyncio.to_thread(run_line, enroll_install.lines(params, token.text(), "linux")["linux"], root)
            assert done.returncode == 0, done.stdout + done.stderr

            async def joined() -> bool:
                machines = {m.name: m for m in (await master.scenario("secure")).machines}
                m = machines.get(default_name())
                return m is not None and m.trusted and m.status == "ready"

            await eventually(joined, timeout=60, what="the machine to join over TLS and report SystemReady")
        assert f'hub_cert_sha256 = "{pin}"' in (root / "etc" / "crc" / "daemon.toml").read_text()
    finally:
        stop_daemon(root)
        hub.cleanup()


@pytest.mark.slow  # builds this checkout's wheel when the cache lacks it: over 15 s on 2 cores
async def test_print_install_on_a_hub_without_the_locked_dependencies_says_so_in_one_line_and_issues_nothing(
    tmp_path: Path,
) -> None:
    hub = HubProcess(tmp_path / "hub")  # an empty dist folder: before `crc hub dist`
    try:
        await hub.astart()
        async with await Master.connect(hub.url, hub.key_path) as master:
            await master.create_scenario("farm", [("db", "linux", "db")])
            done = await asyncio.to_thread(
                run_crc, hub, "enroll", "create", "farm", "--role", "workers", "--print-install", "all", timeout=180
            )
            assert_one_line_error(done, 1, "crc: ", "lacks locked dependencies", "`crc hub dist`")
            assert done.stdout == ""
            assert await master.enrollments("farm") == []  # no token was issued for lines that were not printed
    finally:
        hub.cleanup()
