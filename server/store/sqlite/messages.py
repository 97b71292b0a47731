"""Scenario messages in SQLite (``MessageStore``): the ``messages`` table, its ``seq`` ordering each mailbox."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import MessageStore
from server.store.records import MessageRecord
from server.store.sqlite.base import SqliteBase


class SqliteMessages(SqliteBase, MessageStore):
    async def post_message(
        self, scenario_id: str, machine_ids: list[str], topic: str, sender: str, data: bytes, now: float
    ) -> None:
        with self._tx() as db:
            db.executemany(
                "INSERT INTO messages (scenario_id, machine_id, topic, sender, data, ts) VALUES (?, ?, ?, ?, ?, ?)",
                [(scenario_id, m, topic, sender, data, now) for m in machine_ids],
            )

    async def messages_after(self, machine_id: str, after: int, topic: str, limit: int) -> list[MessageRecord]:
        query = "SELECT seq, topic, sender, data, ts FROM messages WHERE machine_id = ? AND seq > ?"
        params: list[Any] = [machine_id, after]
        if topic:
            query += " AND topic = ?"
            params.append(topic)
        query += " ORDER BY seq LIMIT ?"
        rows = self._read(lambda db: db.execute(query, (*params, limit)).fetchall())
        return [MessageRecord(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in rows]
