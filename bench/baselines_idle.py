"""The baseline for idle connections: a bare aiohttp WebSocket server (no handshake, session, outbox or tasks).

Run as a server: ``python -m bench.baselines_idle --ready-file F`` serves ``ws://127.0.0.1:PORT/idle``; every
socket is accepted (no compression, aiohttp's defaults otherwise: no heartbeat) and held open, its handler
waiting in ``receive()``, until the client goes. ``open_idle`` is the client side: plain ``websockets`` clients,
no compression, no pings.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from pathlib import Path

from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from bench.common import serve_app


def raise_nofile_limit() -> int:
    """Raise this process's RLIMIT_NOFILE soft limit to the hard limit (10,000 sockets need it); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


async def _idle(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    async for _ in ws:  # hold the socket open until the client closes it
        pass
    return ws


def idle_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/idle", _idle)
    return app


async def serve(ready_file: Path) -> None:
    await serve_app(idle_app(), "/idle", ready_file)


async def open_idle(url: str, timeout: float = 10.0) -> ClientConnection:
    """One idle client connection to the bare server (the same ``websockets`` client settings as ``HubLink``)."""
    return await asyncio.wait_for(
        connect(url, compression=None, ping_interval=None, open_timeout=timeout, close_timeout=2), timeout + 1
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    raise_nofile_limit()
    asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
