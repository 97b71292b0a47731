"""Enrollment tokens in SQLite (``EnrollmentStore``): the ``enrollments`` table; a join checks the token and adds
its machine in one transaction, so the uses hold however many join at once (they share the one database)."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import EnrollmentStore
from server.store.records import EnrollmentRecord, EnrollOutcome, MachineSpec
from server.store.sqlite.base import SqliteBase, _pack, _unpack, insert_machines

_COLUMNS = "id, scenario_id, claims, signature, uses, expires, created, revoked, registrations"


def _record(row: Any) -> EnrollmentRecord:
    return EnrollmentRecord(row[0], row[1], _unpack(row[2], {}), bytes(row[3]), row[4], row[5], row[6], bool(row[7]),
                            _unpack(row[8], []))  # fmt: skip


class SqliteEnrollments(SqliteBase, EnrollmentStore):
    async def put_enrollment(self, record: EnrollmentRecord) -> bool:
        with self._tx() as db:
            if db.execute("SELECT 1 FROM scenarios WHERE id = ?", (record.scenario_id,)).fetchone() is None:
                return False
            db.execute(
                f"INSERT INTO enrollments ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.scenario_id, _pack(record.claims), record.signature, record.uses, record.expires,
                 record.created, int(record.revoked), _pack(record.registrations)),
            )  # fmt: skip
        return True

    async def enrollments(self, scenario_id: str) -> list[EnrollmentRecord]:
        query = f"SELECT {_COLUMNS} FROM enrollments WHERE scenario_id = ? ORDER BY created, id"
        return [_record(row) for row in self._read(lambda db: db.execute(query, (scenario_id,)).fetchall())]

    async def revoke_enrollment(self, scenario_id: str, token_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE enrollments SET revoked = 1 WHERE id = ? AND scenario_id = ?", (token_id, scenario_id)
            )
        return cur.rowcount > 0

    async def enroll_machine(
        self, scenario_id: str, token_id: str, machine: MachineSpec, registration: dict[str, Any], now: float
    ) -> EnrollOutcome:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM enrollments WHERE id = ? AND scenario_id = ?", (token_id, scenario_id)
            ).fetchone()
            if row is None:
                return EnrollOutcome.NO_TOKEN
            record = _record(row)
            if record.revoked:
                return EnrollOutcome.REVOKED
            if not now < record.expires:
                return EnrollOutcome.EXPIRED
            if record.used >= record.uses:
                return EnrollOutcome.USED_UP
            insert_machines(db, scenario_id, [machine])  # a name or key clash: StoreConflict, nothing kept
            db.execute(
                "UPDATE enrollments SET registrations = ? WHERE id = ?",
                (_pack([*record.registrations, registration]), token_id),
            )
        return EnrollOutcome.ENROLLED
