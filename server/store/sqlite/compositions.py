"""Compositions in SQLite (``CompositionStore``): the ``compositions`` table, deleted with its scenario."""

from __future__ import annotations

from server.store.interfaces import CompositionStore
from server.store.records import CompositionRecord
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteCompositions(SqliteBase, CompositionStore):
    async def put_composition(self, record: CompositionRecord) -> bool:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM scenarios WHERE id = ?", (record.scenario_id,)).fetchone() is None:
                return False
            db.execute(
                "INSERT OR REPLACE INTO compositions (id, scenario_id, composition, created) VALUES (?, ?, ?, ?)",
                (record.id, record.scenario_id, _pack(record.composition), record.created),
            )
        return True

    async def compositions(self, scenario_id: str) -> list[CompositionRecord]:
        query = "SELECT id, composition, created FROM compositions WHERE scenario_id = ? ORDER BY created, id"
        rows = self._read(lambda db: db.execute(query, (scenario_id,)).fetchall())
        return [CompositionRecord(row[0], scenario_id, _unpack(row[1], {}), row[2]) for row in rows]

    async def remove_composition(self, scenario_id: str, composition_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM compositions WHERE scenario_id = ? AND id = ?", (scenario_id, composition_id))
        return cur.rowcount > 0
