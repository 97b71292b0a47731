"""Futures' values and boot-report replay memory in SQLite (``KvStore``, ``BootReportStore``): rows with an
expiry, compared with the ``now`` given."""

from __future__ import annotations

from server.store.interfaces import BootReportStore, KvStore
from server.store.sqlite.base import SqliteBase


class SqliteKv(SqliteBase, KvStore, BootReportStore):
    async def kv_set(self, scenario_id: str, key: str, value: bytes, ttl: float | None, now: float) -> None:
        expires = None if ttl is None else now + ttl
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv (scenario_id, key, value, expires) VALUES (?, ?, ?, ?) ON CONFLICT (scenario_id, key) "
                "DO UPDATE SET value = excluded.value, expires = excluded.expires",
                (scenario_id, key, value, expires),
            )

    async def kv_get(self, scenario_id: str, key: str, now: float) -> bytes | None:
        query = "SELECT value, expires FROM kv WHERE scenario_id = ? AND key = ?"
        row = self._read(lambda db: db.execute(query, (scenario_id, key)).fetchone())
        if row is None or (row[1] is not None and row[1] <= now):
            return None
        return bytes(row[0])

    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM boot_reports_seen WHERE expires <= ?", (now,))
            cur = db.execute(
                "INSERT OR IGNORE INTO boot_reports_seen (machine_id, signature, expires) VALUES (?, ?, ?)",
                (machine_id, signature, expires),
            )
            return cur.rowcount == 1
