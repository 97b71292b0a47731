"""Event logs in SQLite (``EventStore``): the ``events`` table and each scenario's ``last_cursor``."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import EventStore
from server.store.records import EventRecord, StoreError
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteEvents(SqliteBase, EventStore):
    async def append_event(
        self, scenario_id: str, kind: str, machine: str, data: dict[str, Any], now: float
    ) -> EventRecord:
        with self._tx() as db:
            row = db.execute(
                "UPDATE scenarios SET last_cursor = last_cursor + 1 WHERE id = ? RETURNING last_cursor",
                (scenario_id,),
            ).fetchone()
            if row is None:
                raise StoreError(f"scenario {scenario_id} does not exist (deleted?)")
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                (scenario_id, row[0], now, kind, machine, _pack(data)),
            )
        return EventRecord(scenario_id, row[0], now, kind, machine, data)

    async def events_after(self, scenario_id: str, cursor: int, limit: int) -> list[EventRecord]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT scenario_id, cursor, ts, kind, machine, data FROM events "
                "WHERE scenario_id = ? AND cursor > ? ORDER BY cursor LIMIT ?",
                (scenario_id, cursor, limit),
            ).fetchall()
        )
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], _unpack(r[5], {})) for r in rows]

    async def last_cursor(self, scenario_id: str) -> int:
        row = self._read(
            lambda db: db.execute("SELECT last_cursor FROM scenarios WHERE id = ?", (scenario_id,)).fetchone()
        )
        return 0 if row is None else int(row[0])
