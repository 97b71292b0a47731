"""The one pump for event streams: a scenario's log from a cursor, then live, page by page.

Every stream (a master's subscription, the dashboard's WebSocket, server-sent events) reads through it. It
rereads the store after every wake-up instead of pushing events from memory, so replay and live events can never
interleave out of order, and a reader that falls behind simply catches up. It also reads without a wake-up every
``idle`` seconds, in case a cross-replica notification was lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from server.store import EventRecord, EventStore


@dataclass(frozen=True)
class Page:
    events: list[EventRecord]
    quiet: bool  # nothing woke the pump for ``idle`` seconds before this read (time for a keep-alive)


class EventPump:
    def __init__(self, store: EventStore, scenario_id: str, after: int, *, page: int, idle: float) -> None:
        self.store = store
        self.scenario_id = scenario_id
        self.cursor = after
        self.page = page
        self.idle = idle
        self.closed = False
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """The log grew, or the reader has something else to do (its next page comes at once)."""
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def pages(self) -> AsyncIterator[Page]:
        """Pages of events after the cursor (empty after a wake-up with nothing new), until ``close``. The reader's
        work on a page (writing it, waiting for its peer to drain) finishes before the next read."""
        quiet = False
        while not self.closed:
            self._wake.clear()
            events = await self.store.events_after(self.scenario_id, self.cursor, self.page)
            if events:
                self.cursor = events[-1].cursor
            yield Page(events, quiet)
            quiet = False
            if len(events) < self.page and not self.closed:
                try:
                    await asyncio.wait_for(self._wake.wait(), self.idle)
                except TimeoutError:
                    quiet = True
