"""The baseline for round-trip latency: a bare aiohttp WebSocket relay between two clients, both ways.

Server: ``python -m bench.baselines_rtt --ready-file F`` serves ``ws://127.0.0.1:PORT/rtt``. A socket that
connects with ``?role=b`` waits for its peer; the next ``?role=a`` socket is paired with it: every binary frame
A sends goes to B, every frame B sends goes to A (no handshake, signing, typing or storage).

Echo client (B, in a process of its own like the daemon): ``python -m bench.baselines_rtt --echo URL
--ready-file F`` connects as B and sends every frame back unchanged. ``connect_a`` is the requesting side (A).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from websockets.asyncio.client import ClientConnection

from bench.common import open_ws, serve_app, write_ready

WAITING = web.AppKey("waiting", asyncio.Queue[tuple[web.WebSocketResponse, asyncio.Future[web.WebSocketResponse]]])


async def _pump(source: web.WebSocketResponse, target: web.WebSocketResponse) -> None:
    async for msg in source:
        if msg.type == aiohttp.WSMsgType.BINARY and not target.closed:
            await target.send_bytes(msg.data)


async def _rtt(request: web.Request) -> web.StreamResponse:
    """A: paired with the oldest waiting B; each handler forwards its own socket's frames to the other."""
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    waiting = request.app[WAITING]
    if request.query.get("role") == "b":
        partner: asyncio.Future[web.WebSocketResponse] = asyncio.get_running_loop().create_future()
        waiting.put_nowait((ws, partner))
        a = await partner
        await _pump(ws, a)  # B -> A
        return ws
    b, partner = await waiting.get()
    partner.set_result(ws)
    await _pump(ws, b)  # A -> B
    return ws


def rtt_app() -> web.Application:
    app = web.Application()
    app[WAITING] = asyncio.Queue()
    app.router.add_get("/rtt", _rtt)
    return app


async def serve(ready_file: Path) -> None:
    await serve_app(rtt_app(), "/rtt", ready_file)


async def _open(url: str, role: str) -> ClientConnection:
    return await open_ws(url, role, 10)


async def echo(url: str, ready_file: Path) -> None:
    """Client B: connect, say so, and send back every frame until the connection closes."""
    ws = await _open(url, "b")
    write_ready(ready_file, "connected")
    async for frame in ws:
        await ws.send(frame)


async def connect_a(url: str) -> ClientConnection:
    """Client A, paired with the B that connected before it."""
    return await _open(url, "a")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--echo", metavar="URL", help="run client B (the echoing side) against this relay")
    args = parser.parse_args()
    if args.echo:
        asyncio.run(echo(args.echo, args.ready_file))
    else:
        asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
