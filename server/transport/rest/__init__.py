"""The hub's REST API under ``/v1/`` for scripts, gorchestrator's clients and the dashboard: bearer access
tokens (``auth``), JSON errors (``errors``) and one module per resource."""

from __future__ import annotations

from aiohttp import web

from server.transport.rest import live, openapi, scenarios, tasks
from server.transport.rest.errors import json_errors


def add_rest_routes(app: web.Application) -> None:
    app.middlewares.append(json_errors)
    tasks.add_routes(app)
    scenarios.add_routes(app)
    live.add_routes(app)
    openapi.add_routes(app)
