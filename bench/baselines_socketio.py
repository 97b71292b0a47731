"""The comparison the performance issue names: python-socketio on aiohttp with ``AsyncRedisManager``.

Run as a server: ``python -m bench.baselines_socketio --redis-url redis://... --ready-file F`` serves Socket.IO
on ``http://127.0.0.1:PORT`` (``socketio.AsyncServer(async_mode="aiohttp", client_manager=AsyncRedisManager)``),
the way python-socketio is scaled out: every ``emit`` to a room is published on Redis (one shared channel) and
delivered by the node's Redis listener, even when the recipient is on the same node.

Clients (``socketio.AsyncClient``, websocket transport only) connect with ``auth={"role": ..., "pair": ...}``
and join the room ``PAIR:ROLE``; a pair is one "daemon" and one "master". The server relays:

- ``out`` (a 256-byte binary payload) from the daemon to its master: the ``output_frames`` job (``sio_flood``);
- ``req`` from the master to its daemon, whose client answers ``rep`` with the same payload, relayed back to the
  master: one request/response round trip, the shape of a command and its result (``sio_round_trips``).

Both floods use the windowing of ``bench.common`` (at most ``WINDOW`` ahead of the receiver). python-socketio
is optional (``pip install -e '.[bench]'``); ``missing()`` says why these baselines cannot run, if they cannot.
``SocketioRelay`` starts a throwaway ``redis-server`` and the server process, and stops both on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from bench.common import PAYLOAD, Counter, Server, serve_app, windowed_flood

SIO_NAME = "python-socketio + AsyncRedisManager"
CONNECT_TIMEOUT = 10.0


def missing() -> str:
    """Why the socketio baselines cannot run here ('' when they can)."""
    try:
        import socketio  # noqa: F401
    except ImportError:
        return "python-socketio is not installed (pip install -e '.[bench]')"
    from tests.redis_server import redis_server_binary

    if redis_server_binary() is None:
        return "redis-server is not on PATH"
    return ""


def skip_note(scenario: str, reason: str) -> None:
    print(f"  {scenario}: skipping the python-socketio comparison: {reason}", file=sys.stderr, flush=True)


# server side (its own process)


def socketio_app(redis_url: str) -> web.Application:
    import socketio

    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(redis_url), max_http_buffer_size=1 << 20
    )
    pairs: dict[str, str] = {}  # sid -> pair

    async def connect(sid: str, environ: dict[str, Any], auth: dict[str, str]) -> None:
        pairs[sid] = auth["pair"]
        await sio.enter_room(sid, f"{auth['pair']}:{auth['role']}")

    async def disconnect(sid: str, *args: Any) -> None:
        pairs.pop(sid, None)

    async def out(sid: str, data: bytes) -> None:
        await sio.emit("out", data, room=f"{pairs[sid]}:master")

    async def req(sid: str, data: bytes) -> None:
        await sio.emit("req", data, room=f"{pairs[sid]}:daemon")

    async def rep(sid: str, data: bytes) -> None:
        await sio.emit("rep", data, room=f"{pairs[sid]}:master")

    for event, handler in (("connect", connect), ("disconnect", disconnect), ("out", out), ("req", req),
                           ("rep", rep)):  # fmt: skip
        sio.on(event, handler)

    app = web.Application()
    sio.attach(app)
    return app


async def serve(redis_url: str, ready_file: Path) -> None:
    await serve_app(socketio_app(redis_url), "", ready_file, scheme="http")


class SocketioRelay:
    """A throwaway ``redis-server`` and the socketio server on it, each in a process of its own; ``url``."""

    def __init__(self, work_dir: Path) -> None:
        from bench.replicas import ThrowawayRedis

        self.redis = ThrowawayRedis(work_dir / "socketio-redis")
        self.server: Server | None = None
        self.work_dir = work_dir
        self.url = ""

    async def __aenter__(self) -> SocketioRelay:
        await asyncio.to_thread(self.redis.start)
        try:
            argv = ["-m", "bench.baselines_socketio", "--redis-url", self.redis.url]
            self.server = Server("socketio", argv, self.work_dir)
            self.url = await self.server.start()
        except BaseException:
            await asyncio.to_thread(self.redis.stop)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self.server is not None:
                self.server.stop()
        finally:
            await asyncio.to_thread(self.redis.stop)


# client side (the bench process)


async def _connect(client: Any, url: str, role: str, pair: str) -> None:
    await asyncio.wait_for(
        client.connect(url, auth={"role": role, "pair": pair}, transports=["websocket"], wait_timeout=5),
        CONNECT_TIMEOUT,
    )


async def _close(*clients: Any) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), 5)


async def _pair_flood(url: str, messages: int, send_event: str, count_event: str, payload: int) -> float:
    """A fresh daemon/master pair; ``send_event`` emitted by the sender, ``count_event`` counted at the master."""
    import socketio

    pair = secrets.token_hex(6)
    master = socketio.AsyncClient(reconnection=False)
    daemon = socketio.AsyncClient(reconnection=False)
    counter = Counter()
    data = b"x" * payload

    def count(_: bytes) -> None:
        counter.add()

    async def answer(request: bytes) -> None:
        await daemon.emit("rep", request)

    master.on(count_event, count)
    master.on("disconnect", lambda *_: counter.fail(ConnectionError("the master was disconnected")))
    daemon.on("req", answer)
    sender = daemon if send_event == "out" else master
    try:
        await _connect(master, url, "master", pair)
        await _connect(daemon, url, "daemon", pair)
        await asyncio.sleep(0.05)  # both rooms joined on the server

        async def send() -> None:
            await sender.emit(send_event, data)

        return await windowed_flood(send, counter, messages)
    finally:
        await _close(daemon, master)


async def sio_flood(url: str, messages: int, payload: int = PAYLOAD) -> float:
    """Messages per second: N binary ``out`` events from the daemon until the master has the last one."""
    return await _pair_flood(url, messages, "out", "out", payload)


async def sio_round_trips(url: str, messages: int, payload: int = PAYLOAD) -> float:
    """Round trips per second: N ``req`` master -> daemon, each answered ``rep`` daemon -> master."""
    return await _pair_flood(url, messages, "req", "rep", payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.redis_url, args.ready_file))


if __name__ == "__main__":
    main()
