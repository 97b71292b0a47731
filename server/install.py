"""``GET /v1/install.sh`` and ``GET /v1/install.ps1``: the one-line installers (``provisioning/installers/``).

Served byte for byte as packaged, with no authentication (like ``/v1/dist/``: a machine that has only a token
fetches them). Nothing in them is trusted because the hub served it: the one-liner a master prints checks the
SHA-256 of the master's own copy before running anything. Not a feature: it has no state, no handlers and nothing
to do with the hub but its port, like the dashboard's files (and features may not import provisioning).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from provisioning.installers import INSTALLERS, Installer


def _handler(installer: Installer) -> Callable[[web.Request], Awaitable[web.Response]]:
    data = installer.data()  # read once: the package does not change under a running hub

    async def serve(request: web.Request) -> web.Response:
        # text/plain: shown, not run, by a browser; charset stated, as both files are ASCII.
        return web.Response(body=data, content_type="text/plain", charset="us-ascii",
                            headers={"Cache-Control": "no-cache"})  # fmt: skip

    return serve


def add_install_routes(app: web.Application) -> None:
    for installer in INSTALLERS.values():
        app.router.add_get(f"/v1/{installer.name}", _handler(installer))
