"""Scenarios in SQLite (``ScenarioStore``): the ``scenarios`` table; a scenario's rows go with it (ON DELETE
CASCADE)."""

from __future__ import annotations

import uuid

from server.store.interfaces import ScenarioStore
from server.store.records import MachineSpec, ScenarioRecord
from server.store.sqlite.base import SqliteBase, insert_machines


class SqliteScenarios(SqliteBase, ScenarioStore):
    async def create_scenario(self, owner: str, name: str, machines: list[MachineSpec], now: float) -> ScenarioRecord:
        record = ScenarioRecord(uuid.uuid4().hex, owner, name, now)
        with self._tx() as db:
            db.execute(
                "INSERT INTO scenarios (id, owner, name, created) VALUES (?, ?, ?, ?)",
                (record.id, owner, name, now),
            )
            insert_machines(db, record.id, machines)
        return record

    async def add_machines(self, scenario_id: str, machines: list[MachineSpec]) -> bool:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM scenarios WHERE id = ?", (scenario_id,)).fetchone() is None:
                return False
            insert_machines(db, scenario_id, machines)  # UNIQUE (scenario_id, name) and the key: StoreConflict
        return True

    async def scenarios(self, owner: str) -> list[ScenarioRecord]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT id, owner, name, created FROM scenarios WHERE owner = ? ORDER BY created, name",
                (owner,),
            ).fetchall()
        )
        return [ScenarioRecord(*row) for row in rows]

    async def scenario_by_name(self, owner: str, name: str) -> ScenarioRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT id, owner, name, created FROM scenarios WHERE owner = ? AND name = ?", (owner, name)
            ).fetchone()
        )
        return None if row is None else ScenarioRecord(*row)

    async def scenario(self, scenario_id: str) -> ScenarioRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT id, owner, name, created FROM scenarios WHERE id = ?", (scenario_id,)
            ).fetchone()
        )
        return None if row is None else ScenarioRecord(*row)

    async def delete_scenario(self, scenario_id: str) -> list[str]:
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM machines WHERE scenario_id = ?", (scenario_id,))]
            db.execute("DELETE FROM scenarios WHERE id = ?", (scenario_id,))
        return ids
