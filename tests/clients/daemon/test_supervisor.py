"""The supervisor (clients/daemon/supervisor.py) that the Windows service runs: real child processes, started from
stand-in builds whose ``crc-daemon`` does what a daemon does at the points the supervisor cares about (asks to
restart after installing an update, confirms a trial, crashes, is revoked, stops when its stdin closes); and the
real ``crc-daemon`` stopping when its supervisor closes its stdin."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clients.daemon import supervisor, update
from clients.daemon.config import DaemonConfig, write_config
from protocol import Identity

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="the stand-in builds are POSIX scripts"),
]

# A stand-in crc-daemon: records how it was started, then follows the next line of its build's plan.
#   wait       run until stdin closes (the supervisor's "stop"), exit 0
#   exit N     exit N at once
#   update V   write pending.json naming build V (what an UPDATE order installs), exit EXIT_RESTART
#   confirm    confirm a trial (as after reaching the hub), then wait
#   deaf       ignore stdin closing (the supervisor must kill it)
STAND_IN = """#!{python}
import json, os, sys, time
from pathlib import Path
build = Path(__file__).resolve().parent.parent
state = Path({state!r})
starts = state / "starts.jsonl"
with starts.open("a") as out:
    out.write(json.dumps({{"build": build.name, "argv": sys.argv[1:], "pid": os.getpid(),
        "trial": bool(os.environ.get("CRC_DAEMON_TRIAL")), "launched": bool(os.environ.get("CRC_DAEMON_LAUNCHED")),
        "stop_on_eof": bool(os.environ.get("CRC_DAEMON_STOP_ON_EOF"))}}) + "\\n")
plan = (build / "plan").read_text().splitlines()
step_file = build / "step"
step = int(step_file.read_text()) if step_file.exists() else 0
step_file.write_text(str(step + 1))
action = plan[min(step, len(plan) - 1)].split()
folder = state / "update"
if action[0] == "exit":
    sys.exit(int(action[1]))
if action[0] == "update":
    folder.mkdir(exist_ok=True)
    venv = str(build.parent / action[1])
    (folder / "pending.json").write_text(json.dumps({{"venv": venv, "wheel": "w.whl", "version": action[1]}}))
    sys.exit({restart})
if action[0] == "confirm":
    pending = json.loads((folder / "pending.json").read_text())
    (folder / "current.json").write_text(json.dumps(pending))
    (folder / "pending.json").unlink()
if action[0] == "deaf":
    while True:
        time.sleep(1)
sys.stdin.buffer.read()
"""


def make_build(root: Path, state: Path, name: str, plan: list[str]) -> Path:
    venv = root / name
    program = update.venv_daemon(venv)
    program.parent.mkdir(parents=True)
    program.write_text(STAND_IN.format(python=sys.executable, state=str(state), restart=update.EXIT_RESTART))
    program.chmod(0o755)
    (venv / "plan").write_text("\n".join(plan))
    return venv


def starts(state: Path) -> list[dict[str, object]]:
    path = state / "starts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def until(predicate: object, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def supervise_until(plan: supervisor.Supervision, predicate: object) -> int:
    """Supervise until ``predicate`` holds, then stop; the supervisor's status."""
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.supervise(plan, stop))
    await until(predicate)
    stop.set()
    return await asyncio.wait_for(task, 20)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    folder = tmp_path / "state"
    folder.mkdir()
    return folder


@pytest.fixture(autouse=True)
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "MIN_START_INTERVAL", 0.05)
    monkeypatch.delenv(update.TRIAL_ENV, raising=False)
    monkeypatch.delenv(update.LAUNCHED_ENV, raising=False)


def plan_for(state: Path, base: Path) -> supervisor.Supervision:
    return supervisor.Supervision(state, base, ("--config", "daemon.toml"), log_file=state.parent / "daemon.log")


async def test_the_base_build_runs_until_stop_and_stops_when_its_stdin_closes(tmp_path: Path, state: Path) -> None:
    base = make_build(tmp_path, state, "venv", ["wait"])
    assert await supervise_until(plan_for(state, base), lambda: starts(state)) == 0
    [start] = starts(state)
    assert start == {
        "build": "venv",
        "argv": ["--config", "daemon.toml"],
        "pid": start["pid"],
        "trial": False,
        "launched": True,  # so the child never runs the exec launcher itself
        "stop_on_eof": True,
    }


async def test_an_update_starts_the_new_build_on_trial_and_a_confirmed_one_is_started_from_then_on(
    tmp_path: Path, state: Path
) -> None:
    base = make_build(tmp_path, state, "venv", ["update venv-new", "wait"])
    make_build(tmp_path, state, "venv-new", ["confirm", "wait"])
    assert await supervise_until(plan_for(state, base), lambda: (state / "update" / "current.json").exists()) == 0
    assert [(s["build"], s["trial"]) for s in starts(state)] == [("venv", False), ("venv-new", True)]
    # The service starts again (a reboot): the confirmed build, not the base, and no longer on trial.
    assert await supervise_until(plan_for(state, base), lambda: len(starts(state)) == 3) == 0
    assert (starts(state)[-1]["build"], starts(state)[-1]["trial"]) == ("venv-new", False)


async def test_a_trial_that_crashes_is_rolled_back_to_the_build_that_ran_before(tmp_path: Path, state: Path) -> None:
    base = make_build(tmp_path, state, "venv", ["update venv-bad", "wait"])
    make_build(tmp_path, state, "venv-bad", ["exit 1"])
    assert await supervise_until(plan_for(state, base), lambda: len(starts(state)) == 3) == 0
    assert [(s["build"], s["trial"]) for s in starts(state)] == [("venv", False), ("venv-bad", True), ("venv", False)]
    note = update.take_rollback_note(state)
    assert note is not None and note["version"] == "venv-bad" and "did not reconnect" in note["reason"]
    assert not (state / "update" / "pending.json").exists()


async def test_a_revoked_daemon_is_not_started_again(tmp_path: Path, state: Path) -> None:
    base = make_build(tmp_path, state, "venv", ["exit 3"])
    assert await asyncio.wait_for(supervisor.supervise(plan_for(state, base), asyncio.Event()), 20) == 3
    assert len(starts(state)) == 1


async def test_a_confirmed_build_that_crashes_ends_the_supervisor_for_the_service_manager_to_restart(
    tmp_path: Path, state: Path
) -> None:
    base = make_build(tmp_path, state, "venv", ["wait"])
    current = make_build(tmp_path, state, "venv-current", ["exit 9"])
    (state / "update").mkdir()
    (state / "update" / "current.json").write_text(json.dumps({"venv": str(current), "wheel": "c", "version": "c"}))
    assert await asyncio.wait_for(supervisor.supervise(plan_for(state, base), asyncio.Event()), 20) == 9
    assert [s["build"] for s in starts(state)] == ["venv-current"]


async def test_a_build_that_cannot_be_started_is_forgotten_and_the_base_runs(tmp_path: Path, state: Path) -> None:
    base = make_build(tmp_path, state, "venv", ["wait"])
    broken = make_build(tmp_path, state, "venv-current", ["wait"])
    update.venv_daemon(broken).chmod(0o644)  # exists, but cannot be executed
    (state / "update").mkdir()
    (state / "update" / "current.json").write_text(json.dumps({"venv": str(broken), "wheel": "c", "version": "c"}))
    assert await supervise_until(plan_for(state, base), lambda: starts(state)) == 0
    assert [s["build"] for s in starts(state)] == ["venv"]
    assert not (state / "update" / "current.json").exists()


async def test_a_child_that_ignores_stop_is_killed_after_the_grace_period(
    tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "STOP_GRACE_SECONDS", 0.5)
    base = make_build(tmp_path, state, "venv", ["deaf"])
    assert await supervise_until(plan_for(state, base), lambda: starts(state)) == 0
    pid = int(str(starts(state)[0]["pid"]))
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_each_childs_output_is_appended_to_the_log_file(tmp_path: Path, state: Path) -> None:
    base = make_build(tmp_path, state, "venv", ["exit 3"])
    program = update.venv_daemon(base)
    program.write_text(program.read_text().replace("import json,", "print('hello from the daemon'); import json,"))
    for _ in range(2):
        await asyncio.wait_for(supervisor.supervise(plan_for(state, base), asyncio.Event()), 20)
    assert (state.parent / "daemon.log").read_text().count("hello from the daemon") == 2


def start_real_daemon(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """The installed crc-daemon as the supervisor starts it, pointed at a hub that is not there (it keeps retrying)."""
    command = Path(sys.executable).parent / "crc-daemon"
    if not command.exists():
        pytest.skip(f"crc-daemon is not installed next to {sys.executable}")
    machine, master = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    config_path = tmp_path / "daemon.toml"
    write_config(config_path, DaemonConfig("http://127.0.0.1:9", "s", "m", machine, master.public))
    argv = [str(command), "--config", str(config_path), "--state-dir", str(tmp_path / "state")]
    argv += ["--hosts-file", str(tmp_path / "hosts")]
    log = tmp_path / "daemon.log"
    with log.open("wb") as output:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, supervisor.STOP_ON_EOF_ENV: "1", **env},
        )
    return child, log


def test_the_real_daemon_stops_when_its_supervisor_closes_its_stdin(tmp_path: Path) -> None:
    """How the Windows service stops its daemon: no console for Ctrl+Break; TerminateProcess would lose the journal."""
    child, log = start_real_daemon(tmp_path, **{update.LAUNCHED_ENV: "1"})
    try:
        time.sleep(2)
        assert child.poll() is None, log.read_text()
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(20) == 0, log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_supervised_daemon_that_ends_by_itself_exits_with_its_own_status(tmp_path: Path) -> None:
    """A trial that cannot reach the hub in time exits 1, with the stdin watcher still waiting: the interpreter must
    not abort at exit over it (it did, with SIGABRT, while the watcher read through sys.stdin's buffer)."""
    child, log = start_real_daemon(tmp_path, **{update.TRIAL_ENV: "1", update.TRIAL_SECONDS_ENV: "1"})
    try:
        assert child.wait(30) == 1, log.read_text()
        assert "Fatal Python error" not in log.read_text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdin is not None:
            child.stdin.close()
