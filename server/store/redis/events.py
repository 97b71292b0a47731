"""Event logs on Redis (``EventStore``): one stream per scenario, ``P:{sc:S}:events``, its ids the cursors."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import EventStore
from server.store.records import EventRecord, StoreError
from server.store.redis.base import RedisBase, _number, _pack, _text, _unpack, lua


class RedisEvents(RedisBase, EventStore):
    _append_event = lua("append_event.lua")

    async def append_event(
        self, scenario_id: str, kind: str, machine: str, data: dict[str, Any], now: float
    ) -> EventRecord:
        with self._errors():
            cursor = await self._append_event(
                keys=[self._sc(scenario_id, "meta"), self._sc(scenario_id, "events")],
                args=[self.event_log_max, _number(now), kind, machine, _pack(data)],
            )
        if cursor is None:
            raise StoreError(f"scenario {scenario_id} does not exist (deleted?)")
        return EventRecord(scenario_id, int(cursor), float(now), kind, machine, data)

    async def events_after(self, scenario_id: str, cursor: int, limit: int) -> list[EventRecord]:
        if limit == 0:
            return []
        count = None if limit < 0 else limit  # as SQL's LIMIT: a negative one is no limit
        with self._errors():
            entries = await self._xrange(self._sc(scenario_id, "events"), f"{max(cursor, 0) + 1}-0", count)
        return [
            EventRecord(
                scenario_id,
                int(entry.partition(b"-")[0]),
                float(fields[b"ts"]),
                _text(fields[b"kind"]),
                _text(fields[b"machine"]),
                _unpack(fields[b"data"], {}),
            )
            for entry, fields in entries
        ]

    async def last_cursor(self, scenario_id: str) -> int:
        with self._errors():
            cursor = await self._hget(self._sc(scenario_id, "meta"), "cursor")
        return 0 if cursor is None else int(cursor)
