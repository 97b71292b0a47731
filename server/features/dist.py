"""``/v1/dist/`` and DIST_PUT: the wheels machines install the daemon from, so a fresh VM need not reach PyPI.

The folder (``HubSettings.dist_dir``) is filled by ``crc hub dist`` (``provisioning.dist``). It is served as a
flat index pip understands (``pip install --find-links HUB/v1/dist/``), each link carrying its SHA-256, plus
``index.json`` naming the daemon's own wheel, whose hash masters put into the startup scripts they render.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from protocol import Envelope, ErrorCode
from protocol.messages import DistPut, Response
from server.core.appkeys import HUB_KEY
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.state import StateKey
from server.dist_files import FILE_NAME, DistConflict, put_file

handlers = HandlerTable()
DAEMON_DIST = "cloudremotecontrol"
RACY_SECONDS = 2.0


@dataclass(frozen=True)
class DistFile:
    name: str
    size: int
    sha256: str


class DistFolder:
    """The files of the dist folder with their hashes, re-hashed only when a file changes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._hashes: dict[str, tuple[float, int, str]] = {}

    def files(self) -> list[DistFile]:
        found = []
        if not self.folder.is_dir():
            return []
        for path in sorted(self.folder.iterdir()):
            if not FILE_NAME.match(path.name) or not path.is_file():
                continue
            stat = path.stat()
            cached = self._hashes.get(path.name)
            # A file changed within the file system's timestamp granularity can keep its mtime and size: only
            # trust the cache for files left alone for a while (as git does with "racy" index entries).
            recent = time.time() - stat.st_mtime < RACY_SECONDS
            if cached is None or cached[:2] != (stat.st_mtime, stat.st_size) or recent:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                cached = (stat.st_mtime, stat.st_size, digest)
                self._hashes[path.name] = cached
            found.append(DistFile(path.name, stat.st_size, cached[2]))
        return found

    def daemon_wheel(self) -> DistFile | None:
        """The newest wheel of the daemon's own distribution, by version."""
        wheels = [f for f in self.files() if f.name.startswith(DAEMON_DIST + "-") and f.name.endswith(".whl")]
        return max(wheels, key=lambda f: _version_key(f.name.split("-")[1]), default=None)


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.+]", version))


_FOLDERS: StateKey[dict[Path, DistFolder]] = StateKey("dist.folders", dict)
routes = web.RouteTableDef()


def dist_folder(hub: Hub) -> DistFolder:
    """The hub's dist folder, with the hashes known so far."""
    folders, path = hub.state[_FOLDERS], hub.settings.dist_dir
    if path not in folders:
        folders[path] = DistFolder(path)
    return folders[path]


@routes.get("/v1/dist/")
async def index_html(request: web.Request) -> web.Response:
    links = "\n".join(
        f'<a href="{html.escape(f.name)}#sha256={f.sha256}">{html.escape(f.name)}</a><br>'
        for f in dist_folder(request.app[HUB_KEY]).files()
    )
    page = f"<!DOCTYPE html>\n<html><head><title>crc dist</title></head><body>\n{links}\n</body></html>\n"
    return web.Response(text=page, content_type="text/html")


@routes.get("/v1/dist/index.json")
async def index_json(request: web.Request) -> web.Response:
    dist = dist_folder(request.app[HUB_KEY])
    daemon = dist.daemon_wheel()
    return web.json_response(
        {
            "hub_id": request.app[HUB_KEY].id,
            "daemon": None if daemon is None else daemon.__dict__,
            "files": [f.__dict__ for f in dist.files()],
        }
    )


@routes.get("/v1/dist/{name}")
async def dist_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = dist_folder(request.app[HUB_KEY]).folder / name
    if not FILE_NAME.match(name) or not path.is_file():
        raise web.HTTPNotFound(text=f"no file {name!r} in the hub's dist folder")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


@handlers.on(DistPut)
async def dist_put(hub: Hub, conn: Connection, env: Envelope, body: DistPut) -> None:
    """Put a file this master uploaded into the dist folder machines install from (nothing there is trusted: the
    hashes machines check come from the master's signature)."""
    upload = conn.uploads.pop(body.upload)
    if upload is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"no upload {body.upload!r} on this session: send its chunks first")
    content = b"".join(upload.chunks)
    if upload.sha256() != body.upload:
        raise RequestError(ErrorCode.INVALID_REQUEST, "the upload's SHA-256 is not its id")
    try:
        added = await asyncio.to_thread(put_file, hub.settings.dist_dir, body.name, content)
    except DistConflict as exc:
        raise RequestError(ErrorCode.ALREADY_EXISTS, str(exc), name=body.name) from None
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
    except OSError as exc:
        raise RequestError(ErrorCode.UNAVAILABLE, f"cannot write to the hub's dist folder: {exc.strerror}") from None
    conn.send(Response({"name": body.name, "sha256": body.upload, "added": added}), reply_to=env.id)


FEATURE = Feature("dist", handlers, routes=routes)
