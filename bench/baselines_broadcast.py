"""The baseline for broadcast: a bare aiohttp WebSocket server sending one frame to every connected socket.

Server: ``python -m bench.baselines_broadcast --ready-file F`` serves ``ws://127.0.0.1:PORT/bcast``. Sockets that
connect with ``?role=client`` are held open; each binary frame a ``?role=trigger`` socket sends is sent to every
client socket in turn (``send_bytes``; no handshake, signing, storage or mailbox).

Clients (in a process of their own, like the daemons' swarm): ``python -m bench.baselines_broadcast --clients URL
--count N --out FILE --ready-file F`` opens N plain ``websockets`` connections (no compression, no pings), writes
the ready file once all are open, and appends ``CLIENT BROADCAST TIME`` (``time.time()`` at receipt; the broadcast
number is the frame's first 8 bytes) to FILE every 0.1 s. SIGTERM stops either.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from websockets.asyncio.client import ClientConnection

from bench.broadcast_swarm import flush
from bench.common import open_ws, serve_app, write_ready
from bench.hub_process import raise_nofile_limit

CLIENTS = web.AppKey("clients", set[web.WebSocketResponse])
CONCURRENCY = 100  # connections being opened at once
OPEN_TIMEOUT = 15.0


async def _bcast(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    clients = request.app[CLIENTS]
    if request.query.get("role") == "client":
        clients.add(ws)
        try:
            async for _ in ws:  # hold the socket open until the client closes it
                pass
        finally:
            clients.discard(ws)
        return ws
    async for msg in ws:  # the trigger
        if msg.type == aiohttp.WSMsgType.BINARY:
            for client in list(clients):
                if not client.closed:
                    await client.send_bytes(msg.data)
    return ws


def broadcast_app() -> web.Application:
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_get("/bcast", _bcast)
    return app


async def serve(ready_file: Path) -> None:
    await serve_app(broadcast_app(), "/bcast", ready_file)


async def _open(url: str, role: str) -> ClientConnection:
    return await open_ws(url, role, OPEN_TIMEOUT)


async def open_trigger(url: str) -> ClientConnection:
    return await _open(url, "trigger")


async def clients(url: str, count: int, out: Path, ready_file: Path) -> None:
    """N clients noting when each frame reaches them, until SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sink: list[str] = []
    sockets: list[ClientConnection] = []
    gate = asyncio.Semaphore(CONCURRENCY)

    async def open_one() -> None:
        async with gate:
            sockets.append(await _open(url, "client"))

    async def read(i: int, ws: ClientConnection) -> None:
        async for frame in ws:
            now = time.time()
            if isinstance(frame, bytes):
                sink.append(f"c{i} {int(frame[:8])} {now:.6f}\n")

    await asyncio.gather(*(open_one() for _ in range(count)))
    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    flusher = asyncio.create_task(flush(sink, out))
    await asyncio.sleep(0.2)  # let the server register the last sockets before saying they are all there
    write_ready(ready_file, str(len(sockets)))
    try:
        await stop.wait()
    finally:
        for task in (*readers, flusher):
            task.cancel()
        await asyncio.gather(*readers, flusher, return_exceptions=True)
        for ws in sockets:
            ws.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--clients", metavar="URL", help="run the clients against this server")
    parser.add_argument("--count", type=int, default=1_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    raise_nofile_limit()
    if args.clients:
        asyncio.run(clients(args.clients, args.count, args.out, args.ready_file))
    else:
        asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
