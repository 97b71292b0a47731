"""Plans in SQLite (``PlanStore``): the ``plans`` table (each record by name, ``server.store.codec``) and
``plan_leases``."""

from __future__ import annotations

from server.store.codec import decode_record, encode_record
from server.store.interfaces import PlanStore
from server.store.records import PlanRecord
from server.store.sqlite.base import SqliteBase


class SqlitePlans(SqliteBase, PlanStore):
    async def put_plan(self, plan: PlanRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO plans (id, scenario_id, data, done, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data, done = excluded.done",
                (plan.id, plan.scenario_id, encode_record(plan), int(plan.done), plan.created),
            )

    async def plan(self, plan_id: str) -> PlanRecord | None:
        row = self._read(lambda db: db.execute("SELECT data FROM plans WHERE id = ?", (plan_id,)).fetchone())
        return None if row is None else decode_record(PlanRecord, row[0])

    async def plans(self, scenario_id: str) -> list[PlanRecord]:
        query = "SELECT data FROM plans WHERE scenario_id = ? ORDER BY created, id"
        return [
            decode_record(PlanRecord, r[0]) for r in self._read(lambda db: db.execute(query, (scenario_id,)).fetchall())
        ]

    async def open_plans(self) -> list[PlanRecord]:
        query = "SELECT data FROM plans WHERE done = 0 ORDER BY created, id"
        return [decode_record(PlanRecord, r[0]) for r in self._read(lambda db: db.execute(query).fetchall())]

    async def claim_plan(self, plan_id: str, owner: str, now: float, ttl: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO plan_leases (plan_id, owner, expires) VALUES (?, ?, ?) ON CONFLICT (plan_id) "
                "DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
                "WHERE plan_leases.owner = excluded.owner OR plan_leases.expires <= ?",
                (plan_id, owner, now + ttl, now),
            )
            return cur.rowcount == 1

    async def release_plan(self, plan_id: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM plan_leases WHERE plan_id = ? AND owner = ?", (plan_id, owner))
