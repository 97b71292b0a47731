"""What follows each scenario on this replica: masters' event subscriptions, listeners (the REST API's streams,
the dashboard) and waits on its news. The hub wakes them all when the scenario's log grows."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Protocol

from protocol.messages import Event, Output
from server.core.connection import Connection
from server.core.pump import EventPump
from server.core.waits import KeyWaiters
from server.store import EventRecord, EventStore, ScenarioRecord

log = logging.getLogger(__name__)

EVENT_PAGE = 500
# Subscriptions also look at the store this often without a wake-up (see EventPump).
EVENT_POLL = 5.0


class Subscription:
    """Streams one scenario's event log to one master, in order, from a cursor, then live (``EventPump``)."""

    def __init__(self, store: EventStore, conn: Connection, scenario: ScenarioRecord, after: int) -> None:
        self.conn = conn
        self.scenario = scenario
        self.pump = EventPump(store, scenario.id, after, page=EVENT_PAGE, idle=EVENT_POLL)
        self._task = asyncio.create_task(self._stream(), name=f"events-{scenario.name}-{conn.id}")

    @property
    def cursor(self) -> int:
        return self.pump.cursor

    def notify(self) -> None:
        self.pump.notify()

    def stop(self) -> None:
        self.pump.close()
        self._task.cancel()

    async def _stream(self) -> None:
        try:
            async for page in self.pump.pages():
                if self.conn.closed:
                    break
                for event in page.events:
                    self.conn.send(event_body(self.scenario.name, event), scenario=self.scenario.name)
                await self.conn.wait_writable()
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


class Followers:
    def __init__(self, waits: KeyWaiters) -> None:
        self.subscriptions: dict[str, dict[Connection, Subscription]] = defaultdict(dict)
        self.listeners: dict[str, set[ScenarioListener]] = defaultdict(set)
        self.waits = waits

    def follows(self, scenario_id: str) -> bool:
        return bool(
            self.subscriptions.get(scenario_id) or self.listeners.get(scenario_id) or self.waits.has(scenario_id)
        )

    def notify(self, scenario_id: str) -> None:
        for sub in self.subscriptions.get(scenario_id, {}).values():
            sub.notify()
        for listener in self.listeners.get(scenario_id, ()):
            listener.notify()
        self.waits.poke(scenario_id)

    def forward(self, scenario_id: str, scenario_name: str, output: Output) -> None:
        for conn in self.subscriptions.get(scenario_id, {}):
            conn.send(output, scenario=scenario_name)
        for listener in self.listeners.get(scenario_id, ()):
            listener.output(output)

    def stop_all(self) -> None:
        for subs in self.subscriptions.values():
            for sub in subs.values():
                sub.stop()
