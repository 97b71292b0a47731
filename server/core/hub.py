"""The hub's core: who is connected, the event log fan-out, and (re)delivery of queued orders.

Features (``server/app.py`` lists them) handle what masters and daemons send (``server.core.dispatch``); the
WebSocket endpoint in ``server.transport.ws`` authenticates peers and feeds their messages to them. With
several replicas, whatever concerns a peer held by another replica goes through the backplane
(``server.backplane``): the hub acts on its own sessions first, then publishes for the others. The hub imports
no feature: features reach it through ``Extension``s (their backplane messages, start and stop hooks, event hooks)
and keep their state in ``state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from protocol import ErrorCode, Identity
from protocol.events import EventPayload, MachineConnected, MachineOffline
from protocol.messages import Cancel, Deliver, FileChunk, Output, Reconnect
from server.backplane import Backplane, BackplaneUnavailable, LocalBackplane
from server.backplane.base import BROADCAST_CHANNEL, replica_channel, scenario_channel
from server.core.connection import Connection
from server.core.followers import Followers, ScenarioListener, Subscription
from server.core.metrics import HubMetrics
from server.core.peers import (
    CancelOrder,
    DeliverQueued,
    DropMaster,
    LiveOutput,
    NewEvents,
    NewMail,
    PeerMessage,
    PeerRoute,
    PeerTable,
    RevokeMachine,
)
from server.core.sessions import Sessions
from server.core.state import FeatureState
from server.core.waits import KeyWaiters
from server.guard import AdmissionGuard
from server.settings import HubSettings
from server.store import EventRecord, MachineStatus, OrderRecord, ScenarioRecord, Store, StoreError

log = logging.getLogger(__name__)

DELIVERY_SWEEP = 5.0
T = TypeVar("T")


class Extension(Protocol):
    """What the hub knows of a feature (``server.core.feature.Feature`` is one)."""

    @property
    def peer_handlers(self) -> PeerTable[Hub]: ...

    @property
    def on_start(self) -> Callable[[Hub], Awaitable[None]]: ...

    @property
    def on_stop(self) -> Callable[[Hub], Awaitable[None]]: ...

    @property
    def on_events(self) -> Callable[[Hub, str], None]: ...

    @property
    def follows(self) -> Callable[[Hub, str], bool]: ...

    @property
    def on_member(self) -> Callable[[Hub, str, str], Awaitable[None]]: ...


@dataclass
class Lifecycle:
    started: float = field(default_factory=time.time)
    draining: bool = False
    loops: list[asyncio.Task[None]] = field(default_factory=list)  # the hub's own, cancelled at close
    background: set[asyncio.Task[None]] = field(default_factory=set)  # later parts of requests (spawn)


class Hub:
    """State shared by every session of one hub process (one replica)."""

    def __init__(
        self,
        settings: HubSettings,
        store: Store,
        identity: Identity,
        backplane: Backplane | None = None,
        extensions: Sequence[Extension] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.identity = identity
        self.backplane = backplane or LocalBackplane()
        self.sessions = Sessions(AdmissionGuard(settings.max_pending_handshakes, settings.handshake_failure_limit))
        self.followers = Followers(KeyWaiters(self.watch_scenario, self.unwatch_scenario))
        self.state = FeatureState()  # each feature's own, under its typed keys
        self.extensions = tuple(extensions)
        # Fails here, at construction, if two parts of the hub claim one kind (rather than the first silently winning).
        CORE_PEERS.merged(*(extension.peer_handlers for extension in self.extensions))
        self.life = Lifecycle()
        self.metrics = HubMetrics()
        self._count_sessions()

    def _count_sessions(self) -> None:
        sessions, metrics = self.sessions, self.metrics
        metrics.gauge(
            "crc_connections", "Sessions open on this replica",
            lambda: {"daemon": len(sessions.daemons), "master": sum(1 for _ in sessions.master_connections())},
            label="kind",
        )  # fmt: skip
        metrics.gauge(
            "crc_outbox_frames", "Frames waiting to be written to peers",
            lambda: sum(c.outbox_size for c in sessions.peers()),
        )  # fmt: skip
        metrics.gauge("crc_backplane_up", "1 when the backplane is reachable", lambda: int(self.backplane.available))
        metrics.gauge(
            "crc_upload_bytes", "File contents held for orders not submitted yet",
            lambda: sum(c.uploads.size for c in sessions.master_connections()),
        )  # fmt: skip

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def replica_id(self) -> str:
        return self.backplane.replica_id

    async def start(self) -> None:
        await self.backplane.start(self._on_peer_message, self._on_backplane_back)
        await self.backplane.subscribe(BROADCAST_CHANNEL)
        for extension in self.extensions:
            await extension.on_start(self)
        self.life.loops.append(asyncio.create_task(self._heartbeats(), name="heartbeats"))
        if not isinstance(self.backplane, LocalBackplane):
            self.life.loops.append(asyncio.create_task(self._sweep(), name="delivery-sweep"))

    def loop(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A feature's loop for the hub's lifetime (cancelled by ``close_all`` before the extensions stop)."""
        self.life.loops.append(asyncio.create_task(work, name=name))

    async def _heartbeats(self) -> None:
        """One loop beats every session, rather than a task per session (idle sessions are most of them; a task
        each costs memory for nothing). Large hubs yield to the loop every few hundred sessions."""
        interval, dead_after = self.settings.heartbeat_interval, self.settings.dead_after
        while True:
            await asyncio.sleep(interval)
            for count, conn in enumerate(list(self.sessions.live), 1):
                conn.beat(time.monotonic(), interval, dead_after)
                if count % 500 == 0:
                    await asyncio.sleep(0)

    async def _sweep(self) -> None:
        """Among replicas, a "deliver" notification can be lost (Redis blinked, the store failed mid-way): every
        so often each replica looks for queued orders of its own daemons, so such an order waits seconds, not
        until its machine reconnects."""
        while True:
            await asyncio.sleep(DELIVERY_SWEEP)
            for machine_id in list(self.sessions.daemons):
                try:
                    await self.deliver_queued(machine_id)
                except (StoreError, BackplaneUnavailable) as exc:
                    log.warning("delivery sweep stopped early: %s", exc)
                    break

    # events
    async def emit(self, scenario_id: str, payload: EventPayload, machine: str) -> EventRecord:
        """Append to the scenario's event log and wake its subscribers, here and on other replicas. ``machine``: the
        machine the event is about, or "" for one about the scenario."""
        event = await self.store.append_event(scenario_id, payload.KIND.value, machine, payload.to_wire(), time.time())
        self._notify_local(scenario_id)
        self.backplane.publish(scenario_channel(scenario_id), NewEvents(scenario_id))
        return event

    def _notify_local(self, scenario_id: str) -> None:
        self.followers.notify(scenario_id)
        for extension in self.extensions:
            extension.on_events(self, scenario_id)

    def _followed(self, scenario_id: str) -> bool:
        """Whether anything on this replica follows the scenario (so its backplane channel is subscribed)."""
        return self.followers.follows(scenario_id) or any(e.follows(self, scenario_id) for e in self.extensions)

    async def wait_until(
        self, scenario_id: str, check: Callable[[], Awaitable[T | None]], timeout: float, *, mailbox: str = ""
    ) -> T | None:
        """``check()``'s first non-None answer, re-asked whenever the scenario has news (with ``mailbox``: whenever
        that machine has mail), or None after ``timeout``."""
        return await self.followers.waits.until(scenario_id, check, timeout, mailbox=mailbox)

    def notify_mail(self, scenario_id: str, machine_ids: list[str]) -> None:
        """Wake the mailbox waits of these machines, here and on other replicas."""
        self.followers.waits.poke_mail(scenario_id, machine_ids)
        if self.backplane.shared:
            self.backplane.publish(scenario_channel(scenario_id), NewMail(scenario_id, list(machine_ids)))

    async def _peer_mail(self, message: NewMail) -> None:
        self.followers.waits.poke_mail(message.scenario, list(message.machines))

    async def watch_scenario(self, scenario_id: str) -> None:
        """Hear about this scenario's events from other replicas (while something here waits on them)."""
        if not self.followers.subscriptions.get(scenario_id) and not self.followers.listeners.get(scenario_id):
            await self.backplane.subscribe(scenario_channel(scenario_id))

    async def unwatch_scenario(self, scenario_id: str) -> None:
        if not self._followed(scenario_id):
            await self.backplane.unsubscribe(scenario_channel(scenario_id))

    async def listen(self, scenario_id: str, listener: ScenarioListener) -> None:
        if not self._followed(scenario_id):
            await self.backplane.subscribe(scenario_channel(scenario_id))
        self.followers.listeners[scenario_id].add(listener)

    async def stop_listening(self, scenario_id: str, listener: ScenarioListener) -> None:
        listeners = self.followers.listeners.get(scenario_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self.followers.listeners[scenario_id]
        await self.unwatch_scenario(scenario_id)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a request's later part (a long wait) without holding up its connection; errors are logged."""
        task = asyncio.create_task(work, name=name)
        self.life.background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self.life.background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s failed: %s", name, finished.exception())

        task.add_done_callback(done)

    async def subscribe(self, conn: Connection, scenario: ScenarioRecord, after: int) -> None:
        subs = self.followers.subscriptions[scenario.id]
        old = subs.pop(conn, None)
        if old is not None:
            old.stop()
        if not self._followed(scenario.id):
            await self.backplane.subscribe(scenario_channel(scenario.id))
        subs[conn] = Subscription(self.store, conn, scenario, after)

    async def unsubscribe(self, conn: Connection, scenario_id: str) -> None:
        subs = self.followers.subscriptions.get(scenario_id)
        if subs is None:
            return
        sub = subs.pop(conn, None)
        if sub is not None:
            sub.stop()
        if not subs:
            del self.followers.subscriptions[scenario_id]
            if not self._followed(scenario_id):
                await self.backplane.unsubscribe(scenario_channel(scenario_id))

    async def unsubscribe_all(self, scenario_id: str) -> None:
        for watcher in list(self.followers.subscriptions.get(scenario_id, {})):
            await self.unsubscribe(watcher, scenario_id)

    def forward_output(self, scenario_id: str, scenario_name: str, output: Output) -> None:
        """Live output goes straight to current subscribers; the result keeps the durable copy."""
        self.followers.forward(scenario_id, scenario_name, output)
        if self.backplane.shared:
            self.backplane.publish(scenario_channel(scenario_id), LiveOutput(scenario_id, scenario_name, output))

    # sessions
    def attach_master(self, conn: Connection) -> None:
        self.sessions.masters[conn.id].add(conn)

    async def attach_daemon(self, conn: Connection) -> None:
        """A machine connected: a newer session replaces an older one (the old socket is likely half-open)."""
        old = self.sessions.daemons.get(conn.id)
        self.sessions.daemons[conn.id] = conn
        if old is not None and old is not conn:
            await old.close(ErrorCode.SHUTTING_DOWN, "replaced by a newer session of the same machine")
        await self.backplane.claim(conn.id)
        await self.store.update_machine(conn.id, status=MachineStatus.CONNECTED, last_seen=time.time())
        await self.emit(conn.scenario_id, MachineConnected(replica=self.replica_id), conn.machine_name)
        await self.member_changed(conn.scenario_id, conn.id)

    async def member_changed(self, scenario_id: str, machine_id: str) -> None:
        """A machine connected or was certified: each feature queues what it owes it (standing orders), then its
        queue is delivered. A feature that fails is logged and skipped: it tries again at the next connect."""
        for extension in self.extensions:
            try:
                await extension.on_member(self, scenario_id, machine_id)
            except (StoreError, BackplaneUnavailable) as exc:
                log.warning("could not queue standing orders for machine %s: %s", machine_id, exc)
        await self.deliver_queued(machine_id)

    async def detach(self, conn: Connection) -> None:
        for scenario_id in list(self.followers.subscriptions):
            await self.unsubscribe(conn, scenario_id)
        self.sessions.masters.get(conn.id, set()).discard(conn)
        if self.sessions.daemons.get(conn.id) is conn:
            del self.sessions.daemons[conn.id]
            await self.backplane.release(conn.id)
            try:
                moved = await self.backplane.locate(conn.id)
                # Not when the scenario was just deleted, nor when the machine already reconnected elsewhere.
                if moved is None and await self.store.machine(conn.id) is not None:
                    await self.store.update_machine(conn.id, status=MachineStatus.OFFLINE, last_seen=time.time())
                    await self.emit(conn.scenario_id, MachineOffline(), conn.machine_name)
            except (StoreError, BackplaneUnavailable) as exc:
                # Shown offline anyway: its presence key expires, and status reads check presence.
                log.warning("could not record %s going offline: %s", conn.machine_name, exc)

    async def locate(self, machine_id: str) -> str | None:
        """The replica holding the machine's session, None when it is offline."""
        if machine_id in self.sessions.daemons:
            return self.replica_id
        return await self.backplane.locate(machine_id)

    async def _tell_holder(self, machine_id: str, message: PeerMessage) -> None:
        replica = await self.backplane.locate(machine_id)
        if replica is not None and replica != self.replica_id:
            self.backplane.publish(replica_channel(replica), message)

    async def revoke(self, machine_ids: list[str], reason: str) -> None:
        """Close the sessions of machines whose keys were just revoked, wherever they are connected."""
        for machine_id in machine_ids:
            conn = self.sessions.daemons.pop(machine_id, None)
            if conn is not None:
                await conn.close(ErrorCode.REVOKED, reason)
            else:
                await self._tell_holder(machine_id, RevokeMachine(machine_id, reason))

    async def cancel_on_machine(self, machine_id: str, order_id: str, scenario_name: str) -> None:
        conn = self.sessions.daemons.get(machine_id)
        if conn is not None:
            conn.send(Cancel(order_id), scenario=scenario_name)
        else:
            await self._tell_holder(machine_id, CancelOrder(machine_id, order_id, scenario_name))

    # deliveries
    async def deliver_queued(self, machine_id: str, new: OrderRecord | None = None) -> None:
        """Send the machine every queued order its session has not had yet, oldest first.

        At least once: an order stays queued until the daemon acknowledges it (after journaling it), so a
        session that dies in between gets it again on the next one, and the daemon de-duplicates by id. A
        machine held by another replica is that replica's to serve: it is told to look.

        ``new``: the order just queued. A session that has had every older queued order gets only that one;
        rereading the whole queue per new order made a backlog of N orders cost N reads each (quadratic).
        """
        if machine_id not in self.sessions.daemons:
            await self._tell_holder(machine_id, DeliverQueued(machine_id))
            return
        async with self.sessions.delivery_locks[machine_id]:
            conn = self.sessions.daemons.get(machine_id)
            if conn is None:
                return
            orders = [new] if new is not None and conn.caught_up else await self.store.queued_orders(machine_id)
            for order in orders:
                if conn.closed:
                    return
                if order.id in conn.delivered:
                    continue
                conn.send(Deliver(order.order), scenario=conn.scenario_name)
                for index, chunk in enumerate(await self.store.order_chunks(order.id)):
                    conn.send(FileChunk(order.id, index, chunk), scenario=conn.scenario_name)
                    await conn.wait_writable()
                conn.delivered.add(order.id)
            conn.caught_up = True

    # messages from other replicas
    async def _on_peer_message(self, message: PeerMessage) -> None:
        """A message from another replica (the backplane decoded and checked it): to the handler of its kind."""
        route = self._peer_route(message)
        if route is None:
            log.warning("no handler here for backplane messages of kind %s", message.KIND.value)
            return
        await route.handler(self, message)

    def _peer_route(self, message: PeerMessage) -> PeerRoute[Hub] | None:
        tables = (CORE_PEERS, *(extension.peer_handlers for extension in self.extensions))
        return next((r for r in (t.route(message.KIND) for t in tables) if r is not None), None)

    async def _peer_deliver(self, message: DeliverQueued) -> None:
        if message.machine in self.sessions.daemons:
            await self.deliver_queued(message.machine)

    async def remove_master(self, name: str) -> dict[str, Any] | None:
        """Remove a master: delete its scenarios (revoking their machines' keys), forget its key, and close its
        sessions on every replica. None if no master has that name."""
        record = await self.store.master_by_name(name)
        if record is None:
            return None
        revoked: list[str] = []
        scenarios = await self.store.scenarios(record.id)
        for scenario in scenarios:
            machine_ids = await self.store.delete_scenario(scenario.id)
            await self.revoke(machine_ids, f"scenario {scenario.name!r} was deleted: its master was removed")
            revoked += machine_ids
        await self.store.remove_master(name)
        await self._drop_master_sessions(record.id)
        self.backplane.publish(BROADCAST_CHANNEL, DropMaster(record.id))
        return {"master": record.id, "name": name, "scenarios": [s.name for s in scenarios], "revoked": revoked}

    async def _drop_master_sessions(self, master_id: str) -> None:
        for conn in list(self.sessions.masters.pop(master_id, set())):
            await conn.close(ErrorCode.REVOKED, "this master was removed from the hub")

    async def _peer_drop_master(self, message: DropMaster) -> None:
        await self._drop_master_sessions(message.master)

    async def _peer_cancel(self, message: CancelOrder) -> None:
        conn = self.sessions.daemons.get(message.machine)
        if conn is not None:
            conn.send(Cancel(message.order), scenario=message.name)

    async def _peer_revoke(self, message: RevokeMachine) -> None:
        conn = self.sessions.daemons.pop(message.machine, None)
        if conn is not None:
            await conn.close(ErrorCode.REVOKED, message.reason)

    async def _peer_event(self, message: NewEvents) -> None:
        self._notify_local(message.scenario)

    async def _peer_output(self, message: LiveOutput) -> None:
        self.followers.forward(message.scenario, message.name, message.output)

    async def _on_backplane_back(self) -> None:
        """Notifications may have been lost while the backplane was down: catch up on everything local."""
        for scenario_id in list(self.followers.subscriptions):
            self._notify_local(scenario_id)
        for machine_id in list(self.sessions.daemons):
            await self.backplane.claim(machine_id)
            await self.deliver_queued(machine_id)

    # draining and rebalancing
    def ask_to_reconnect(self, conns: list[Connection], reason: str) -> None:
        """Tell daemons to reconnect, spread over ``drain_spread`` seconds so they do not all land at once."""
        for conn in conns:
            conn.send(Reconnect(after=random.uniform(0, self.settings.drain_spread), reason=reason))

    def rebalance(self, share: float) -> int:
        """Ask a random ``share`` (0-1) of this replica's daemons to reconnect, e.g. after a replica joined."""
        conns = list(self.sessions.daemons.values())
        chosen = random.sample(conns, round(max(0.0, min(1.0, share)) * len(conns)))
        self.ask_to_reconnect(chosen, "rebalancing load across hub replicas")
        return len(chosen)

    async def drain(self) -> None:
        """Stop taking sessions, move daemons away (through the load balancer), wait for them, then close.

        Orders delivered but not yet acknowledged stay queued in the shared store, so the replica a daemon
        reconnects to delivers them again; nothing in flight is lost by closing here.
        """
        if self.life.draining:
            return
        self.life.draining = True
        daemons = self.sessions.daemons
        log.info("draining: asking %d daemons to reconnect elsewhere", len(daemons))
        self.ask_to_reconnect(list(daemons.values()), "hub replica is draining")
        deadline = time.monotonic() + self.settings.drain_timeout
        while daemons and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if daemons:
            log.warning("drain timeout: closing %d daemons that did not leave", len(daemons))
        await self.close_all()

    async def close_all(self) -> None:
        self.life.draining = True
        for task in self.life.loops:  # the features' first (plan adoption would start runners again)
            task.cancel()
        for extension in self.extensions:
            await extension.on_stop(self)
        self.followers.stop_all()
        for conn in list(self.sessions.peers()):
            with contextlib.suppress(Exception):
                await conn.close(ErrorCode.SHUTTING_DOWN, "hub is shutting down")
        await self.backplane.close()


# The kinds the core handles itself; features handle theirs (``Feature.peer_handlers``).
CORE_PEERS: PeerTable[Hub] = PeerTable()
CORE_PEERS.add(DeliverQueued, Hub._peer_deliver)
CORE_PEERS.add(CancelOrder, Hub._peer_cancel)
CORE_PEERS.add(RevokeMachine, Hub._peer_revoke)
CORE_PEERS.add(NewEvents, Hub._peer_event)
CORE_PEERS.add(LiveOutput, Hub._peer_output)
CORE_PEERS.add(NewMail, Hub._peer_mail)
CORE_PEERS.add(DropMaster, Hub._peer_drop_master)
