"""The self-update launcher's decisions (clients/daemon/update.py), with exec replaced by a recorder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from clients.daemon import update

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the launcher is Linux-only")


class Execed(Exception):
    def __init__(self, program: str, argv: list[str], marker: str) -> None:
        super().__init__(program)
        self.program, self.argv, self.marker = program, argv, marker


@pytest.fixture
def execs(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_execve(program: str, argv: list[str], env: dict[str, str]) -> None:
        marker = next(m for m in (update.TRIAL_ENV, update.LAUNCHED_ENV) if env.get(m))
        raise Execed(program, argv, marker)

    monkeypatch.setattr(update.os, "execve", fake_execve)
    monkeypatch.delenv(update.TRIAL_ENV, raising=False)
    monkeypatch.delenv(update.LAUNCHED_ENV, raising=False)


def make_venv(root: Path, name: str) -> Path:
    venv = root / name
    daemon = update.venv_daemon(venv)
    daemon.parent.mkdir(parents=True)
    daemon.write_text("#!/bin/sh\n")
    daemon.chmod(0o755)
    return venv


def write(state: Path, name: str, build: update.Build) -> None:
    folder = update.update_dir(state)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(build.__dict__))


def test_nothing_installed_runs_this_build(tmp_path: Path, execs: None) -> None:
    update.launch(tmp_path, ["--config", "x"])


def test_a_pending_build_is_tried_once_then_rolled_back(tmp_path: Path, execs: None) -> None:
    venv = make_venv(tmp_path, "venv-new")
    write(tmp_path, "pending.json", update.Build(str(venv), "w.whl", "2.0"))
    with pytest.raises(Execed) as trial:
        update.launch(tmp_path, ["--config", "x"])
    assert trial.value.program == str(update.venv_daemon(venv)) and trial.value.marker == update.TRIAL_ENV
    assert trial.value.argv[1:] == ["--config", "x"]
    # It never confirmed; the next start rolls it back and runs this build.
    update.launch(tmp_path, ["--config", "x"])
    assert not (update.update_dir(tmp_path) / "pending.json").exists()
    note = update.take_rollback_note(tmp_path)
    assert note is not None and note["version"] == "2.0" and "did not reconnect" in note["reason"]
    assert update.take_rollback_note(tmp_path) is None


def test_a_missing_pending_build_is_rolled_back_at_once(tmp_path: Path, execs: None) -> None:
    write(tmp_path, "pending.json", update.Build(str(tmp_path / "gone"), "w.whl", "2.0"))
    update.launch(tmp_path, [])
    note = update.take_rollback_note(tmp_path)
    assert note is not None and "missing" in note["reason"]


def test_the_confirmed_build_is_started_and_survives_a_failed_newer_one(tmp_path: Path, execs: None) -> None:
    current = make_venv(tmp_path, "venv-current")
    write(tmp_path, "current.json", update.Build(str(current), "c.whl", "1.5"))
    write(tmp_path, "pending.json", update.Build(str(tmp_path / "venv-bad"), "b.whl", "2.0", attempts=1))
    with pytest.raises(Execed) as launched:
        update.launch(tmp_path, [])
    assert launched.value.program == str(update.venv_daemon(current))
    assert launched.value.marker == update.LAUNCHED_ENV
    assert update.take_rollback_note(tmp_path) is not None


def test_processes_started_by_the_launcher_just_run(
    tmp_path: Path, execs: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "pending.json", update.Build(str(make_venv(tmp_path, "venv-new")), "w.whl", "2.0"))
    monkeypatch.setenv(update.LAUNCHED_ENV, "1")
    update.launch(tmp_path, [])
    assert (update.update_dir(tmp_path) / "pending.json").exists()


def test_a_trial_confirms_only_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(update.TRIAL_ENV, raising=False)
    write(tmp_path, "pending.json", update.Build(sys.prefix, "w.whl", "2.0", attempts=1))
    assert update.confirm(tmp_path) is None  # not in a trial
    monkeypatch.setenv(update.TRIAL_ENV, "1")
    build = update.confirm(tmp_path)
    assert build is not None and build.version == "2.0"
    assert json.loads((update.update_dir(tmp_path) / "current.json").read_text())["venv"] == sys.prefix
    assert not (update.update_dir(tmp_path) / "pending.json").exists()


def test_on_windows_only_a_supervised_daemon_can_restart_into_a_new_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Windows daemon started by hand has nobody to start the new build after it exits: it refuses the update."""
    monkeypatch.delenv(update.TRIAL_ENV, raising=False)
    monkeypatch.delenv(update.LAUNCHED_ENV, raising=False)
    assert update.can_restart_into_a_new_build()  # Linux: the launcher execs it
    monkeypatch.setattr(update.sys, "platform", "win32")
    assert not update.can_restart_into_a_new_build()
    monkeypatch.setenv(update.LAUNCHED_ENV, "1")  # what the service's supervisor sets
    assert update.can_restart_into_a_new_build()
