"""The operators' dashboard: one page served by the hub at ``/`` (plain HTML, one ES module, one stylesheet; no
build step, nothing from elsewhere). It signs in with an access token (``crc token create``) and shows a
scenario's machines, live events and command output, stored results and plans through the REST API under
``/v1/`` and the live WebSocket ``/v1/live``; operators can run commands from it.

- ``GET /``: ``index.html`` with a strict Content-Security-Policy (only this hub's scripts, styles and sockets);
- ``GET /static/{name}``: ``app.js`` and ``style.css`` from ``static/``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"
# connect-src 'self' covers the page's own ws:/wss: origin (CSP Level 3), so the page can open no socket elsewhere.
CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'"
CONTENT_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
COMMON_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def _file(name: str, extra: dict[str, str] | None = None) -> web.Response:
    content_type = CONTENT_TYPES.get(name)
    path = STATIC_DIR / name
    if content_type is None or not path.is_file():
        raise web.HTTPNotFound(text=f"no such file: {name}\n")
    headers = {**COMMON_HEADERS, "Content-Type": content_type, **(extra or {})}
    return web.Response(body=path.read_bytes(), headers=headers)


async def index(request: web.Request) -> web.Response:
    return _file("index.html", {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == "index.html":
        return await index(request)
    return _file(name)


def add_dashboard_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
