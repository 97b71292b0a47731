"""The daemon's local socket cannot be hijacked by another local user (issue 15, item 11).

Each attack is a real local process: one that holds a name first, or serves a socket from a folder that is not
private, or serves as another user. Nothing a script sends may reach it, and nothing it answers may be read.
"""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import localsocket
from clients.daemon.localsocket import UnsafeSocketDir

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")

# A local attacker's listener: binds PATH (as uid AS_UID, from listen() on, when that is given), records every
# request it gets and answers each as if it were the daemon.
_LISTENER = """
import json, os, socket, sys
path, seen, as_uid = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = open(seen, "ab", buffering=0)
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
os.chmod(path, 0o777)
if as_uid >= 0:
    os.setuid(as_uid)
server.listen(8)
print("listening", flush=True)
while True:
    conn, _ = server.accept()
    log.write(conn.makefile("rb").readline())
    try:
        conn.sendall(json.dumps({"ok": True, "value": "hijacked", "writer": "db"}).encode() + b"\\n")
    except OSError:
        pass
    conn.close()
"""


class Listener:
    def __init__(self, path: Path, work: Path, as_uid: int = -1) -> None:
        self.path = path
        self.seen = work / f"listener-{len(list(work.glob('listener-*')))}.seen"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LISTENER, str(path), str(self.seen), str(as_uid)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "listening\n", "the attacker's listener did not start"

    def requests(self) -> bytes:
        return self.seen.read_bytes()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def listeners() -> Iterator[list[Listener]]:
    started: list[Listener] = []
    yield started
    for listener in started:
        listener.stop()


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def _echo(request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True, "value": request.get("key")}


# the daemon's side: where it binds
def test_a_long_state_dir_gets_a_fresh_private_folder_not_a_guessable_tmp_name(tmp_path: Path) -> None:
    state_dir = private_dir(tmp_path / ("s" * 120))
    first = localsocket.socket_path(state_dir)
    (state_dir / localsocket.SOCKET_DIR_NOTE).unlink()  # another machine's daemon: nothing noted
    second = localsocket.socket_path(state_dir)
    try:
        assert first.parent != second.parent  # a random name each time: nothing to take in advance
        for path in (first, second):
            assert path.parent.parent == Path(tempfile.gettempdir())
            assert mode_of(path.parent) == 0o700 and os.lstat(path.parent).st_uid == os.geteuid()
            assert len(os.fsencode(path)) <= localsocket.UNIX_PATH_MAX
    finally:
        for path in (first, second):
            localsocket.remove_socket(path, state_dir)
    assert not first.parent.exists() and not second.parent.exists()


def test_a_killed_daemon_reuses_its_folder_but_never_one_that_is_no_longer_private(tmp_path: Path) -> None:
    state_dir = private_dir(tmp_path / ("s" * 120))
    made = [localsocket.socket_path(state_dir)]
    try:
        assert localsocket.socket_path(state_dir) == made[0]  # restarted after a kill: no second folder
        os.chmod(made[0].parent, 0o777)  # someone opened it up meanwhile
        made.append(localsocket.socket_path(state_dir))
        assert made[1].parent != made[0].parent and mode_of(made[1].parent) == 0o700
        (state_dir / localsocket.SOCKET_DIR_NOTE).write_text(str(tmp_path))  # a note pointing anywhere else
        made.append(localsocket.socket_path(state_dir))
        assert made[2].parent not in (tmp_path, made[0].parent, made[1].parent)
    finally:
        os.chmod(made[0].parent, 0o700)
        for path in made:
            localsocket.remove_socket(path, state_dir)


async def test_the_old_predictable_name_held_by_a_local_process_never_gets_a_request(
    tmp_path: Path, listeners: list[Listener]
) -> None:
    state_dir = private_dir(tmp_path / ("s" * 120))
    held = Path("/tmp") / f"crc-daemon-{os.getpid()}-test.sock"  # what the old fallback would have used
    held.unlink(missing_ok=True)
    listeners.append(Listener(held, tmp_path, NOBODY if os.geteuid() == 0 else -1))

    path = localsocket.socket_path(state_dir)
    server = await localsocket.serve(path, _echo)
    try:
        answer = await asyncio.to_thread(localsocket.call, path, {"op": "get", "key": "db/ip"}, 10)
    finally:
        server.close()
        localsocket.remove_socket(path, state_dir)
        held.unlink(missing_ok=True)
    assert answer == {"ok": True, "value": "db/ip"}
    assert path.parent != held.parent
    assert listeners[0].requests() == b""


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o777, 0o701])
async def test_the_daemon_refuses_to_bind_in_a_folder_others_can_enter_or_change(tmp_path: Path, mode: int) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    os.chmod(folder, mode)
    with pytest.raises(UnsafeSocketDir, match="open to other users"):
        await localsocket.serve(folder / localsocket.SOCKET_NAME, _echo)
    assert not (folder / localsocket.SOCKET_NAME).exists()


@as_root
async def test_the_daemon_refuses_to_bind_in_a_folder_another_user_made_first(tmp_path: Path) -> None:
    folder = private_dir(tmp_path / "theirs")
    os.chown(folder, NOBODY, NOBODY)
    with pytest.raises(UnsafeSocketDir, match=f"belongs to uid {NOBODY}"):
        await localsocket.serve(folder / localsocket.SOCKET_NAME, _echo)


async def test_the_daemon_refuses_a_link_in_place_of_its_folder(tmp_path: Path) -> None:
    target = private_dir(tmp_path / "elsewhere")
    link = tmp_path / "state"
    link.symlink_to(target)
    with pytest.raises(UnsafeSocketDir, match="not a folder"):
        await localsocket.serve(link / localsocket.SOCKET_NAME, _echo)


# the script's side: whom it talks to
@pytest.mark.parametrize("mode", [0o755, 0o777, 0o1777])
def test_a_client_refuses_a_socket_in_a_folder_that_is_not_private(
    tmp_path: Path, listeners: list[Listener], mode: int
) -> None:
    folder = tmp_path / "public"
    folder.mkdir()
    os.chmod(folder, mode)
    listener = Listener(folder / "daemon.sock", tmp_path)
    listeners.append(listener)
    with pytest.raises(UnsafeSocketDir, match="open to other users"):
        localsocket.call(listener.path, {"op": "set", "key": "web/ready", "value": "yes"}, 5)
    assert listener.requests() == b""


@as_root
def test_a_client_refuses_a_socket_in_a_folder_another_user_owns(tmp_path: Path, listeners: list[Listener]) -> None:
    folder = private_dir(tmp_path / "theirs")
    os.chown(folder, NOBODY, NOBODY)
    listener = Listener(folder / "daemon.sock", tmp_path, NOBODY)
    listeners.append(listener)
    with pytest.raises(UnsafeSocketDir, match=f"belongs to uid {NOBODY}"):
        localsocket.call(listener.path, {"op": "get", "key": "db/ip"}, 5)
    assert listener.requests() == b""


@as_root
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED is Linux's")
def test_a_client_refuses_a_socket_served_by_another_user_even_in_a_private_folder(
    tmp_path: Path, listeners: list[Listener]
) -> None:
    folder = private_dir(tmp_path / "mine")
    listener = Listener(folder / "daemon.sock", tmp_path, NOBODY)  # bound as root, then serving as nobody
    listeners.append(listener)
    os.chown(listener.path, 0, 0)
    with pytest.raises(UnsafeSocketDir, match=f"served by uid {NOBODY}"):
        localsocket.call(listener.path, {"op": "get", "key": "db/ip"}, 5)
    assert listener.requests() == b""


def test_the_kv_command_says_why_it_refuses_and_sends_nothing(tmp_path: Path, listeners: list[Listener]) -> None:
    folder = tmp_path / "public"
    folder.mkdir()
    os.chmod(folder, 0o777)
    listener = Listener(folder / "daemon.sock", tmp_path)
    listeners.append(listener)
    done = subprocess.run(
        [sys.executable, "-m", "clients.daemon.cli", "kv", "--socket", str(listener.path), "get", "db/ip"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "hijacked" not in done.stdout
    assert "open to other users" in done.stderr and "Traceback" not in done.stderr
    assert listener.requests() == b""
