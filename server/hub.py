"""The hub's core: who is connected, the event log fan-out, and (re)delivery of queued orders.

Handlers for what masters and daemons send live in ``server.masters`` and ``server.daemons``; the WebSocket
endpoint in ``server.ws`` authenticates peers and feeds their messages here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from typing import Any

from protocol import ErrorCode, Identity
from protocol.messages import Deliver, Event, FileChunk, Output
from server.connection import Connection
from server.settings import HubSettings
from server.store import EventRecord, MachineStatus, ScenarioRecord, Store

log = logging.getLogger(__name__)

EVENT_PAGE = 500


class Subscription:
    """Streams one scenario's event log to one master, in order, from a cursor, then live.

    A pump rereads the store after every wake-up instead of pushing events straight to the socket, so replay and
    live events can never interleave out of order, and a subscriber that falls behind simply catches up.
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
                    await self._wake.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("event stream of %s to %s failed", self.scenario.name, self.conn.id)
            self.conn.abort()


def event_body(scenario_name: str, event: EventRecord) -> Event:
    return Event(scenario_name, event.cursor, event.kind, event.machine, event.ts, event.data)


class Hub:
    """State shared by every session of one hub process."""

    def __init__(self, settings: HubSettings, store: Store, identity: Identity) -> None:
        self.settings = settings
        self.store = store
        self.identity = identity
        self.daemons: dict[str, Connection] = {}
        self.masters: dict[str, set[Connection]] = defaultdict(set)
        self.subscriptions: dict[str, dict[Connection, Subscription]] = defaultdict(dict)
        self._delivery_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.started = time.time()

    @property
    def id(self) -> str:
        return self.identity.id

    # events
    async def emit(self, scenario_id: str, kind: str, machine: str, data: dict[str, Any]) -> EventRecord:
        """Append to the scenario's event log and wake its subscribers."""
        event = await self.store.append_event(scenario_id, kind, machine, data, time.time())
        for sub in self.subscriptions.get(scenario_id, {}).values():
            sub.notify()
        return event

    def subscribe(self, conn: Connection, scenario: ScenarioRecord, after: int) -> None:
        old = self.subscriptions[scenario.id].pop(conn, None)
        if old is not None:
            old.stop()
        self.subscriptions[scenario.id][conn] = Subscription(self, conn, scenario, after)

    def unsubscribe(self, conn: Connection, scenario_id: str) -> None:
        sub = self.subscriptions.get(scenario_id, {}).pop(conn, None)
        if sub is not None:
            sub.stop()

    def forward_output(self, scenario_id: str, scenario_name: str, output: Output) -> None:
        """Live output goes straight to current subscribers; the result keeps the durable copy."""
        for conn in self.subscriptions.get(scenario_id, {}):
            conn.send(output, scenario=scenario_name)

    # sessions
    def attach_master(self, conn: Connection) -> None:
        self.masters[conn.id].add(conn)

    async def attach_daemon(self, conn: Connection) -> None:
        """A machine connected: a newer session replaces an older one (the old socket is likely half-open)."""
        old = self.daemons.get(conn.id)
        self.daemons[conn.id] = conn
        if old is not None and old is not conn:
            await old.close(ErrorCode.SHUTTING_DOWN, "replaced by a newer session of the same machine")
        await self.store.update_machine(conn.id, status=MachineStatus.CONNECTED, last_seen=time.time())
        await self.emit(conn.scenario_id, "machine_connected", conn.machine_name, {"session": conn.session.session_id})
        await self.deliver_queued(conn.id)

    async def detach(self, conn: Connection) -> None:
        for scenario_id in list(self.subscriptions):
            self.unsubscribe(conn, scenario_id)
        self.masters.get(conn.id, set()).discard(conn)
        if self.daemons.get(conn.id) is conn:
            del self.daemons[conn.id]
            if await self.store.machine(conn.id) is not None:  # not when the scenario was just deleted
                await self.store.update_machine(conn.id, status=MachineStatus.OFFLINE, last_seen=time.time())
                await self.emit(conn.scenario_id, "machine_offline", conn.machine_name, {})

    async def revoke(self, machine_ids: list[str], reason: str) -> None:
        """Close the sessions of machines whose keys were just revoked."""
        for machine_id in machine_ids:
            conn = self.daemons.pop(machine_id, None)
            if conn is not None:
                await conn.close(ErrorCode.REVOKED, reason)

    # deliveries
    async def deliver_queued(self, machine_id: str) -> None:
        """Send the machine every queued order this session has not had yet, oldest first.

        At least once: an order stays queued until the daemon acknowledges it (after journaling it), so a
        session that dies in between gets it again on the next one, and the daemon de-duplicates by id.
        """
        async with self._delivery_locks[machine_id]:
            conn = self.daemons.get(machine_id)
            if conn is None:
                return
            for order in await self.store.queued_orders(machine_id):
                if conn.closed:
                    return
                if order.id in conn.delivered:
                    continue
                conn.send(Deliver(order.order), scenario=conn.scenario_name)
                for index, chunk in enumerate(await self.store.order_chunks(order.id)):
                    conn.send(FileChunk(order.id, index, chunk), scenario=conn.scenario_name)
                    await conn.wait_writable()
                conn.delivered.add(order.id)

    async def close_all(self) -> None:
        for subs in self.subscriptions.values():
            for sub in subs.values():
                sub.stop()
        conns = list(self.daemons.values()) + [c for s in self.masters.values() for c in s]
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.close(ErrorCode.SHUTTING_DOWN, "hub is shutting down")
