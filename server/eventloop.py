"""Which asyncio event loop the hub runs on: the standard one, or uvloop (``pip install 'cloudremotecontrol[fast]'``),
which runs aiohttp's per-message work faster. Chosen with ``crc hub --event-loop`` or CRC_EVENT_LOOP."""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
LOOPS = ("asyncio", "uvloop", "auto")


class EventLoopError(ValueError):
    pass


def chosen(name: str | None = None) -> str:
    """The loop to run: ``auto`` is uvloop when it is installed, else asyncio's own.

    Raises:
        EventLoopError: an unknown name, or uvloop asked for but not installed.
    """
    name = (name or os.environ.get("CRC_EVENT_LOOP") or "asyncio").strip().lower()
    if name not in LOOPS:
        raise EventLoopError(f"event loop is one of {', '.join(LOOPS)}, not {name!r}")
    available = importlib.util.find_spec("uvloop") is not None
    if name == "uvloop" and not available:
        raise EventLoopError("uvloop is not installed: pip install 'cloudremotecontrol[fast]' (not on Windows)")
    return "uvloop" if name == "uvloop" or (name == "auto" and available) else "asyncio"


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    if chosen(name) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
