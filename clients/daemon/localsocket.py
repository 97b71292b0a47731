"""The daemon's local socket: how scripts on the machine use futures (``crc-daemon kv ...``).

A Unix socket in the state dir (``STATE/daemon.sock``, mode 0600 in a 0700 folder: only root, or the daemon's own
user, can connect); when that path is too long for a socket, in a fresh private folder of random name
(``mkdtemp``), never under a name another local user could guess and take first. The daemon binds only in a
folder that is its own and private, and clients talk only to a socket in a private folder owned by root or by
them, served (``SO_PEERCRED``, Linux) by root or by them: scripts never hand kv traffic to another user.
One JSON request per connection, one JSON answer::

    {"op": "set", "key": "web/ready", "value": "yes", "ttl": 60}     -> {"ok": true}
    {"op": "get", "key": "db/ip"}                       -> {"ok": true, "value": "10.0.0.5", "writer": "db"}
    {"op": "wait", "key": "db/ready", "timeout": 300}   -> {"ok": true, "value": "yes", "writer": "db"}
    failures                                            -> {"ok": false, "code": ..., "error": ...}

The daemon forwards each to the hub over its session; rules (a machine sets only ``NAME/...``) are the hub's.
What a script sets or sends the daemon signs with the machine key; what it gets is verified first, and a value
that does not verify is answered ``{"ok": false, "code": "untrusted_value"}`` (``protocol.signed_values``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SOCKET_NAME = "daemon.sock"
SOCKET_DIR_NOTE = "socket-dir"  # in the state dir: where a socket too long for it lives
SOCKET_DIR_PREFIX = "crc-daemon-"
MAX_REQUEST = 128 * 1024

Forward = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes on Linux (104 on BSDs)


class UnsafeSocketDir(OSError):
    """The socket's folder (or the socket) could be another user's: nothing is bound there or sent to it."""


def socket_path(state_dir: Path) -> Path:
    """``STATE/daemon.sock``, or ``daemon.sock`` in a private folder of its own when that path is too long.

    The fallback folder is made by ``mkdtemp`` (0700, random name, created atomically), so no other local user can
    have made it first. Its name is noted in the state dir so that a daemon that was killed reuses it rather than
    leaving one more behind, but only while it is still this user's private folder; the daemon removes it when it
    stops (``remove_socket``).
    """
    preferred = state_dir / SOCKET_NAME
    if len(os.fsencode(preferred)) <= UNIX_PATH_MAX:
        return preferred
    note = state_dir / SOCKET_DIR_NOTE
    with contextlib.suppress(OSError, UnicodeDecodeError):
        noted = Path(note.read_text().strip())
        if noted.parent == Path(tempfile.gettempdir()) and noted.name.startswith(SOCKET_DIR_PREFIX):
            with contextlib.suppress(UnsafeSocketDir):
                require_private_dir(noted, frozenset({os.geteuid()}))
                return noted / SOCKET_NAME
    folder = Path(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX))
    with contextlib.suppress(OSError):  # without the note, a later start just makes another folder
        fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(str(folder))
    return folder / SOCKET_NAME


def remove_socket(path: Path, state_dir: Path) -> None:
    """Remove the socket, and its folder when ``socket_path`` made one for it."""
    path.unlink(missing_ok=True)
    if path.parent != state_dir:
        with contextlib.suppress(OSError):  # not empty: something else lives there, leave it
            path.parent.rmdir()


def require_private_dir(folder: Path, owners: frozenset[int]) -> None:
    """``folder`` is a real folder (not a link), owned by one of ``owners``, that no one else can enter or change.

    Raises:
        UnsafeSocketDir: it is not; the message says why.
    """
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        raise UnsafeSocketDir(f"{folder} does not exist") from None
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeSocketDir(f"{folder} is not a folder (a link or a file): refusing its socket")
    if info.st_uid not in owners:
        raise UnsafeSocketDir(f"{folder} belongs to uid {info.st_uid}, not to root or this user: refusing its socket")
    if info.st_mode & 0o077:
        raise UnsafeSocketDir(
            f"{folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}, must be 700): refusing its socket"
        )


def _trusted_uids() -> frozenset[int]:
    """Root and this process's own user: the daemon runs as one of them, and only they may serve its socket."""
    return frozenset({0, os.geteuid()})


async def serve(path: Path, forward: Forward) -> asyncio.AbstractServer:
    """Listen on ``path`` (replacing a stale socket); each request goes to ``forward``.

    Raises:
        UnsafeSocketDir: ``path``'s folder is not this user's own private folder.
    """
    require_private_dir(path.parent, frozenset({os.geteuid()}))
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if len(line) > MAX_REQUEST:
                answer: dict[str, Any] = {"ok": False, "code": "frame_too_large", "error": "request too large"}
            else:
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("not an object")
                except ValueError as exc:
                    answer = {"ok": False, "code": "invalid_request", "error": f"not a JSON object: {exc}"}
                else:
                    answer = await forward(request)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(handle, path=str(path), limit=MAX_REQUEST + 1)
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return server


def call(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request to the daemon's socket and return its answer (used by ``crc-daemon kv``).

    Raises:
        UnsafeSocketDir: the socket, its folder or the process serving it could be another user's.
        OSError: no daemon answers there.
    """
    trusted = _trusted_uids()
    require_private_dir(path.parent, trusted)
    info = os.lstat(path)
    if not stat.S_ISSOCK(info.st_mode) or info.st_uid not in trusted:
        raise UnsafeSocketDir(f"{path} is not a socket of root or this user: refusing to talk to it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        _require_trusted_peer(sock, path, trusted)
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data or b"{}")
    return answer


def _require_trusted_peer(sock: socket.socket, path: Path, trusted: frozenset[int]) -> None:
    """On Linux the kernel tells who listens: a socket swapped in after the checks above is still refused."""
    if not hasattr(socket, "SO_PEERCRED"):
        return
    credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", credentials)
    if uid not in trusted:
        raise UnsafeSocketDir(f"{path} is served by uid {uid}, not by root or this user: refusing to talk to it")
