"""A real hub (in-process aiohttp server) against a raw WebSocket client that breaks the protocol on purpose.

Every broken frame must be answered with an unsealed ERROR naming what was wrong, then the connection closed;
and the hub must go on serving well-behaved sessions afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import ClientConnection, connect

from protocol import DEFAULT_MAX_FRAME, ClientSession, Envelope, Identity, MsgType, RemoteError, Role
from protocol.envelope import pack, unpack
from protocol.messages import Body, Error, OrderAck, Ping, Response, ScenarioList
from protocol.session import HUB_RECIPIENT, refusal
from server.app import create_app
from server.settings import HubSettings
from server.store import MachineSpec
from server.ws import HUB_KEY

TIMEOUT = 5.0


@dataclass
class LiveHub:
    url: str
    master: Identity
    daemon: Identity


class RawClient:
    """A hand-driven client session: handshake via ``ClientSession``, then frames built (or broken) by the test."""

    def __init__(self, ws: ClientConnection, session: ClientSession, identity: Identity) -> None:
        self.ws = ws
        self.session = session
        self.identity = identity

    @classmethod
    async def open(cls, url: str, identity: Identity, role: Role) -> RawClient:
        ws = await connect(url, compression=None, max_size=8 * DEFAULT_MAX_FRAME, ping_interval=None, close_timeout=1)
        try:
            session = ClientSession(identity, role, secrets.token_bytes(32))
            challenge = await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
            await ws.send(session.answer(challenge, uuid.uuid4().hex, time.time()))
            session.welcome(await asyncio.wait_for(ws.recv(decode=False), TIMEOUT), time.time())
        except BaseException:
            await ws.close()
            raise
        return cls(ws, session, identity)

    def seal(self, body: Body, *, ts: float | None = None) -> tuple[str, bytes]:
        msg_id = uuid.uuid4().hex
        envelope = Envelope(msg_id, self.identity.id, HUB_RECIPIENT, "", time.time() if ts is None else ts, body)
        return msg_id, self.session.seal(envelope)

    async def request(self, body: Body) -> Envelope:
        """Send a well-formed message and return the hub's answer to it (skipping anything else)."""
        msg_id, frame = self.seal(body)
        await self.ws.send(frame)
        while True:
            envelope = self.session.open(await asyncio.wait_for(self.ws.recv(decode=False), TIMEOUT), time.time())
            if envelope.reply_to == msg_id:
                return envelope

    async def refused(self) -> RemoteError:
        """The hub's unsealed ERROR, after which it must close the connection."""
        while True:
            frame = await asyncio.wait_for(self.ws.recv(decode=False), TIMEOUT)
            error = refusal(frame)
            if error is not None:
                break
            # a sealed frame sent before the bad one was read (a PING, say): not the answer we wait for
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(self.ws.recv(decode=False), TIMEOUT)
        return error

    async def close(self) -> None:
        await self.ws.close()


@pytest.fixture
async def live_hub(tmp_path: Path) -> AsyncIterator[LiveHub]:
    app = create_app(HubSettings(data_dir=tmp_path / "hub"))
    store = app[HUB_KEY].store
    master, daemon = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    await store.enroll_master("alice", master.public.to_text(), time.time())
    await store.create_scenario(master.id, "sc", [MachineSpec("box", "linux", "box", daemon.public.to_text())], 0.0)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield LiveHub(f"ws://127.0.0.1:{server.port}/v1/ws", master, daemon)
    finally:
        await server.close()


async def assert_hub_still_serves(hub: LiveHub) -> None:
    client = await RawClient.open(hub.url, hub.master, Role.MASTER)
    try:
        answer = await client.request(ScenarioList())
        assert isinstance(answer.body, Response)
        assert [s["name"] for s in answer.body.data["scenarios"]] == ["sc"]
    finally:
        await client.close()


def _tampered(client: RawClient) -> bytes:
    _, frame = client.seal(Ping())
    seq, payload, tag = unpack(frame)
    return pack([seq, payload[:-1] + bytes([payload[-1] ^ 0x01]), tag])


def _stale(client: RawClient) -> bytes:
    return client.seal(Ping(), ts=time.time() - 3600)[1]


def _oversized(client: RawClient) -> bytes:
    return b"\x91" + b"\x00" * (DEFAULT_MAX_FRAME + 16)


def _truncated(client: RawClient) -> bytes:
    return client.seal(Ping())[1][:-7]


def _not_a_sealed_frame(client: RawClient) -> bytes:
    return pack({"hello": "hub"})


BAD_FRAMES: dict[str, tuple[Callable[[RawClient], bytes], str]] = {
    "tampered": (_tampered, "bad_mac"),
    "stale_timestamp": (_stale, "stale_timestamp"),
    "oversized": (_oversized, "frame_too_large"),
    "truncated_msgpack": (_truncated, "malformed_frame"),
    "map_instead_of_sealed_array": (_not_a_sealed_frame, "malformed_frame"),
}


@pytest.mark.parametrize("role", [Role.MASTER, Role.DAEMON])
@pytest.mark.parametrize("case", list(BAD_FRAMES))
async def test_a_broken_frame_is_refused_with_its_error_code_and_the_connection_closed(
    live_hub: LiveHub, case: str, role: Role
) -> None:
    build, code = BAD_FRAMES[case]
    client = await RawClient.open(live_hub.url, live_hub.master if role is Role.MASTER else live_hub.daemon, role)
    await client.ws.send(build(client))
    error = await client.refused()
    assert error.code == code, error
    await assert_hub_still_serves(live_hub)


async def test_a_replayed_frame_is_refused_as_bad_sequence(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
    msg_id, frame = client.seal(ScenarioList())
    await client.ws.send(frame)
    answer = client.session.open(await asyncio.wait_for(client.ws.recv(decode=False), TIMEOUT), time.time())
    assert (answer.type, answer.reply_to) == (MsgType.RESPONSE, msg_id)
    await client.ws.send(frame)  # the same bytes again
    error = await client.refused()
    assert error.code == "bad_sequence"
    await assert_hub_still_serves(live_hub)


async def test_a_frame_from_the_future_is_refused_as_bad_sequence(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
    client.seal(Ping())  # sealed (numbered 1) but never sent
    await client.ws.send(client.seal(Ping())[1])  # number 2 arrives first
    error = await client.refused()
    assert error.code == "bad_sequence"
    await assert_hub_still_serves(live_hub)


async def test_a_text_frame_after_the_handshake_is_refused_as_malformed(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
    await client.ws.send("scenario.list")
    error = await client.refused()
    assert error.code == "malformed_frame"
    await assert_hub_still_serves(live_hub)


async def test_a_text_frame_instead_of_auth_is_refused_as_malformed(live_hub: LiveHub) -> None:
    async with connect(live_hub.url, compression=None, ping_interval=None, close_timeout=1) as ws:
        await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)  # the challenge
        await ws.send('{"auth": true}')
        error = refusal(await asyncio.wait_for(ws.recv(decode=False), TIMEOUT))
        assert error is not None and error.code == "malformed_frame"
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
    await assert_hub_still_serves(live_hub)


async def test_garbage_instead_of_auth_is_refused(live_hub: LiveHub) -> None:
    async with connect(live_hub.url, compression=None, ping_interval=None, close_timeout=1) as ws:
        await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
        await ws.send(b"\xc1not msgpack")
        error = refusal(await asyncio.wait_for(ws.recv(decode=False), TIMEOUT))
        assert error is not None and error.code == "malformed_frame"
    await assert_hub_still_serves(live_hub)


@pytest.mark.parametrize("role", [Role.MASTER, Role.DAEMON])
async def test_an_unknown_identity_is_refused_at_the_handshake(live_hub: LiveHub, role: Role) -> None:
    stranger = Identity.generate(secrets.token_bytes)
    with pytest.raises(RemoteError) as caught:
        await RawClient.open(live_hub.url, stranger, role)
    assert caught.value.code == "unknown_identity"
    await assert_hub_still_serves(live_hub)


@pytest.mark.parametrize("role", [Role.MASTER, Role.DAEMON])
async def test_a_key_enrolled_for_the_other_role_is_refused(live_hub: LiveHub, role: Role) -> None:
    """A master key cannot log in as a daemon, nor a machine key as a master."""
    identity = live_hub.daemon if role is Role.MASTER else live_hub.master
    with pytest.raises(RemoteError) as caught:
        await RawClient.open(live_hub.url, identity, role)
    assert caught.value.code == "unknown_identity"


async def test_a_daemon_sending_a_master_request_gets_an_error_and_stays_connected(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.daemon, Role.DAEMON)
    try:
        answer = await client.request(ScenarioList())
        assert isinstance(answer.body, Error)
        assert answer.body.code == "invalid_request"
        assert "scenario.list" in answer.body.message
        pong = await client.request(Ping())  # the session goes on
        assert pong.type is MsgType.PONG
    finally:
        await client.close()


async def test_a_master_sending_a_daemon_message_gets_an_error_and_stays_connected(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
    try:
        answer = await client.request(OrderAck("0" * 32))
        assert isinstance(answer.body, Error) and answer.body.code == "invalid_request"
        listed = await client.request(ScenarioList())
        assert isinstance(listed.body, Response)
    finally:
        await client.close()


async def test_many_bad_sessions_in_a_row_leave_the_hub_serving(live_hub: LiveHub) -> None:
    async def one_bad(build: Callable[[RawClient], bytes]) -> str:
        client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
        await client.ws.send(build(client))
        return (await client.refused()).code

    jobs: list[Awaitable[str]] = [one_bad(build) for build, _ in BAD_FRAMES.values()] * 3
    codes = await asyncio.gather(*jobs)
    assert codes == [code for _, code in BAD_FRAMES.values()] * 3
    await assert_hub_still_serves(live_hub)


class _Impostor:
    """Claims another peer's id but can only sign with its own key."""

    def __init__(self, claimed: Identity, own: Identity) -> None:
        self.id = claimed.id
        self.public = own.public
        self._own = own

    def sign(self, data: bytes) -> bytes:
        return self._own.sign(data)


@pytest.mark.parametrize("role", [Role.MASTER, Role.DAEMON])
async def test_a_peer_claiming_another_peers_id_is_refused_as_a_bad_signature(live_hub: LiveHub, role: Role) -> None:
    victim = live_hub.master if role is Role.MASTER else live_hub.daemon
    impostor = _Impostor(victim, Identity.generate(secrets.token_bytes))
    with pytest.raises(RemoteError) as caught:
        await RawClient.open(live_hub.url, impostor, role)  # type: ignore[arg-type]
    assert caught.value.code == "bad_signature"
    await assert_hub_still_serves(live_hub)


async def test_a_frame_whose_sender_is_not_the_authenticated_peer_closes_the_session(live_hub: LiveHub) -> None:
    client = await RawClient.open(live_hub.url, live_hub.master, Role.MASTER)
    envelope = Envelope("forged", live_hub.daemon.id, "hub", "", time.time(), ScenarioList())
    await client.ws.send(client.session.seal(envelope))
    error = await client.refused()
    assert error.code == "bad_field"
    await assert_hub_still_serves(live_hub)
