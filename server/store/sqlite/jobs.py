"""Stored jobs in SQLite (``JobStore``): the ``jobs`` table, one row per owner and name."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import JobStore
from server.store.records import JobRecord
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteJobs(SqliteBase, JobStore):
    _JOB_COLUMNS = "owner, name, shell, script, created, updated, version, statement, signature"

    @staticmethod
    def _job(row: tuple[Any, ...]) -> JobRecord:
        return JobRecord(
            owner=row[0], name=row[1], shell=row[2], script=row[3], created=row[4], updated=row[5], version=row[6],
            statement=_unpack(row[7], None), signature=bytes(row[8] or b""),
        )  # fmt: skip

    async def put_job(
        self,
        owner: str,
        name: str,
        shell: str,
        script: str,
        now: float,
        *,
        version: int | None = None,
        statement: dict[str, Any] | None = None,
        signature: bytes = b"",
    ) -> JobRecord:
        packed = None if statement is None else _pack(statement)
        with self._tx() as db:
            db.execute(
                f"INSERT INTO jobs ({self._JOB_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, COALESCE(?, 1), ?, ?) "
                "ON CONFLICT (owner, name) DO UPDATE SET shell = excluded.shell, script = excluded.script, "
                "updated = excluded.updated, version = COALESCE(?, version + 1), statement = excluded.statement, "
                "signature = excluded.signature",
                (owner, name, shell, script, now, now, version, packed, signature, version),
            )
        job = await self.job(owner, name)
        assert job is not None
        return job

    async def job(self, owner: str, name: str) -> JobRecord | None:
        query = f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE owner = ? AND name = ?"
        row = self._read(lambda db: db.execute(query, (owner, name)).fetchone())
        return None if row is None else self._job(row)

    async def jobs(self, owner: str) -> list[JobRecord]:
        query = f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE owner = ? ORDER BY name"
        return [self._job(row) for row in self._read(lambda db: db.execute(query, (owner,)).fetchall())]

    async def delete_job(self, owner: str, name: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM jobs WHERE owner = ? AND name = ?", (owner, name)).rowcount == 1
