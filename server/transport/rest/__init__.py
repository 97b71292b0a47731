"""The hub's REST API under ``/v1/`` for scripts, gorchestrator's clients and the dashboard: bearer access
tokens (``auth``), JSON errors (``errors``), JSON in and out (``encoding``), live streams (``live``) and the
OpenAPI document; each feature registers its own resources (``server/features/*/rest.py``)."""

from __future__ import annotations

from aiohttp import web

from server.transport.rest import live, openapi
from server.transport.rest.errors import json_errors


def add_rest_routes(app: web.Application) -> None:
    app.middlewares.append(json_errors)
    live.add_routes(app)
    openapi.add_routes(app)
