"""The embedded default store: one SQLite file (WAL) in the hub's data dir.

Calls run on the event loop thread: each is a few indexed statements on a local file, cheaper than a hop to a
worker thread, and it keeps every write in one order without locks.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import msgpack

from protocol import OrderState
from protocol.orders import sources as order_sources
from server.store.base import Store
from server.store.records import (
    EventRecord,
    JobRecord,
    MachineRecord,
    MachineSpec,
    MachineStatus,
    MasterRecord,
    MessageRecord,
    OrderRecord,
    PlanRecord,
    ScenarioRecord,
    StoreConflict,
    StoreError,
    TokenRecord,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS masters (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, public_key TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scenarios (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
    last_cursor INTEGER NOT NULL DEFAULT 0, UNIQUE (owner, name));
CREATE TABLE IF NOT EXISTS machines (
    id TEXT PRIMARY KEY, scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    name TEXT NOT NULL, os TEXT NOT NULL, role TEXT NOT NULL, public_key TEXT NOT NULL,
    status TEXT NOT NULL, facts BLOB, ips BLOB, last_seen REAL, report_key TEXT NOT NULL DEFAULT '',
    former_keys BLOB, labels BLOB, UNIQUE (scenario_id, name));
CREATE TABLE IF NOT EXISTS orders (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    machine_id TEXT NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, state TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, result BLOB);
CREATE INDEX IF NOT EXISTS orders_by_machine_state ON orders (machine_id, state, seq);
CREATE INDEX IF NOT EXISTS orders_by_scenario ON orders (scenario_id, seq);
CREATE TABLE IF NOT EXISTS order_chunks (
    order_id TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE, idx INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (order_id, idx));
CREATE TABLE IF NOT EXISTS jobs (
    owner TEXT NOT NULL, name TEXT NOT NULL, shell TEXT NOT NULL, script TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, version INTEGER NOT NULL, statement BLOB, signature BLOB, PRIMARY KEY (owner, name));
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, role TEXT NOT NULL, scenario TEXT NOT NULL, secret_hash TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL, label TEXT NOT NULL, delegation BLOB, sealed_key BLOB NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tokens_by_owner ON tokens (owner, created, id);
CREATE TABLE IF NOT EXISTS plans (
    id TEXT PRIMARY KEY, scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE, data BLOB NOT NULL,
    done INTEGER NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS plan_leases (
    plan_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    machine_id TEXT NOT NULL, topic TEXT NOT NULL, sender TEXT NOT NULL, data BLOB NOT NULL, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS messages_by_machine ON messages (machine_id, seq);
CREATE TABLE IF NOT EXISTS kv (
    scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE, key TEXT NOT NULL, value BLOB NOT NULL,
    expires REAL, PRIMARY KEY (scenario_id, key));
CREATE TABLE IF NOT EXISTS events (
    scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE, cursor INTEGER NOT NULL,
    ts REAL NOT NULL, kind TEXT NOT NULL, machine TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (scenario_id, cursor));
"""

P = ParamSpec("P")
R = TypeVar("R")


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(blob: bytes | None, default: Any) -> Any:
    return default if blob is None else msgpack.unpackb(blob, raw=False)


class SqliteStore(Store):
    """Args: path of the database file (created with its tables if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the hub database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Bring a database written by an older hub up to this schema."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(machines)")}
        if "report_key" not in columns:
            self._db.execute("ALTER TABLE machines ADD COLUMN report_key TEXT NOT NULL DEFAULT ''")
        if "former_keys" not in columns:
            self._db.execute("ALTER TABLE machines ADD COLUMN former_keys BLOB")
        if "labels" not in columns:
            self._db.execute("ALTER TABLE machines ADD COLUMN labels BLOB")
        for column in ("certificate", "key_proofs", "ready_proof"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE machines ADD COLUMN {column} BLOB")
        self._migrate_signed_jobs()
        self._migrate_boot_replays()

    def _migrate_signed_jobs(self) -> None:
        """Jobs stored before they were signed keep their rows, with no statement: masters show them unsigned."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column in ("statement", "signature"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} BLOB")

    def _migrate_boot_replays(self) -> None:
        """Boot-report replay memory (hubs before it kept it per process): created on open, old or new database."""
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS boot_reports_seen (machine_id TEXT NOT NULL, signature TEXT NOT NULL, "
            "expires REAL NOT NULL, PRIMARY KEY (machine_id, signature))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS boot_reports_seen_by_expiry ON boot_reports_seen (expires)")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; sqlite errors become StoreError (StoreConflict for constraint violations)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(str(exc)) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"hub database {self.path}: {exc}") from exc

    def _read(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        try:
            return fn(self._db)
        except sqlite3.Error as exc:
            raise StoreError(f"hub database {self.path}: {exc}") from exc

    # masters
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

    async def master_by_name(self, name: str) -> MasterRecord | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT id, name, public_key, created FROM masters WHERE name = ?", (name,)
            ).fetchone()
        )
        return None if row is None else MasterRecord(*row)

    async def remove_master(self, name: str) -> MasterRecord | None:
        with self._tx() as db:
            row = db.execute("SELECT id, name, public_key, created FROM masters WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM masters WHERE id = ?", (row[0],))
            db.execute("DELETE FROM tokens WHERE owner = ?", (row[0],))
        return MasterRecord(*row)

    # stored jobs
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

    # access tokens
    _TOKEN_COLUMNS = "id, owner, role, scenario, secret_hash, created, expires, label, delegation, sealed_key, revoked"

    @staticmethod
    def _token(row: tuple[Any, ...]) -> TokenRecord:
        return TokenRecord(
            id=row[0], owner=row[1], role=row[2], scenario=row[3], secret_hash=row[4], created=row[5],
            expires=row[6], label=row[7], delegation=_unpack(row[8], None), sealed_key=bytes(row[9]),
            revoked=bool(row[10]),
        )  # fmt: skip

    async def put_token(self, token: TokenRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO tokens ({self._TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token.id, token.owner, token.role, token.scenario, token.secret_hash, token.created,
                    token.expires, token.label, None if token.delegation is None else _pack(token.delegation),
                    token.sealed_key, int(token.revoked),
                ),
            )  # fmt: skip

    async def token(self, token_id: str) -> TokenRecord | None:
        query = f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE id = ?"
        row = self._read(lambda db: db.execute(query, (token_id,)).fetchone())
        return None if row is None else self._token(row)

    async def tokens(self, owner: str) -> list[TokenRecord]:
        query = f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE owner = ? ORDER BY created, id"
        return [self._token(row) for row in self._read(lambda db: db.execute(query, (owner,)).fetchall())]

    async def revoke_token(self, owner: str, token_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked = 1, sealed_key = ? WHERE id = ? AND owner = ?", (b"", token_id, owner)
            )
            return cur.rowcount == 1

    async def renew_token(self, owner: str, token_id: str, delegation: dict[str, Any]) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET delegation = ? WHERE id = ? AND owner = ? AND revoked = 0",
                (_pack(delegation), token_id, owner),
            )
            return cur.rowcount == 1

    # plans
    async def put_plan(self, plan: PlanRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO plans (id, scenario_id, data, done, created) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET data = excluded.data, done = excluded.done",
                (plan.id, plan.scenario_id, _pack(plan.__dict__), int(plan.done), plan.created),
            )

    async def plan(self, plan_id: str) -> PlanRecord | None:
        row = self._read(lambda db: db.execute("SELECT data FROM plans WHERE id = ?", (plan_id,)).fetchone())
        return None if row is None else PlanRecord(**_unpack(row[0], {}))

    async def plans(self, scenario_id: str) -> list[PlanRecord]:
        query = "SELECT data FROM plans WHERE scenario_id = ? ORDER BY created, id"
        return [
            PlanRecord(**_unpack(r[0], {})) for r in self._read(lambda db: db.execute(query, (scenario_id,)).fetchall())
        ]

    async def open_plans(self) -> list[PlanRecord]:
        query = "SELECT data FROM plans WHERE done = 0 ORDER BY created, id"
        return [PlanRecord(**_unpack(r[0], {})) for r in self._read(lambda db: db.execute(query).fetchall())]

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

    # scenario messages
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

    # futures
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

    # boot-report replay memory
    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        with self._tx() as db:
            db.execute("DELETE FROM boot_reports_seen WHERE expires <= ?", (now,))
            cur = db.execute(
                "INSERT OR IGNORE INTO boot_reports_seen (machine_id, signature, expires) VALUES (?, ?, ?)",
                (machine_id, signature, expires),
            )
            return cur.rowcount == 1

    # scenarios and machines
    async def create_scenario(self, owner: str, name: str, machines: list[MachineSpec], now: float) -> ScenarioRecord:
        record = ScenarioRecord(uuid.uuid4().hex, owner, name, now)
        with self._tx() as db:
            db.execute(
                "INSERT INTO scenarios (id, owner, name, created) VALUES (?, ?, ?, ?)",
                (record.id, owner, name, now),
            )
            db.executemany(
                "INSERT INTO machines (id, scenario_id, name, os, role, public_key, status, report_key, labels, "
                "certificate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.id,
                        record.id,
                        m.name,
                        m.os,
                        m.role,
                        m.public_key,
                        MachineStatus.OFFLINE.value,
                        m.report_key,
                        _pack(m.labels),
                        None if m.certificate is None else _pack(m.certificate),
                    )
                    for m in machines
                ],
            )
        return record

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

    async def delete_machine(self, machine_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM machines WHERE id = ?", (machine_id,)).rowcount == 1

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

    # orders
    _ORDER_COLUMNS = "id, scenario_id, machine_id, kind, body, state, created, updated, result"

    @staticmethod
    def _order(row: tuple[Any, ...]) -> OrderRecord:
        return OrderRecord(
            id=row[0], scenario_id=row[1], machine_id=row[2], kind=row[3], order=_unpack(row[4], {}),
            state=OrderState(row[5]), created=row[6], updated=row[7], result=_unpack(row[8], None),
        )  # fmt: skip

    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO orders (id, scenario_id, machine_id, kind, body, state, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.id, order.scenario_id, order.machine_id, order.kind, _pack(order.order),
                    order.state.value, order.created, order.updated,
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO order_chunks VALUES (?, ?, ?)", [(order.id, i, c) for i, c in enumerate(chunks)]
            )

    async def order(self, order_id: str) -> OrderRecord | None:
        row = self._read(
            lambda db: db.execute(f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE id = ?", (order_id,)).fetchone()
        )
        return None if row is None else self._order(row)

    async def order_chunks(self, order_id: str) -> list[bytes]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT data FROM order_chunks WHERE order_id = ? ORDER BY idx", (order_id,)
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE machine_id = ? AND state = ? ORDER BY seq",
                (machine_id, OrderState.QUEUED.value),
            ).fetchall()
        )
        return [self._order(row) for row in rows]

    async def queued_count(self, machine_id: str) -> int:
        query = "SELECT COUNT(*) FROM orders WHERE machine_id = ? AND state = ?"
        row = self._read(lambda db: db.execute(query, (machine_id, OrderState.QUEUED.value)).fetchone())
        return int(row[0])

    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        earlier = sorted(s.value for s in order_sources(state))
        if state.final or not earlier:
            return False  # queued is where orders start; final states come with a result (store_result)
        placeholders = ",".join("?" * len(earlier))
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE orders SET state = ?, updated = ? WHERE id = ? AND state IN ({placeholders})",
                (state.value, now, order_id, *earlier),
            )
            return cur.rowcount == 1

    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE orders SET state = ?, updated = ?, result = ? WHERE id = ? AND result IS NULL",
                (state.value, now, _pack(result), order_id),
            )
            if cur.rowcount == 1:
                db.execute("DELETE FROM order_chunks WHERE order_id = ?", (order_id,))
            return cur.rowcount == 1

    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]:
        sql = f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE scenario_id = ?"
        params: list[Any] = [scenario_id]
        if order_ids:
            sql += f" AND id IN ({','.join('?' * len(order_ids))})"
            params += order_ids
        rows = self._read(lambda db: db.execute(sql + " ORDER BY seq", params).fetchall())
        return [self._order(row) for row in rows]

    # events
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

    async def close(self) -> None:
        self._db.close()
