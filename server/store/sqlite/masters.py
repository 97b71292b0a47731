"""Masters in SQLite (``MasterStore``): the ``masters`` table; rekeying moves their scenarios and tokens."""

from __future__ import annotations

from server.store.interfaces import MasterStore
from server.store.records import MachineSpec, MasterRecord, StoreConflict
from server.store.sqlite.base import SqliteBase


class SqliteMasters(SqliteBase, MasterStore):
    async def enroll_master(self, name: str, public_key: str, now: float) -> MasterRecord:
        master_id = MachineSpec(name, "", "", public_key).id
        with self._tx() as db:
            row = db.execute("SELECT id, name, public_key, created FROM masters WHERE name = ?", (name,)).fetchone()
            if row is not None:
                if row[2] != public_key:
                    raise StoreConflict(f"a master named {name!r} is enrolled with another key")
                return MasterRecord(*row)
            db.execute("INSERT INTO masters VALUES (?, ?, ?, ?)", (master_id, name, public_key, now))
        return MasterRecord(master_id, name, public_key, now)

    async def master(self, master_id: str) -> MasterRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT id, name, public_key, created FROM masters WHERE id = ?", (master_id,)
            ).fetchone()
        )
        return None if row is None else MasterRecord(*row)

    async def master_by_name(self, name: str) -> MasterRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT id, name, public_key, created FROM masters WHERE name = ?", (name,)
            ).fetchone()
        )
        return None if row is None else MasterRecord(*row)

    async def rekey_master(self, master_id: str, public_key: str) -> MasterRecord | None:
        new_id = MachineSpec("", "", "", public_key).id
        with self._tx() as db:
            row = db.execute("SELECT id, name, public_key, created FROM masters WHERE id = ?", (master_id,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM masters WHERE id = ?", (master_id,))
            db.execute("INSERT INTO masters VALUES (?, ?, ?, ?)", (new_id, row[1], public_key, row[3]))
            db.execute("UPDATE scenarios SET owner = ? WHERE owner = ?", (new_id, master_id))
            db.execute("UPDATE tokens SET owner = ? WHERE owner = ?", (new_id, master_id))
        return MasterRecord(new_id, row[1], public_key, row[3])

    async def remove_master(self, name: str) -> MasterRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT id, name, public_key, created FROM masters WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM masters WHERE id = ?", (row[0],))
            db.execute("DELETE FROM tokens WHERE owner = ?", (row[0],))
        return MasterRecord(*row)
