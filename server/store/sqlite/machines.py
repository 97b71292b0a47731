"""Machines in SQLite (``MachineStore``): the ``machines`` table."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import MachineStore
from server.store.records import MachineRecord, MachineStatus
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteMachines(SqliteBase, MachineStore):
    _MACHINE_COLUMNS = (
        "id, scenario_id, name, os, role, public_key, status, facts, ips, last_seen, report_key, former_keys, labels, "
        "certificate, key_proofs, ready_proof"
    )

    @staticmethod
    def _machine(row: tuple[Any, ...]) -> MachineRecord:
        return MachineRecord(
            id=row[0], scenario_id=row[1], name=row[2], os=row[3], role=row[4], public_key=row[5],
            status=MachineStatus(row[6]), facts=_unpack(row[7], {}), ips=_unpack(row[8], []), last_seen=row[9],
            report_key=row[10], former_keys=_unpack(row[11], []), labels=_unpack(row[12], {}),
            certificate=_unpack(row[13], None), key_proofs=_unpack(row[14], []), ready_proof=_unpack(row[15], None),
        )  # fmt: skip

    async def machine(self, machine_id: str) -> MachineRecord | None:
        row = self._read(
            lambda db: db.execute(
                f"SELECT {self._MACHINE_COLUMNS} FROM machines WHERE id = ?", (machine_id,)
            ).fetchone()
        )
        return None if row is None else self._machine(row)

    async def machines(self, scenario_id: str) -> list[MachineRecord]:
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {self._MACHINE_COLUMNS} FROM machines WHERE scenario_id = ? ORDER BY name",
                (scenario_id,),
            ).fetchall()
        )
        return [self._machine(row) for row in rows]

    async def update_machine(
        self,
        machine_id: str,
        *,
        status: MachineStatus,
        last_seen: float,
        facts: dict[str, Any] | None = None,
        ips: list[str] | None = None,
        ready_proof: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE machines SET status = ?, last_seen = ?, facts = COALESCE(?, facts), ips = COALESCE(?, ips), "
                "ready_proof = COALESCE(?, ready_proof) WHERE id = ?",
                (
                    status.value,
                    last_seen,
                    None if facts is None else _pack(facts),
                    None if ips is None else _pack(ips),
                    None if ready_proof is None else _pack(ready_proof),
                    machine_id,
                ),
            )

    async def reset_presence(self, now: float) -> int:
        with self._tx() as db:
            return db.execute(
                "UPDATE machines SET status = ? WHERE status != ?",
                (MachineStatus.OFFLINE.value, MachineStatus.OFFLINE.value),
            ).rowcount

    async def delete_machine(self, machine_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM machines WHERE id = ?", (machine_id,)).rowcount == 1

    async def rotate_machine_key(
        self, machine_id: str, public_key: str, report_key: str, proof: dict[str, Any] | None = None
    ) -> MachineRecord | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT public_key, former_keys, key_proofs FROM machines WHERE id = ?", (machine_id,)
            ).fetchone()
            if row is None:
                return None
            former = [*_unpack(row[1], []), row[0]]
            proofs = [*_unpack(row[2], []), *([proof] if proof is not None else [])]
            db.execute(
                "UPDATE machines SET public_key = ?, report_key = ?, former_keys = ?, key_proofs = ? WHERE id = ?",
                (public_key, report_key, _pack(former), _pack(proofs), machine_id),
            )
        return await self.machine(machine_id)

    async def certify_machine(self, machine_id: str, certificate: dict[str, Any]) -> bool:
        with self._tx() as db:
            updated = db.execute(
                "UPDATE machines SET certificate = ? WHERE id = ?", (_pack(certificate), machine_id)
            ).rowcount
        return bool(updated == 1)
