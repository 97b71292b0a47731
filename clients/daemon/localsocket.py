"""The daemon's local socket: how scripts on the machine use futures (``crc-daemon kv ...``).

A Unix socket in the state dir (``STATE/daemon.sock``, mode 0600 in a 0700 folder: only root, or the daemon's own
user, can connect). One JSON request per connection, one JSON answer::

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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

SOCKET_NAME = "daemon.sock"
MAX_REQUEST = 128 * 1024

Forward = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
UNIX_PATH_MAX = 100  # sun_path holds 108 bytes on Linux (104 on BSDs)


def socket_path(state_dir: Path, machine_id: str) -> Path:
    """``STATE/daemon.sock``, or a short path in the temp folder when that one is too long for a Unix socket."""
    preferred = state_dir / SOCKET_NAME
    if len(os.fsencode(preferred)) <= UNIX_PATH_MAX:
        return preferred
    import tempfile

    return Path(tempfile.gettempdir()) / f"crc-daemon-{machine_id}.sock"


async def serve(path: Path, forward: Forward) -> asyncio.AbstractServer:
    """Listen on ``path`` (replacing a stale socket); each request goes to ``forward``."""
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
    """Send one request to the daemon's socket and return its answer (used by ``crc-daemon kv``)."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data or b"{}")
    return answer
