"""The baseline for message routing: a bare aiohttp WebSocket relay (no handshake, signing, typing or storage).

Run as a server: ``python -m bench.baselines --ready-file F`` serves ``ws://127.0.0.1:PORT/relay``. The first
socket to connect with ``?role=receiver`` receives every binary frame any ``?role=sender`` socket sends.
``relay_flood`` is the client side: one sender floods N frames, one receiver counts them.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import aiohttp
import websockets
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from bench.common import PAYLOAD, Counter, serve_app, windowed_flood

RECEIVER = web.AppKey("receiver", asyncio.Queue[web.WebSocketResponse])


async def _relay(request: web.Request) -> web.StreamResponse:
    ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20)
    await ws.prepare(request)
    receivers = request.app[RECEIVER]
    if request.query.get("role") == "receiver":
        receivers.put_nowait(ws)
        async for _ in ws:  # hold the socket open until the client closes it
            pass
        return ws
    target = await receivers.get()  # one receiver per sender: each flood opens a fresh pair
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            await target.send_bytes(msg.data)
    return ws


def relay_app() -> web.Application:
    app = web.Application()
    app[RECEIVER] = asyncio.Queue()
    app.router.add_get("/relay", _relay)
    return app


async def serve(ready_file: Path) -> None:
    await serve_app(relay_app(), "/relay", ready_file)


async def _open(url: str, role: str) -> ClientConnection:
    return await connect(f"{url}?role={role}", compression=None, max_size=1 << 20, ping_interval=None)


async def relay_flood(url: str, messages: int, payload: int = PAYLOAD) -> float:
    """Messages per second: N frames from the sender until the receiver has the last one.

    The sender does not wait for anything per message: ``send`` only waits when the socket's write buffer is
    above its high-water mark, and every ``BATCH`` messages it checks it is no more than ``WINDOW`` ahead.
    """
    receiver = await _open(url, "receiver")
    sender = await _open(url, "sender")
    frame = b"x" * payload
    counter = Counter()

    async def receive() -> None:
        try:
            while True:
                await receiver.recv(decode=False)
                counter.add()
        except websockets.ConnectionClosed as exc:
            counter.fail(exc)

    async def send() -> None:
        await sender.send(frame)

    reader = asyncio.create_task(receive())
    try:
        await asyncio.sleep(0.05)  # let the relay pair the sender with the receiver
        return await windowed_flood(send, counter, messages)
    finally:
        reader.cancel()
        await sender.close()
        await receiver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.ready_file))


if __name__ == "__main__":
    main()
