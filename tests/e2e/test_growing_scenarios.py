"""A scenario grows and shrinks after it was created, from the command line, against a real hub and daemons:
``crc scenario add-machine`` writes the new machines' daemon configs, they join and obey; ``remove-machine``
revokes one, whose daemon exits for good and whose name no target reaches any more."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.daemon.cli import EXIT_REVOKED
from tests.e2e.support import Daemons, HubProcess, assert_one_line_error, run_crc


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path / "hub")
    process.start()
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    started = Daemons(tmp_path / "daemons")
    try:
        yield started
    finally:
        for process in started.started.values():
            process.cleanup()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_added_machines_join_the_scenario_and_a_removed_one_leaves_it(
    hub: HubProcess, daemons: Daemons, tmp_path: Path
) -> None:
    configs = tmp_path / "cfg"
    ok(run_crc(hub, "scenario", "create", "grow", "--machine", "db:linux", "--out", str(configs)))
    daemons.start(configs / "db.toml")
    ok(run_crc(hub, "wait", "grow", "--timeout", "20"))

    added = ok(run_crc(hub, "scenario", "add-machine", "grow", "cache", "worker:linux", "--role", "workers",
                       "--label", "tier=back", "--out", str(configs)))  # fmt: skip
    assert sorted(line.split(":")[0] for line in added.splitlines()) == ["cache", "worker"]
    assert (configs / "cache.toml").stat().st_mode & 0o077 == 0, "a config holds a private key"
    daemons.start(configs / "cache.toml")
    daemons.start(configs / "worker.toml")
    assert "all 3 machines ready" in ok(run_crc(hub, "wait", "grow", "--timeout", "20"))

    both = ok(run_crc(hub, "run", "grow", "role:workers", "--", "echo joined"))
    assert sorted(both.splitlines()) == ["[cache] joined", "[worker] joined"]
    assert ok(run_crc(hub, "run", "grow", "label:tier=back", "--", "true")) == ""
    shown = ok(run_crc(hub, "scenario", "show", "grow"))
    assert all(name in shown for name in ("db", "cache", "worker"))
    assert "machines_added" in ok(run_crc(hub, "watch", "grow", "--no-follow"))

    taken = run_crc(hub, "scenario", "add-machine", "grow", "cache", "--out", str(tmp_path / "again"))
    assert_one_line_error(taken, 1, "cache", "already")
    assert not (tmp_path / "again" / "cache.toml").exists()

    ok(run_crc(hub, "scenario", "remove-machine", "grow", "cache"))
    assert await daemons.started["cache"].wait_exit(10) == EXIT_REVOKED
    gone = run_crc(hub, "run", "grow", "cache", "--", "true")
    assert gone.returncode == 1 and "cache" in gone.stderr
    assert ok(run_crc(hub, "run", "grow", "role:workers", "--", "echo still")) == "still\n"
