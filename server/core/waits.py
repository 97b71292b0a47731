"""Waits on a scenario's news: a request (a key wait, a mailbox read, a plan step waiting on a key) re-asks the
store whenever the scenario has new events here or on another replica, rather than polling it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
RECHECK = 5.0  # a waiter re-reads the store this often anyway, in case a wake-up was lost
Watch = Callable[[str], Awaitable[None]]
"""Start (or stop) hearing of a scenario's events from other replicas."""


class KeyWaiters:
    """The waits in progress on this replica, by scenario."""

    def __init__(self, watch: Watch, unwatch: Watch) -> None:
        self._watch, self._unwatch = watch, unwatch
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)
        # Mailbox waits, by scenario then machine: woken only by mail for that machine. Woken by every event of
        # the scenario instead, a broadcast to 1,000 waiting machines cost 1,000 store reads per event.
        self._mail: dict[str, dict[str, set[asyncio.Event]]] = defaultdict(lambda: defaultdict(set))

    def has(self, scenario_id: str) -> bool:
        return bool(self._waiting.get(scenario_id) or self._mail.get(scenario_id))

    def poke(self, scenario_id: str) -> None:
        for event in self._waiting.get(scenario_id, ()):
            event.set()

    def poke_mail(self, scenario_id: str, machine_ids: list[str]) -> None:
        waiting = self._mail.get(scenario_id)
        if not waiting:
            return
        for machine_id in machine_ids:
            for event in waiting.get(machine_id, ()):
                event.set()

    async def until(
        self,
        scenario_id: str,
        check: Callable[[], Awaitable[T | None]],
        timeout: float,
        *,
        mailbox: str = "",
    ) -> T | None:
        """``check()``'s first non-None answer, re-asked whenever the scenario has news (with ``mailbox``: whenever
        that machine has mail), or None after ``timeout``."""
        wake = asyncio.Event()
        first = not self.has(scenario_id)
        waiters = self._mail[scenario_id][mailbox] if mailbox else self._waiting[scenario_id]
        waiters.add(wake)
        if first:
            await self._watch(scenario_id)
        try:
            deadline = time.monotonic() + timeout
            while True:
                wake.clear()  # before reading: a set that lands after the read still wakes us
                value = await check()
                remaining = deadline - time.monotonic()
                if value is not None or remaining <= 0:
                    return value
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(remaining, RECHECK))
        finally:
            waiters.discard(wake)
            if mailbox and not waiters:
                del self._mail[scenario_id][mailbox]
                if not self._mail[scenario_id]:
                    del self._mail[scenario_id]
            if not mailbox and not waiters:
                del self._waiting[scenario_id]
            if not self.has(scenario_id):
                await self._unwatch(scenario_id)
