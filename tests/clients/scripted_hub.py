"""A hub end written by the test: the real handshake (``HubSession``) on a real WebSocket server on 127.0.0.1,
then each request read and answered (or not, or out of order, or the connection dropped) as the test says.

hub = ScriptedHub(client_identity); async with hub.running(): ... end = await hub.accepted() ...
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection, serve

from clients.link import new_id
from protocol import DEFAULT_MAX_FRAME, Envelope, HubSession, Identity, MsgType
from protocol.messages import Body, Welcome

TIMEOUT = 5.0  # the longest any step of a test waits for the other side
MAX_FRAMES = 50  # frames read past (heartbeats) before a request must have come


class HubEnd:
    """The hub's side of one accepted connection."""

    def __init__(self, ws: ServerConnection, session: HubSession, hub_id: str, client_id: str) -> None:
        self.ws = ws
        self.session = session
        self.hub_id = hub_id
        self.client_id = client_id

    async def send(self, body: Body, *, reply_to: str = "") -> None:
        envelope = Envelope(new_id(), self.hub_id, self.client_id, "", time.time(), body, reply_to)
        await self.ws.send(self.session.seal(envelope))

    async def next_request(self) -> Envelope:
        """The client's next message that is not a heartbeat."""
        for _ in range(MAX_FRAMES):
            frame = await asyncio.wait_for(self.ws.recv(decode=False), TIMEOUT)
            assert isinstance(frame, bytes)
            envelope = self.session.open(frame, time.time())
            if envelope.type not in (MsgType.PING, MsgType.PONG):
                return envelope
        raise AssertionError(f"no request among {MAX_FRAMES} frames")

    async def requests(self, count: int) -> list[Envelope]:
        return [await self.next_request() for _ in range(count)]

    async def answer(self, request: Envelope, body: Body) -> None:
        await self.send(body, reply_to=request.id)

    async def drop(self) -> None:
        await self.ws.close()


class ScriptedHub:
    """Accepts ``client`` (any role) and hands each connection to the test through ``accepted()``."""

    def __init__(self, client: Identity) -> None:
        self.client = client
        self.identity = Identity.generate(secrets.token_bytes)
        self.url = ""
        self._accepted: asyncio.Queue[HubEnd] = asyncio.Queue()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedHub]:
        async with serve(
            self._serve, "127.0.0.1", 0, compression=None, max_size=4 * DEFAULT_MAX_FRAME, ping_interval=None
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self

    async def accepted(self) -> HubEnd:
        """The next connection the client made, once its session is ready."""
        return await asyncio.wait_for(self._accepted.get(), TIMEOUT)

    async def _serve(self, ws: ServerConnection) -> None:
        session = HubSession(self.identity, secrets.token_bytes(32), secrets.token_bytes(32))
        await ws.send(session.challenge(new_id(), time.time()))
        auth = await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
        assert isinstance(auth, bytes)
        peer = session.accept(auth, lambda _id, _role: self.client.public, time.time())
        end = HubEnd(ws, session, self.identity.id, peer.client_id)
        # Heartbeats far apart: a test's frames are then only what the test itself sends and answers.
        welcome = Welcome(session.session_id, 60.0, 120.0, DEFAULT_MAX_FRAME, {"hub_id": self.identity.id})
        await end.send(welcome)
        self._accepted.put_nowait(end)
        await ws.wait_closed()
