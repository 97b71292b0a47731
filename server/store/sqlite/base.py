"""What every part of the SQLite store shares: the connection, the schema and its migrations, transactions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from server.store.records import MachineSpec, MachineStatus, StoreConflict, StoreError

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

R = TypeVar("R")


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def _unpack(blob: bytes | None, default: Any) -> Any:
    return default if blob is None else msgpack.unpackb(blob, raw=False)


class SqliteBase:
    """The connection every part of ``SqliteStore`` works through.

    Args:
        path: of the database file (created with its tables if missing; one from an older hub is brought up to
            this schema).
    """

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
        self._migrate_enrollments()
        self._migrate_compositions()

    def _migrate_signed_jobs(self) -> None:
        """Jobs stored before they were signed keep their rows, with no statement: masters show them unsigned."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for column in ("statement", "signature"):
            if column not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} BLOB")

    def _migrate_enrollments(self) -> None:
        """Enrollment tokens (hubs before them had none): created on open, old or new database."""
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS enrollments (id TEXT PRIMARY KEY, scenario_id TEXT NOT NULL REFERENCES "
            "scenarios(id) ON DELETE CASCADE, claims BLOB NOT NULL, signature BLOB NOT NULL, uses INTEGER NOT NULL, "
            "expires REAL NOT NULL, created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, "
            "registrations BLOB NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS enrollments_by_scenario ON enrollments (scenario_id, created)")

    def _migrate_compositions(self) -> None:
        """Compositions (hubs before them had none): created on open, old or new database."""
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS compositions (id TEXT NOT NULL, scenario_id TEXT NOT NULL REFERENCES "
            "scenarios(id) ON DELETE CASCADE, composition BLOB NOT NULL, created REAL NOT NULL, "
            "PRIMARY KEY (scenario_id, id))"
        )

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

    async def close(self) -> None:
        self._db.close()


def insert_machines(db: sqlite3.Connection, scenario_id: str, machines: list[MachineSpec]) -> None:
    """New machines of a scenario, offline (a name taken in it, or a key in use: IntegrityError)."""
    db.executemany(
        "INSERT INTO machines (id, scenario_id, name, os, role, public_key, status, report_key, labels, "
        "certificate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (m.id, scenario_id, m.name, m.os, m.role, m.public_key, MachineStatus.OFFLINE.value, m.report_key,
             _pack(m.labels), None if m.certificate is None else _pack(m.certificate))
            for m in machines
        ],
    )  # fmt: skip
