"""``crc update``: daemons installed by the startup script move to a newer build the hub serves, and a build
that cannot reconnect is rolled back; the machines' events show each step."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clients.master.models import EventInfo
from clients.master.sdk import Master
from provisioning.daemon_update import UpdateOutcome, update_daemons
from provisioning.dist import SKIPPED, source_tree
from provisioning.lifecycle import down, up
from provisioning.providers import LocalProvider
from provisioning.providers.local import _stop_groups
from provisioning.release import ReleaseError, content_named, publish_release
from provisioning.scenario_file import parse_scenario
from provisioning.startup import LockRef
from tests.e2e.support import HubProcess

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(sys.platform == "win32", reason="Linux self-update")]


def build_variant(dist: Path, scratch: Path, version: str, *, broken: bool = False) -> str:
    """A wheel of this checkout under another version number; ``broken`` ones exit at once when started."""
    tree = source_tree()
    assert tree is not None
    copy = scratch / f"src-{version}"
    shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(*SKIPPED))
    project = copy / "pyproject.toml"
    project.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', project.read_text()))
    if broken:
        cli = copy / "clients" / "daemon" / "cli.py"
        text = cli.read_text()
        marker = "    update.launch(args.state_dir, argv)"
        assert marker in text
        cli.write_text(text.replace(marker, marker + '\n    raise SystemExit("this build is broken on purpose")'))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(copy)],
        check=True, capture_output=True,
    )  # fmt: skip
    return f"cloudremotecontrol-{version}-py3-none-any.whl"


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_daemons_update_to_a_new_build_and_roll_back_a_broken_one(tmp_path: Path, daemon_dist: Path) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    hub.start()
    provider = LocalProvider(tmp_path / "local", netns=False)
    spec = parse_scenario('[scenario]\nname = "upd"\n[[machine]]\nname = "app"\n')
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            report = await up(master, spec, provider, timeout=200)
            assert report.ok, report.machines
            first = (await master.scenario("upd")).machine("app").facts["daemon_version"]

            good = tmp_path / "wheels" / build_variant(tmp_path / "wheels", tmp_path, "99.0.1")
            lines: list[str] = []
            outcomes = await update_daemons(
                master, "upd", wheel=good, timeout=180, progress=lambda machine, text: lines.append(f"{machine} {text}")
            )
            assert outcomes["app"].outcome is UpdateOutcome.UPDATED, (outcomes, lines)
            assert outcomes["app"].version == "99.0.1"
            info = await master.scenario("upd")
            assert info.machine("app").facts["daemon_version"] == "99.0.1" != first
            [result] = await master.run("upd", "app", "echo still obeying")
            assert result.ok and result.verified

            broken = tmp_path / "wheels" / build_variant(tmp_path / "wheels", tmp_path, "99.0.2", broken=True)
            outcomes = await update_daemons(master, "upd", wheel=broken, timeout=180)
            assert outcomes["app"].outcome is UpdateOutcome.ROLLED_BACK, outcomes
            assert "did not reconnect" in outcomes["app"].detail and "99.0.2" in outcomes["app"].detail
            [result] = await master.run("upd", "app", "echo back on the good build")
            assert result.ok
            assert (await master.scenario("upd")).machine("app").facts["daemon_version"] == "99.0.1"

            steps = [
                (e.data["step"], e.data["status"])
                async for e in master.events("upd", 0, follow=False)
                if isinstance(e, EventInfo) and e.kind == "boot_step" and e.data["step"].startswith("update-")
            ]
            assert ("update-installing", "ok") in steps and ("update-restarting", "running") in steps
            assert ("update-confirmed", "ok") in steps and ("update-rolled-back", "failed") in steps
            await down(master, "upd", provider)
    finally:
        await provider.destroy("upd")
        hub.cleanup()


@pytest.mark.slow  # over 15 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_a_wheel_planted_in_the_hubs_dist_is_never_what_machines_are_told_to_install(
    tmp_path: Path, daemon_dist: Path
) -> None:
    """The attack: a `cloudremotecontrol-99.0.0` wheel dropped into the hub's dist/, which index.json then names as
    the daemon. The master signs only the build it holds; the planted file is never named in what it signs."""
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    planted = dist / build_variant(dist, tmp_path, "99.0.0")
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    hub.start()
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            own = tmp_path / "own" / build_variant(tmp_path / "own", tmp_path, "0.1.0")
            release = await publish_release(master, own)
        assert release.wheel.sha256 == hashlib.sha256(own.read_bytes()).hexdigest()
        assert release.wheel.sha256 != hashlib.sha256(planted.read_bytes()).hexdigest()
        assert "99.0.0" not in release.wheel.name
        assert (dist / release.wheel.name).read_bytes() == own.read_bytes()  # what machines fetch and check
        assert (dist / release.lock.name).read_bytes() == LockRef.local_text()
    finally:
        hub.cleanup()


async def test_the_hub_cannot_have_a_file_the_master_published_replaced_under_its_name(
    tmp_path: Path, daemon_dist: Path
) -> None:
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    hub.start()
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            own = tmp_path / "own" / build_variant(tmp_path / "own", tmp_path, "0.1.0")
            name = content_named(own.name, hashlib.sha256(own.read_bytes()).hexdigest())
            (dist / name).write_bytes(b"not the master's build")  # someone got there first
            with pytest.raises(ReleaseError, match="another file named"):
                await publish_release(master, own)
    finally:
        hub.cleanup()


@pytest.mark.slow
async def test_a_supervised_daemon_updates_and_rolls_back_without_exec(tmp_path: Path, daemon_dist: Path) -> None:
    """What the Windows service does (it cannot exec into a new build): ``crc-daemon supervise`` keeps running and
    starts each build as its child, the new one on trial, the old one again when the trial fails. The machine is
    installed by the startup script, then its daemon is put under the supervisor."""
    dist = tmp_path / "dist"
    shutil.copytree(daemon_dist, dist)
    hub = HubProcess(tmp_path / "hub", extra_args=["--dist-dir", str(dist)])
    hub.start()
    provider = LocalProvider(tmp_path / "local", netns=False)
    spec = parse_scenario('[scenario]\nname = "sup"\n[[machine]]\nname = "app"\n')
    supervising: subprocess.Popen[bytes] | None = None
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            report = await up(master, spec, provider, timeout=200)
            assert report.ok, report.machines
            root = provider.machine_dir("sup", "app") / "root"
            pid_file = root / "run" / "crc" / "daemon.pid"
            _stop_groups([int(pid_file.read_text())])  # the startup script's own restart loop, and its daemon
            argv = [str(root / "opt" / "crc" / "venv" / "bin" / "crc-daemon"), "supervise"]
            argv += ["--config", str(root / "etc" / "crc" / "daemon.toml"), "--state-dir", str(root / "var/lib/crc")]
            argv += ["--hosts-file", str(root / "etc" / "hosts")]
            with (tmp_path / "supervisor.log").open("ab") as log:
                supervising = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            pid_file.write_text(str(supervising.pid))  # so the provider's destroy stops it
            [result] = await master.run("sup", "app", "echo supervised")
            assert result.ok, result

            good = tmp_path / "wheels" / build_variant(tmp_path / "wheels", tmp_path, "99.0.1")
            outcomes = await update_daemons(master, "sup", wheel=good, timeout=180)
            assert outcomes["app"].outcome is UpdateOutcome.UPDATED, outcomes
            assert (await master.scenario("sup")).machine("app").facts["daemon_version"] == "99.0.1"

            broken = tmp_path / "wheels" / build_variant(tmp_path / "wheels", tmp_path, "99.0.2", broken=True)
            outcomes = await update_daemons(master, "sup", wheel=broken, timeout=180)
            assert outcomes["app"].outcome is UpdateOutcome.ROLLED_BACK, outcomes
            [result] = await master.run("sup", "app", "echo back on the good build")
            assert result.ok
            assert (await master.scenario("sup")).machine("app").facts["daemon_version"] == "99.0.1"
            assert supervising.poll() is None, "one supervisor throughout: it started builds, it never exec'd"
            assert b"supervise" in Path(f"/proc/{supervising.pid}/cmdline").read_bytes().split(b"\0")
            await down(master, "sup", provider)
    finally:
        await provider.destroy("sup")
        if supervising is not None:
            supervising.wait(30)  # stopped by destroy, through the pid file
        hub.cleanup()
