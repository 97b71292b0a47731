"""The hub's core: who is connected, the event log fan-out, and (re)delivery of queued orders.

Handlers for what masters and daemons send live in ``server.masters`` and ``server.daemons``; the WebSocket
endpoint in ``server.ws`` authenticates peers and feeds their messages here. With several replicas, whatever
concerns a peer held by another replica goes through the backplane (``server.backplane``): the hub acts on
its own sessions first, then publishes for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

from protocol import ErrorCode, Identity
from protocol.events import EventPayload, MachineConnected, MachineOffline
from protocol.messages import Cancel, Deliver, Event, FileChunk, Output, Reconnect
from server.backplane import Backplane, BackplaneUnavailable, LocalBackplane
from server.backplane.base import BROADCAST_CHANNEL, replica_channel, scenario_channel
from server.connection import Connection
from server.futures import KeyWaiters
from server.guard import AdmissionGuard, TokenBucket
from server.metrics import HubMetrics
from server.settings import HubSettings
from server.store import EventRecord, MachineStatus, OrderRecord, ScenarioRecord, Store, StoreError

log = logging.getLogger(__name__)

EVENT_PAGE = 500
# Pumps also look at the store this often without a wake-up, in case a cross-replica notification was lost.
EVENT_POLL = 5.0
DELIVERY_SWEEP = 5.0


class Subscription:
    """Streams one scenario's event log to one master, in order, from a cursor, then live.

    A pump rereads the store after every wake-up instead of pushing events straight to the socket, so replay
    and live events can never interleave out of order, and a subscriber that falls behind simply catches up.
    """

    def __init__(self, hub: Hub, conn: Connection, scenario: ScenarioRecord, after: int) -> None:
        self.hub = hub
        self.conn = conn
        self.scenario = scenario
        self.cursor = after
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._pump(), name=f"events-{scenario.name}-{conn.id}")

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._task.cancel()

    async def _pump(self) -> None:
        try:
            while not self.conn.closed:
                self._wake.clear()
                events = await self.hub.store.events_after(self.scenario.id, self.cursor, EVENT_PAGE)
                for event in events:
                    self.conn.send(event_body(self.scenario.name, event), scenario=self.scenario.name)
                    self.cursor = event.cursor
                await self.conn.wait_writable()
                if len(events) < EVENT_PAGE:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), EVENT_POLL)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event stream of %s to %s failed", self.scenario.name, self.conn.id)
            self.conn.abort()


def event_body(scenario_name: str, event: EventRecord) -> Event:
    return Event(scenario_name, event.cursor, event.kind, event.machine, event.ts, event.data)


class ScenarioListener(Protocol):
    """Something besides master sessions that follows a scenario live (the REST API's streams, the dashboard)."""

    def notify(self) -> None:
        """New events are in the store."""

    def output(self, output: Output) -> None:
        """A chunk of a running command's output (not stored: results keep the durable copy)."""


class Hub:
    """State shared by every session of one hub process (one replica)."""

    def __init__(
        self, settings: HubSettings, store: Store, identity: Identity, backplane: Backplane | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.identity = identity
        self.backplane = backplane or LocalBackplane()
        self.daemons: dict[str, Connection] = {}
        self.masters: dict[str, set[Connection]] = defaultdict(set)
        self.subscriptions: dict[str, dict[Connection, Subscription]] = defaultdict(dict)
        self.listeners: dict[str, set[ScenarioListener]] = defaultdict(set)
        self._delivery_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._peer_handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "deliver": self._peer_deliver,
            "cancel": self._peer_cancel,
            "revoke": self._peer_revoke,
            "event": self._peer_event,
            "output": self._peer_output,
            "mail": self._peer_mail,
            "drop_master": self._peer_drop_master,
            "cancel_plan": self._peer_cancel_plan,
        }
        self.started = time.time()
        self.draining = False
        self.guard = AdmissionGuard(settings.max_pending_handshakes, settings.handshake_failure_limit)
        self._sweeper: asyncio.Task[None] | None = None
        self.rest_budgets: dict[str, TokenBucket] = {}  # REST request budget per access token id
        self.sessions: set[Connection] = set()  # every authenticated session, attached or not: for heartbeats
        self._heartbeat: asyncio.Task[None] | None = None
        self._adopter: asyncio.Task[None] | None = None  # among replicas: takes over plans of replicas that died
        self.kv_waiters = KeyWaiters()
        self.plan_runners: dict[str, Any] = {}  # plan id -> server.plans.PlanRunner
        self.metrics = HubMetrics(self)
        self._background: set[asyncio.Task[None]] = set()

    @property
    def id(self) -> str:
        return self.identity.id

    @property
    def replica_id(self) -> str:
        return self.backplane.replica_id

    async def start(self) -> None:
        await self.backplane.start(self._on_peer_message, self._on_backplane_back)
        await self.backplane.subscribe(BROADCAST_CHANNEL)
        from server.plans import adopt_plans, resume_plans

        resumed = await resume_plans(self)
        if resumed:
            log.info("resumed %d plans that were running", resumed)
        self._heartbeat = asyncio.create_task(self._heartbeats(), name="heartbeats")
        if not isinstance(self.backplane, LocalBackplane):
            self._sweeper = asyncio.create_task(self._sweep(), name="delivery-sweep")
            self._adopter = asyncio.create_task(adopt_plans(self), name="plan-adoption")

    async def _heartbeats(self) -> None:
        """One loop beats every session, rather than a task per session (idle sessions are most of them; a task
        each costs memory for nothing). Large hubs yield to the loop every few hundred sessions."""
        interval, dead_after = self.settings.heartbeat_interval, self.settings.dead_after
        while True:
            await asyncio.sleep(interval)
            for count, conn in enumerate(list(self.sessions), 1):
                conn.beat(time.monotonic(), interval, dead_after)
                if count % 500 == 0:
                    await asyncio.sleep(0)

    async def _sweep(self) -> None:
        """Among replicas, a "deliver" notification can be lost (Redis blinked, the store failed mid-way): every
        so often each replica looks for queued orders of its own daemons, so such an order waits seconds, not
        until its machine reconnects."""
        while True:
            await asyncio.sleep(DELIVERY_SWEEP)
            for machine_id in list(self.daemons):
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
        self.backplane.publish(scenario_channel(scenario_id), {"kind": "event", "scenario": scenario_id})
        return event

    def _notify_local(self, scenario_id: str) -> None:
        for sub in self.subscriptions.get(scenario_id, {}).values():
            sub.notify()
        for listener in self.listeners.get(scenario_id, ()):
            listener.notify()
        self.kv_waiters.poke(scenario_id)

    def _followed(self, scenario_id: str) -> bool:
        """Whether anything on this replica follows the scenario (so its backplane channel is subscribed)."""
        return bool(
            self.subscriptions.get(scenario_id) or self.listeners.get(scenario_id) or self.kv_waiters.has(scenario_id)
        )

    def notify_mail(self, scenario_id: str, machine_ids: list[str]) -> None:
        """Wake the mailbox waits of these machines, here and on other replicas."""
        self.kv_waiters.poke_mail(scenario_id, machine_ids)
        if self.backplane.shared:
            self.backplane.publish(
                scenario_channel(scenario_id), {"kind": "mail", "scenario": scenario_id, "machines": machine_ids}
            )

    async def _peer_mail(self, message: dict[str, Any]) -> None:
        self.kv_waiters.poke_mail(message["scenario"], list(message["machines"]))

    async def watch_scenario(self, scenario_id: str) -> None:
        """Hear about this scenario's events from other replicas (while something here waits on them)."""
        if not self.subscriptions.get(scenario_id) and not self.listeners.get(scenario_id):
            await self.backplane.subscribe(scenario_channel(scenario_id))

    async def unwatch_scenario(self, scenario_id: str) -> None:
        if not self._followed(scenario_id):
            await self.backplane.unsubscribe(scenario_channel(scenario_id))

    async def listen(self, scenario_id: str, listener: ScenarioListener) -> None:
        if not self._followed(scenario_id):
            await self.backplane.subscribe(scenario_channel(scenario_id))
        self.listeners[scenario_id].add(listener)

    async def stop_listening(self, scenario_id: str, listener: ScenarioListener) -> None:
        listeners = self.listeners.get(scenario_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self.listeners[scenario_id]
        await self.unwatch_scenario(scenario_id)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run a request's later part (a long wait) without holding up its connection; errors are logged."""
        task = asyncio.create_task(work, name=name)
        self._background.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("%s failed: %s", name, finished.exception())

        task.add_done_callback(done)

    async def subscribe(self, conn: Connection, scenario: ScenarioRecord, after: int) -> None:
        subs = self.subscriptions[scenario.id]
        old = subs.pop(conn, None)
        if old is not None:
            old.stop()
        if not self._followed(scenario.id):
            await self.backplane.subscribe(scenario_channel(scenario.id))
        subs[conn] = Subscription(self, conn, scenario, after)

    async def unsubscribe(self, conn: Connection, scenario_id: str) -> None:
        subs = self.subscriptions.get(scenario_id)
        if subs is None:
            return
        sub = subs.pop(conn, None)
        if sub is not None:
            sub.stop()
        if not subs:
            del self.subscriptions[scenario_id]
            if not self._followed(scenario_id):
                await self.backplane.unsubscribe(scenario_channel(scenario_id))

    def forward_output(self, scenario_id: str, scenario_name: str, output: Output) -> None:
        """Live output goes straight to current subscribers; the result keeps the durable copy."""
        self._forward_local(scenario_id, scenario_name, output)
        if self.backplane.shared:
            self.backplane.publish(
                scenario_channel(scenario_id),
                {"kind": "output", "scenario": scenario_id, "name": scenario_name, "output": output.to_wire()},
            )

    def _forward_local(self, scenario_id: str, scenario_name: str, output: Output) -> None:
        for conn in self.subscriptions.get(scenario_id, {}):
            conn.send(output, scenario=scenario_name)
        for listener in self.listeners.get(scenario_id, ()):
            listener.output(output)

    # sessions
    def attach_master(self, conn: Connection) -> None:
        self.masters[conn.id].add(conn)

    async def attach_daemon(self, conn: Connection) -> None:
        """A machine connected: a newer session replaces an older one (the old socket is likely half-open)."""
        old = self.daemons.get(conn.id)
        self.daemons[conn.id] = conn
        if old is not None and old is not conn:
            await old.close(ErrorCode.SHUTTING_DOWN, "replaced by a newer session of the same machine")
        await self.backplane.claim(conn.id)
        await self.store.update_machine(conn.id, status=MachineStatus.CONNECTED, last_seen=time.time())
        await self.emit(conn.scenario_id, MachineConnected(replica=self.replica_id), conn.machine_name)
        await self.deliver_queued(conn.id)

    async def detach(self, conn: Connection) -> None:
        for scenario_id in list(self.subscriptions):
            await self.unsubscribe(conn, scenario_id)
        self.masters.get(conn.id, set()).discard(conn)
        if self.daemons.get(conn.id) is conn:
            del self.daemons[conn.id]
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
        if machine_id in self.daemons:
            return self.replica_id
        return await self.backplane.locate(machine_id)

    async def _tell_holder(self, machine_id: str, message: dict[str, Any]) -> None:
        replica = await self.backplane.locate(machine_id)
        if replica is not None and replica != self.replica_id:
            self.backplane.publish(replica_channel(replica), message)

    async def revoke(self, machine_ids: list[str], reason: str) -> None:
        """Close the sessions of machines whose keys were just revoked, wherever they are connected."""
        for machine_id in machine_ids:
            conn = self.daemons.pop(machine_id, None)
            if conn is not None:
                await conn.close(ErrorCode.REVOKED, reason)
            else:
                await self._tell_holder(machine_id, {"kind": "revoke", "machine": machine_id, "reason": reason})

    async def cancel_on_machine(self, machine_id: str, order_id: str, scenario_name: str) -> None:
        conn = self.daemons.get(machine_id)
        if conn is not None:
            conn.send(Cancel(order_id), scenario=scenario_name)
        else:
            await self._tell_holder(
                machine_id, {"kind": "cancel", "machine": machine_id, "order": order_id, "name": scenario_name}
            )

    # deliveries
    async def deliver_queued(self, machine_id: str, new: OrderRecord | None = None) -> None:
        """Send the machine every queued order its session has not had yet, oldest first.

        At least once: an order stays queued until the daemon acknowledges it (after journaling it), so a
        session that dies in between gets it again on the next one, and the daemon de-duplicates by id. A
        machine held by another replica is that replica's to serve: it is told to look.

        ``new``: the order just queued. A session that has had every older queued order gets only that one;
        rereading the whole queue per new order made a backlog of N orders cost N reads each (quadratic).
        """
        if machine_id not in self.daemons:
            await self._tell_holder(machine_id, {"kind": "deliver", "machine": machine_id})
            return
        async with self._delivery_locks[machine_id]:
            conn = self.daemons.get(machine_id)
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
    async def _on_peer_message(self, message: dict[str, Any]) -> None:
        handler = self._peer_handlers.get(str(message.get("kind")))
        if handler is None:
            log.warning("unknown backplane message kind %r", message.get("kind"))
            return
        await handler(message)

    async def _peer_deliver(self, message: dict[str, Any]) -> None:
        if message["machine"] in self.daemons:
            await self.deliver_queued(message["machine"])

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
        self.backplane.publish(BROADCAST_CHANNEL, {"kind": "drop_master", "master": record.id})
        return {"master": record.id, "name": name, "scenarios": [s.name for s in scenarios], "revoked": revoked}

    async def _drop_master_sessions(self, master_id: str) -> None:
        for conn in list(self.masters.pop(master_id, set())):
            await conn.close(ErrorCode.REVOKED, "this master was removed from the hub")

    async def _peer_drop_master(self, message: dict[str, Any]) -> None:
        await self._drop_master_sessions(message["master"])

    async def _peer_cancel_plan(self, message: dict[str, Any]) -> None:
        from server.plans import cancel_here

        await cancel_here(self, message["plan"])

    async def _peer_cancel(self, message: dict[str, Any]) -> None:
        conn = self.daemons.get(message["machine"])
        if conn is not None:
            conn.send(Cancel(message["order"]), scenario=message["name"])

    async def _peer_revoke(self, message: dict[str, Any]) -> None:
        conn = self.daemons.pop(message["machine"], None)
        if conn is not None:
            await conn.close(ErrorCode.REVOKED, message["reason"])

    async def _peer_event(self, message: dict[str, Any]) -> None:
        self._notify_local(message["scenario"])

    async def _peer_output(self, message: dict[str, Any]) -> None:
        raw = message["output"]
        output = Output(raw["order_id"], raw["stream"], raw["data"], raw.get("machine", ""))
        self._forward_local(message["scenario"], message["name"], output)

    async def _on_backplane_back(self) -> None:
        """Notifications may have been lost while the backplane was down: catch up on everything local."""
        for scenario_id in list(self.subscriptions):
            self._notify_local(scenario_id)
        for machine_id in list(self.daemons):
            await self.backplane.claim(machine_id)
            await self.deliver_queued(machine_id)

    # draining and rebalancing
    def ask_to_reconnect(self, conns: list[Connection], reason: str) -> None:
        """Tell daemons to reconnect, spread over ``drain_spread`` seconds so they do not all land at once."""
        for conn in conns:
            conn.send(Reconnect(after=random.uniform(0, self.settings.drain_spread), reason=reason))

    def rebalance(self, share: float) -> int:
        """Ask a random ``share`` (0-1) of this replica's daemons to reconnect, e.g. after a replica joined."""
        conns = list(self.daemons.values())
        chosen = random.sample(conns, round(max(0.0, min(1.0, share)) * len(conns)))
        self.ask_to_reconnect(chosen, "rebalancing load across hub replicas")
        return len(chosen)

    async def drain(self) -> None:
        """Stop taking sessions, move daemons away (through the load balancer), wait for them, then close.

        Orders delivered but not yet acknowledged stay queued in the shared store, so the replica a daemon
        reconnects to delivers them again; nothing in flight is lost by closing here.
        """
        if self.draining:
            return
        self.draining = True
        log.info("draining: asking %d daemons to reconnect elsewhere", len(self.daemons))
        self.ask_to_reconnect(list(self.daemons.values()), "hub replica is draining")
        deadline = time.monotonic() + self.settings.drain_timeout
        while self.daemons and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.daemons:
            log.warning("drain timeout: closing %d daemons that did not leave", len(self.daemons))
        await self.close_all()

    async def close_all(self) -> None:
        self.draining = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._adopter is not None:  # before the runners stop: it would start them again
            self._adopter.cancel()
        for runner in list(self.plan_runners.values()):  # stopped here; resumed from the store by the next start
            if runner.task is not None:
                runner.task.cancel()
        for subs in self.subscriptions.values():
            for sub in subs.values():
                sub.stop()
        conns = list(self.daemons.values()) + [c for s in self.masters.values() for c in s]
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close(ErrorCode.SHUTTING_DOWN, "hub is shutting down")
        await self.backplane.close()
