"""``crc update``: daemons installed by the startup script move to a newer build the hub serves, and a build
that cannot reconnect is rolled back; the machines' events show each step."""

from __future__ import annotations

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
from provisioning.scenario_file import parse_scenario
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

            build_variant(dist, tmp_path, "99.0.1")
            lines: list[str] = []
            outcomes = await update_daemons(
                master, "upd", timeout=180, progress=lambda machine, text: lines.append(f"{machine} {text}")
            )
            assert outcomes["app"].outcome is UpdateOutcome.UPDATED, (outcomes, lines)
            assert outcomes["app"].version == "99.0.1"
            info = await master.scenario("upd")
            assert info.machine("app").facts["daemon_version"] == "99.0.1" != first
            [result] = await master.run("upd", "app", "echo still obeying")
            assert result.ok and result.verified

            build_variant(dist, tmp_path, "99.0.2", broken=True)
            outcomes = await update_daemons(master, "upd", timeout=180)
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
