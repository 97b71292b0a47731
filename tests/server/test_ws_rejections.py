"""A real hub (in-process aiohttp server) against a raw WebSocket client that breaks the protocol on purpose.

Every broken frame must be answered with an unsealed ERROR naming what was wrong, then the connection closed;
and the hub must go on serving well-behaved sessions afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
import websockets
from aiohttp.test_utils import TestServer
from websockets.asyncio.client import ClientConnection, connect

from protocol import DEFAULT_MAX_FRAME, ClientSession, Envelope, Identity, MsgType, OrderState, RemoteError, Role
from protocol.envelope import envelope_to_wire, pack, unpack
from protocol.messages import (
    Auth,
    Body,
    Error,
    EventsSubscribe,
    FileChunk,
    OrderAck,
    OrderStarted,
    Output,
    Ping,
    Response,
    ScenarioList,
)  # fmt: skip
from protocol.session import HUB_RECIPIENT, refusal
from server.app import create_app
from server.core.appkeys import HUB_KEY
from server.core.hub import Hub
from server.settings import HubSettings
from server.store import MachineSpec, OrderRecord

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


# Before authentication: what one unknown address can make the hub do (issue 15, item 9).


@dataclass
class GuardedHub:
    """A hub with a low failed-sign-in limit, its WebSocket and HTTP addresses, and the hub object itself."""

    url: str
    http_url: str
    master: Identity
    daemon: Identity
    hub: Hub


@pytest.fixture
async def guarded_hub(tmp_path: Path) -> AsyncIterator[GuardedHub]:
    app = create_app(HubSettings(data_dir=tmp_path / "hub", handshake_failure_limit=FAILURE_LIMIT))
    hub = app[HUB_KEY]
    master, daemon = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    await hub.store.enroll_master("alice", master.public.to_text(), time.time())
    other = Identity.generate(secrets.token_bytes)
    machines = [MachineSpec("box", "linux", "box", daemon.public.to_text()),
                MachineSpec("other", "linux", "other", other.public.to_text())]  # fmt: skip
    await hub.store.create_scenario(master.id, "sc", machines, 0.0)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield GuardedHub(f"ws://127.0.0.1:{server.port}/v1/ws", f"http://127.0.0.1:{server.port}", master, daemon, hub)
    finally:
        await server.close()


FAILURE_LIMIT = 20


def _failed_handshakes(hub: Hub) -> float:
    return hub.metrics.registry.get_sample_value("crc_handshake_failures_total") or 0.0


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def _million_empty_arrays() -> bytes:
    """A valid msgpack value of 1 MiB: about a million empty arrays (each one byte, each a Python list decoded)."""
    return msgpack.packb([[]] * (DEFAULT_MAX_FRAME - 16))


def _auth_frame(client_id: str, extra: dict[str, Any] | None = None) -> bytes:
    auth = Auth(client_id=client_id, role="master", ephemeral_key=b"\x00" * 32, signature=b"\x00" * 64, version=1)
    wire = envelope_to_wire(Envelope(uuid.uuid4().hex, "peer", HUB_RECIPIENT, "", time.time(), auth))
    wire["b"].update(extra or {})
    return pack(wire)


PRE_AUTH_FRAMES: dict[str, tuple[Callable[[], bytes], str]] = {
    "a_million_empty_arrays": (_million_empty_arrays, "frame_too_large"),
    "just_over_the_pre_auth_limit": (lambda: pack({"x": b"\x00" * 4096}), "frame_too_large"),
    "nested_3000_deep": (lambda: b"\x91" * 3000 + b"\xc0", "malformed_frame"),
    "nested_past_the_auth_depth": (lambda: pack({"b": [[[[[[1]]]]]]}), "malformed_frame"),
    "a_2000_character_client_id": (lambda: _auth_frame("a" * 2000), "malformed_frame"),
    "an_auth_body_of_200_fields": (lambda: _auth_frame("x", {f"f{i}": i for i in range(200)}), "malformed_frame"),
}


async def _send_before_auth(url: str, frame: bytes) -> RemoteError:
    """Take the challenge, answer it with ``frame``; the hub's unsealed refusal (then it must hang up)."""
    async with connect(url, compression=None, ping_interval=None, close_timeout=1) as ws:
        await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)  # the challenge
        await ws.send(frame)
        error = refusal(await asyncio.wait_for(ws.recv(decode=False), TIMEOUT))
        assert error is not None
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(decode=False), TIMEOUT)
        return error


@pytest.mark.parametrize("case", list(PRE_AUTH_FRAMES))
async def test_a_hostile_frame_before_auth_is_a_typed_refusal_and_a_failed_sign_in(
    guarded_hub: GuardedHub, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    build, code = PRE_AUTH_FRAMES[case]
    error = await _send_before_auth(guarded_hub.url, build())
    assert error.code == code, error
    assert _failed_handshakes(guarded_hub.hub) == 1
    assert guarded_hub.hub.sessions.guard.too_many_failures("127.0.0.1", time.monotonic()) is False  # one of 20 so far
    assert not _tracebacks(caplog)
    await assert_hub_still_serves(LiveHub(guarded_hub.url, guarded_hub.master, guarded_hub.daemon))


async def test_twenty_connections_of_megabyte_frames_do_not_stall_the_hub_and_the_address_is_then_refused(
    guarded_hub: GuardedHub, caplog: pytest.LogCaptureFixture
) -> None:
    """The attack that stalled the loop ~27 s (both daemons dropped): 20 unauthenticated 1 MiB frames at once,
    while a master and a daemon already connected keep pinging: every ping is answered within TIMEOUT."""
    master = await RawClient.open(guarded_hub.url, guarded_hub.master, Role.MASTER)
    daemon = await RawClient.open(guarded_hub.url, guarded_hub.daemon, Role.DAEMON)
    frame = _million_empty_arrays()
    try:
        attacks = [asyncio.create_task(_send_before_auth(guarded_hub.url, frame)) for _ in range(FAILURE_LIMIT)]
        pings = 0
        for _ in range(2000):  # bounded: each request waits at most TIMEOUT
            assert (await master.request(Ping())).type is MsgType.PONG
            assert (await daemon.request(Ping())).type is MsgType.PONG
            pings += 1
            if all(attack.done() for attack in attacks):
                break
        codes = [error.code for error in await asyncio.gather(*attacks)]
        assert codes == ["frame_too_large"] * FAILURE_LIMIT and pings >= 1
        assert _failed_handshakes(guarded_hub.hub) == FAILURE_LIMIT
        # Counted against the address: its next connection is refused before any handshake.
        with pytest.raises(websockets.InvalidStatus) as refused:
            await connect(guarded_hub.url, compression=None, ping_interval=None, close_timeout=1)
        assert refused.value.response.status_code == 429
        assert (await master.request(Ping())).type is MsgType.PONG  # sessions already open are not touched
    finally:
        await master.close()
        await daemon.close()
    assert not _tracebacks(caplog)


LIVE_FIRST_MESSAGES: dict[str, str | bytes] = {
    "nested_2000_deep": "[" * 2000 + "]" * 2000,  # json.loads raises RecursionError on it
    "an_object_nested_2000_deep": '{"token": ' + "[" * 1990 + "]" * 1990 + "}",
    "not_json": "token please",
    "binary": b"\x81\xa5token\xa1x",
    "a_scenario_that_is_not_a_name": json.dumps({"token": "crc_0123456789abcdef.AAAA", "scenario": [[1]]}),
}


@pytest.mark.parametrize("case", list(LIVE_FIRST_MESSAGES))
async def test_a_hostile_first_message_on_the_live_socket_is_answered_and_counted(
    guarded_hub: GuardedHub, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = LIVE_FIRST_MESSAGES[case]
    async with aiohttp.ClientSession() as http, http.ws_connect(guarded_hub.http_url + "/v1/live") as ws:
        await (ws.send_str(first) if isinstance(first, str) else ws.send_bytes(first))
        answer = await ws.receive_json(timeout=TIMEOUT)
        assert (answer["type"], answer["code"]) == ("error", "invalid_request")
        closing = await ws.receive(timeout=TIMEOUT)
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4400
    assert not _tracebacks(caplog)
    assert guarded_hub.hub.sessions.guard.too_many_failures("127.0.0.1", time.monotonic()) is False
    for _ in range(FAILURE_LIMIT - 1):
        guarded_hub.hub.sessions.guard.failed("127.0.0.1", time.monotonic())  # the rest of the allowance, spent
    assert guarded_hub.hub.sessions.guard.too_many_failures("127.0.0.1", time.monotonic())  # so that one counted


async def test_an_oversized_first_message_on_the_live_socket_is_counted_without_a_traceback(
    guarded_hub: GuardedHub, caplog: pytest.LogCaptureFixture
) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(FAILURE_LIMIT):  # bounded
            async with http.ws_connect(guarded_hub.http_url + "/v1/live") as ws:
                await ws.send_str(json.dumps({"token": "x" * 8192}))
                closing = await ws.receive(timeout=TIMEOUT)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(guarded_hub.http_url + "/v1/live")
        assert refused.value.status == 429
    assert not _tracebacks(caplog)


# Reports only about the sender's own orders (issue 15: "a machine may send output for another machine's order").


async def _queue(hub: Hub, master: Identity, machine_id: str, order_id: str) -> None:
    """An order queued as the hub would after a master's submit (its signature is never looked at here)."""
    scenario = await hub.store.scenario_by_name(master.id, "sc")
    assert scenario is not None
    now = time.time()
    record = OrderRecord(order_id, scenario.id, machine_id, "exec", {"id": order_id}, OrderState.QUEUED, now, now)
    await hub.store.add_order(record, [])


async def test_a_machine_cannot_send_output_or_progress_for_another_machines_order(
    guarded_hub: GuardedHub, caplog: pytest.LogCaptureFixture
) -> None:
    hub = guarded_hub.hub
    scenario = await hub.store.scenario_by_name(guarded_hub.master.id, "sc")
    assert scenario is not None
    other = next(m for m in await hub.store.machines(scenario.id) if m.name == "other")
    foreign, own, forged_id = "f" * 32, "0" * 32, "x\n2026-01-01 INFO crc-hub forged line"
    await _queue(hub, guarded_hub.master, other.id, foreign)
    await _queue(hub, guarded_hub.master, guarded_hub.daemon.id, own)
    master = await RawClient.open(guarded_hub.url, guarded_hub.master, Role.MASTER)
    daemon = await RawClient.open(guarded_hub.url, guarded_hub.daemon, Role.DAEMON)
    try:
        assert isinstance((await master.request(EventsSubscribe("sc", after=-1))).body, Response)
        # The machine's own session key, and a report about an order of "other" (and one the hub never made).
        for body in (OrderAck(foreign), OrderStarted(foreign), Output(foreign, "stdout", b"FORGED"),
                     Output(forged_id, "stdout", b"FORGED TOO"), Output(own, "stdout", b"genuine")):  # fmt: skip
            await daemon.ws.send(daemon.seal(body)[1])
        outputs: list[Output] = []
        for _ in range(200):  # bounded: each frame waits at most TIMEOUT
            frame = await asyncio.wait_for(master.ws.recv(decode=False), TIMEOUT)
            envelope = master.session.open(frame, time.time())
            if isinstance(envelope.body, Output):
                outputs.append(envelope.body)
                if envelope.body.data == b"genuine":
                    break
        # Frames of one session are handled in order: a forwarded forgery would have come before the genuine one.
        assert [(o.order_id, o.data, o.machine) for o in outputs] == [(own, b"genuine", "box")]
        assert (await daemon.request(Ping())).type is MsgType.PONG  # the machine's session goes on
    finally:
        await master.close()
        await daemon.close()
    stored = await hub.store.order(foreign)
    assert stored is not None and stored.state is OrderState.QUEUED  # neither acknowledged nor started by box
    assert hub.metrics.registry.get_sample_value("crc_foreign_reports_total") == 4
    warnings = [r.getMessage() for r in caplog.records if "not its own" in r.getMessage()]
    assert len(warnings) == 1  # logged once per session, counted every time
    assert "\n" not in warnings[0] and foreign in warnings[0]
    assert not _tracebacks(caplog)


# Uploads held for their orders: bounded per master, freed with their session (issue 15: "uploads freed after use").


async def test_uploads_waiting_for_orders_are_bounded_per_master_across_its_sessions(tmp_path: Path) -> None:
    app = create_app(HubSettings(data_dir=tmp_path / "hub", max_upload_bytes=1000))
    hub = app[HUB_KEY]
    master = Identity.generate(secrets.token_bytes)
    await hub.store.enroll_master("alice", master.public.to_text(), time.time())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"ws://127.0.0.1:{server.port}/v1/ws"
    first, second = await RawClient.open(url, master, Role.MASTER), await RawClient.open(url, master, Role.MASTER)
    try:
        await first.ws.send(first.seal(FileChunk("a" * 64, 0, b"x" * 600))[1])
        assert (await first.request(Ping())).type is MsgType.PONG  # handled (chunks are not answered)
        assert hub.metrics.registry.get_sample_value("crc_upload_bytes") == 600
        # A second session of the same master does not get a second allowance.
        refused = await second.request(FileChunk("b" * 64, 0, b"y" * 600))
        assert isinstance(refused.body, Error) and refused.body.code == "invalid_request"
        assert "per master" in refused.body.message
        assert hub.metrics.registry.get_sample_value("crc_upload_bytes") == 600
        await first.close()
        for _ in range(100):  # bounded: the hub notices the closed session
            if not hub.sessions.masters.get(master.id) or len(hub.sessions.masters[master.id]) == 1:
                break
            await asyncio.sleep(0.05)
        assert hub.metrics.registry.get_sample_value("crc_upload_bytes") == 0  # went with its session
        await second.ws.send(second.seal(FileChunk("b" * 64, 0, b"y" * 600))[1])
        assert (await second.request(Ping())).type is MsgType.PONG
        assert hub.metrics.registry.get_sample_value("crc_upload_bytes") == 600
    finally:
        await first.close()
        await second.close()
        await server.close()
