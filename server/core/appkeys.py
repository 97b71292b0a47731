"""Typed keys of what the aiohttp application holds (aiohttp's ``AppKey``): the one place routes find the hub."""

from __future__ import annotations

from aiohttp import web

from server.core.dispatch import HandlerTable
from server.core.hub import Hub

HUB_KEY = web.AppKey("hub", Hub)
HANDLERS_KEY = web.AppKey("handlers", HandlerTable)  # every feature's, composed by server/app.py
