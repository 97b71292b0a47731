"""``GET /v1/install.sh`` and ``GET /v1/install.ps1``: the one-line installers (``provisioning/installers/``).

Served byte for byte as packaged, with no authentication (like ``/v1/dist/``: a machine that has only a token
fetches them). Nothing in them is trusted because the hub served it: the one-liner a master prints checks the
SHA-256 of the master's own copy before running anything.
"""

from __future__ import annotations

from aiohttp import web

from provisioning.installers import INSTALLERS, Installer
from server.core.feature import Feature

routes = web.RouteTableDef()


def _route(installer: Installer) -> None:
    data = installer.data()  # read once: the package does not change under a running hub

    async def serve(request: web.Request) -> web.Response:
        # text/plain: shown, not run, by a browser; charset stated, as both files are ASCII.
        return web.Response(body=data, content_type="text/plain", charset="us-ascii",
                            headers={"Cache-Control": "no-cache"})  # fmt: skip

    routes.get(f"/v1/{installer.name}")(serve)


for _installer in INSTALLERS.values():
    _route(_installer)

FEATURE = Feature("install", routes=routes)
