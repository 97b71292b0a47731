"""A hub in process for feature tests: the application ``server/app.py`` composes (every feature's handlers and
start/stop hooks) on a SQLite store and the local backplane, and peers that reach it over real protocol sessions
with no socket in between.

Each peer is a real ``ClientSession`` (the master's or daemon's end) and a real hub-side ``Connection`` around a
real ``HubSession``; the handshake runs between them as it does over a WebSocket. A request is sealed by the
client, opened by the hub session and handed to ``server.core.dispatch.dispatch`` with the table the app built;
what the hub sends back goes through the connection's outbox into ``StandInSocket`` and is opened at once by the
client session, so every frame is checked (tag, sequence number) as a real client would.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from aiohttp import web

from protocol import (
    ClientSession,
    Envelope,
    HubSession,
    Identity,
    Order,
    OrderKind,
    OrderState,
    ProtocolError,
    PublicKey,
    RemoteError,
    Role,
    SessionState,
    SignedResult,
)
from protocol.boot import report_key
from protocol.certificates import MachineCertificate
from protocol.events import EventPayload, from_wire
from protocol.messages import (
    Body,
    Error,
    Event,
    EventsSubscribe,
    EventsUnsubscribe,
    Response,
    ScenarioCreate,
    Welcome,
)
from protocol.session import refusal
from protocol.signed_values import SignedValue, ValueKind, WriterKind
from server.app import create_app
from server.backplane import LocalBackplane
from server.core import stores
from server.core.appkeys import HANDLERS_KEY, HUB_KEY
from server.core.connection import Connection, new_id
from server.core.dispatch import HandlerTable, dispatch
from server.core.hub import Hub
from server.settings import settings_from
from server.store import SqliteStore

B = TypeVar("B", bound=Body)
WAIT = 2.0  # the longest a helper waits for the hub to send something (tests finish far sooner)


class StandInSocket:
    """Stands in for the ``aiohttp.web.WebSocketResponse`` a ``Connection`` writes to. A connection (and so every
    handler) uses only two of its methods, and this models only those: ``send_bytes(data)`` (one binary frame;
    raises ``ConnectionResetError`` once closed, as aiohttp's closing transport does) and ``close()``. The read
    side belongs to ``server.transport.ws``, which these tests replace by calling ``dispatch`` directly."""

    def __init__(self, receive: Callable[[bytes], None]) -> None:
        self._receive = receive
        self.closed = False

    async def send_bytes(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionResetError("Cannot write to closing transport")
        self._receive(data)

    async def close(self) -> bool:
        was_open, self.closed = not self.closed, True
        return was_open


@dataclass
class Peer:
    """A master or a daemon connected to the hub: its keys, its end of the session and the hub's."""

    name: str
    identity: Identity
    role: Role
    client: ClientSession
    socket: StandInSocket = field(init=False)
    conn: Connection = field(init=False)
    received: list[Envelope] = field(default_factory=list)
    refusals: list[RemoteError] = field(default_factory=list)  # unsealed ERRORs: the hub dropped the session

    def __post_init__(self) -> None:
        self.socket = StandInSocket(self.take_frame)

    @property
    def id(self) -> str:
        return self.client.client_id

    def take_frame(self, frame: bytes) -> None:
        """What the hub wrote, read as the client's session reads it."""
        refused = refusal(frame)
        if refused is not None:
            self.refusals.append(refused)
        elif self.client.state is SessionState.AUTHENTICATING:
            self.received.append(self.client.welcome(frame, time.time()))
        else:
            self.received.append(self.client.open(frame, time.time()))


@dataclass(frozen=True)
class NewMachine:
    """A machine of a scenario made by ``HubContext.create_scenario``: its key pair stays with the test."""

    name: str
    identity: Identity

    @property
    def id(self) -> str:
        return self.identity.id


class HubContext:
    """The hub and its handler table as ``server.app.create_app`` builds them, and helpers to drive it."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.hub: Hub = app[HUB_KEY]
        self.handlers: HandlerTable = app[HANDLERS_KEY]
        self.peers: list[Peer] = []

    @classmethod
    async def start(cls, data_dir: Path) -> HubContext:
        settings = settings_from(data_dir=data_dir, replica_id="here", env={})
        app = create_app(
            settings,
            store=SqliteStore(settings.database),
            backplane=LocalBackplane(settings.replica_id),
            identity=Identity.generate(os.urandom),
        )
        app.freeze()
        await app.startup()  # the app's own start-up: presence reset, then Hub.start with every feature's on_start
        return cls(app)

    async def stop(self) -> None:
        for peer in self.peers:
            await self.disconnect(peer)
        await self.app.shutdown()  # Hub.close_all: every feature's on_stop
        await self.app.cleanup()  # the store closes

    # peers
    async def master(self, name: str, identity: Identity | None = None) -> Peer:
        """A master enrolled on the hub (as ``crc-hub master add`` does) and connected."""
        identity = identity or Identity.generate(os.urandom)
        if await stores.masters(self.hub).master(identity.id) is None:
            await stores.masters(self.hub).enroll_master(name, identity.public.to_text(), time.time())
        return await self.connect(name, identity, Role.MASTER)

    async def daemon(self, machine: NewMachine) -> Peer:
        return await self.connect(machine.name, machine.identity, Role.DAEMON)

    async def connect(self, name: str, identity: Identity, role: Role) -> Peer:
        """Run the handshake between a client session and the hub's, then attach the session as the endpoint
        does (``server.transport.ws``: a daemon learns its scenario and gets its queued orders).

        Raises:
            RemoteError: the hub refused the peer (unknown identity, revoked...).
        """
        hub = self.hub
        session = HubSession(
            hub.identity, secrets.token_bytes(32), secrets.token_bytes(32),
            max_frame=hub.settings.max_frame, max_skew=hub.settings.max_skew,
        )  # fmt: skip
        client = ClientSession(identity, role, secrets.token_bytes(32), max_frame=hub.settings.max_frame)
        auth = client.answer(session.challenge(new_id(), time.time()), new_id(), time.time())
        key = await self._enrolled_key(identity.id, role)
        try:
            authenticated = session.accept(auth, lambda _id, _role: key, time.time())
        except ProtocolError as exc:
            raise RemoteError(exc.code.value, exc.message, exc.details) from None
        peer = Peer(name, identity, role, client)
        peer.conn = Connection(cast(web.WebSocketResponse, peer.socket), session, authenticated, hub.id)
        peer.conn.send(self._welcome(session, role))
        hub.sessions.live.add(peer.conn)
        self.peers.append(peer)
        if role is Role.MASTER:
            hub.attach_master(peer.conn)
        else:
            machine = await stores.machines(hub).machine(peer.id)
            scenario = None if machine is None else await stores.scenarios(hub).scenario(machine.scenario_id)
            assert machine is not None and scenario is not None, "the machine's key is enrolled, so it is known"
            peer.conn.scenario_id, peer.conn.scenario_name = scenario.id, scenario.name
            peer.conn.machine_name = machine.name
            await hub.attach_daemon(peer.conn)
        await self.settle()
        return peer

    def _welcome(self, session: HubSession, role: Role) -> Welcome:
        settings = self.hub.settings
        return Welcome(
            session.session_id, settings.heartbeat_interval, settings.dead_after, settings.max_frame,
            {"hub_id": self.hub.id, "role": role.value},
        )  # fmt: skip

    async def _enrolled_key(self, client_id: str, role: Role) -> PublicKey | None:
        if role is Role.MASTER:
            master = await stores.masters(self.hub).master(client_id)
            return None if master is None else PublicKey.from_text(master.public_key)
        machine = await stores.machines(self.hub).machine(client_id)
        return None if machine is None else PublicKey.from_text(machine.public_key)

    async def disconnect(self, peer: Peer) -> None:
        """The peer went away: what the endpoint does when a socket ends."""
        self.hub.sessions.live.discard(peer.conn)
        await self.hub.detach(peer.conn)
        if not peer.conn.closed:
            await peer.conn.close()

    # talking to the hub
    async def request(self, peer: Peer, body: Body, *, timeout: float = WAIT) -> Response | Error:
        """Send ``body`` from ``peer``, sealed, through the hub's dispatch; the reply addressed to it, opened
        (some handlers answer later, from a task of their own: this waits up to ``timeout``)."""
        envelope = await self.tell(peer, body)
        reply = await self.wait_for(peer, Body, lambda e: e.reply_to == envelope.id, timeout=timeout)
        assert isinstance(reply, Response | Error), f"{body.TYPE.value} was answered with a {type(reply).__name__}"
        return reply

    async def ok(self, peer: Peer, body: Body, *, timeout: float = WAIT) -> dict[str, Any]:
        """The data of a request's RESPONSE (an ERROR fails the test, saying what it was)."""
        reply = await self.request(peer, body, timeout=timeout)
        assert isinstance(reply, Response), f"{body.TYPE.value} refused: {reply.code}: {reply.message}"
        return reply.data

    async def refused(self, peer: Peer, body: Body, *, timeout: float = WAIT) -> Error:
        reply = await self.request(peer, body, timeout=timeout)
        assert isinstance(reply, Error), f"{body.TYPE.value} was not refused: {reply.data}"
        return reply

    async def tell(self, peer: Peer, body: Body) -> Envelope:
        """Send ``body`` from ``peer`` without waiting for an answer (a daemon's reports get none)."""
        frame = peer.client.seal(Envelope(new_id(), peer.id, "hub", "", time.time(), body))
        envelope = peer.conn.session.open(frame, time.time())
        assert envelope.sender == peer.conn.id  # what the endpoint checks before dispatching
        await dispatch(self.hub, self.handlers, peer.conn, envelope)
        await self.settle()
        return envelope

    def sent(self, peer: Peer) -> list[Envelope]:
        """Every envelope the hub sent to ``peer`` so far (WELCOME first), opened by its session."""
        return list(peer.received)

    def bodies(self, peer: Peer, kind: type[B]) -> list[B]:
        """The bodies of that type the hub sent to ``peer``."""
        return [e.body for e in peer.received if isinstance(e.body, kind)]

    async def wait_for(
        self, peer: Peer, kind: type[B], match: Callable[[Envelope], bool] = lambda _: True, *, timeout: float = WAIT
    ) -> B:
        """The first body of that type sent to ``peer`` (among all, earlier ones included) that ``match``es."""
        deadline = time.monotonic() + timeout
        while True:
            for envelope in peer.received:
                if isinstance(envelope.body, kind) and match(envelope):
                    return envelope.body
            assert time.monotonic() < deadline, f"the hub sent {peer.name} no {kind.__name__} in {timeout} s"
            await asyncio.sleep(0.002)

    async def settle(self) -> None:
        """Let the connections' writer tasks (and what they woke) run."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def events(self, master: Peer, scenario: str) -> list[tuple[EventPayload, str]]:
        """The scenario's event log as its master reads it (subscribing from the start, until the head), each as
        its typed payload (``protocol.events``) with the machine it is about ("" for the scenario)."""
        seen = len(master.received)
        head = (await self.ok(master, EventsSubscribe(scenario, after=0)))["cursor"]
        if head:
            await self.wait_for(master, Event, lambda e: isinstance(e.body, Event) and e.body.cursor >= head)
        await self.ok(master, EventsUnsubscribe(scenario))
        streamed = [e.body for e in master.received[seen:] if isinstance(e.body, Event) and e.body.cursor <= head]
        return [(from_wire(event.kind, event.data), event.machine) for event in streamed]

    async def payloads(self, master: Peer, scenario: str, kind: type[EventPayload]) -> list[EventPayload]:
        return [payload for payload, _ in await self.events(master, scenario) if isinstance(payload, kind)]

    # what masters and machines sign (as clients/master/sdk.py and the daemon do, from protocol/ alone)
    async def create_scenario(
        self, master: Peer, name: str, machines: Sequence[tuple[str, str]] = (("db", "db"), ("web", "web"))
    ) -> dict[str, NewMachine]:
        """A scenario of ``(name, role)`` linux machines, each with a key pair made here and a certificate the
        master endorsed (as ``Master.create_scenario`` does)."""
        minted, wire = declared_machines(master, name, machines)
        await self.ok(master, ScenarioCreate(name, wire))
        return minted


def declared_machines(
    master: Peer, scenario: str, machines: Sequence[tuple[str, str]]
) -> tuple[dict[str, NewMachine], list[dict[str, Any]]]:
    """``(name, role)`` linux machines with key pairs made here, and how a master declares them to the hub:
    public keys and certificates it endorsed (as ``Master.create_scenario`` and ``Master.add_machines`` do)."""
    minted = {machine: NewMachine(machine, Identity.generate(os.urandom)) for machine, _ in machines}
    wire = []
    for machine, role in machines:
        key = minted[machine].identity.public
        certificate = MachineCertificate(scenario, machine, key.id, key.to_text(), "linux", role, {})
        wire.append({
            "name": machine, "os": "linux", "role": role, "public_key": key.to_text(),
            "report_key": report_key(minted[machine].identity).hex(), "labels": {},
            "certificate": certificate.endorsed(master.identity).to_wire(),
        })  # fmt: skip
    return minted, wire


def signed_order(
    master: Peer,
    scenario: str,
    machine_id: str,
    body: dict[str, Any] | None = None,
    *,
    kind: OrderKind = OrderKind.EXEC,
    ttl: float = 600.0,
    order_id: str = "",
) -> Order:
    """An order for one machine signed with the master's key (``Master.sign``)."""
    order = Order(order_id or uuid.uuid4().hex, scenario, machine_id, kind,
                  {"command": "true"} if body is None else body, time.time() + ttl, master.id)  # fmt: skip
    return order.signed(master.identity)


def signed_result(
    daemon: Peer,
    order_id: str,
    status: OrderState = OrderState.SUCCEEDED,
    *,
    exit_code: int | None = 0,
    stdout: bytes = b"",
    signer: Identity | None = None,
) -> SignedResult:
    """A machine's signed report of a finished order (the daemon's, by default signed with its own key)."""
    now = time.time()
    result = SignedResult(order_id, daemon.conn.scenario_name, daemon.id, status, exit_code, now, now, stdout=stdout)
    return result.signed(signer or daemon.identity)


def signed_value(
    writer: Peer, kind: ValueKind, scenario: str, name: str, value: bytes, target: str = ""
) -> dict[str, Any]:
    """A writer's signed statement of a kv value or a message (``SignedValue``), as its wire map."""
    writer_kind = WriterKind.MACHINE if writer.role is Role.DAEMON else WriterKind.MASTER
    statement = SignedValue(kind, scenario, name, value, writer.id, writer_kind, time.time(),
                            secrets.token_hex(16), target)  # fmt: skip
    return statement.signed(writer.identity).to_wire()
