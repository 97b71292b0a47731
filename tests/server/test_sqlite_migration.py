"""A database written by a hub from before boot reports (no ``machines.report_key``) opens and keeps working."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path

from protocol import Identity
from server.store import MachineSpec, MachineStatus, SqliteStore
from server.store.sqlite.base import SCHEMA

NOW = 1_700_000_000.0

# The machines table as the hub created it before report keys.
OLD_MACHINES = """
CREATE TABLE machines (
    id TEXT PRIMARY KEY, scenario_id TEXT NOT NULL REFERENCES scenarios(id) ON DELETE CASCADE,
    name TEXT NOT NULL, os TEXT NOT NULL, role TEXT NOT NULL, public_key TEXT NOT NULL,
    status TEXT NOT NULL, facts BLOB, ips BLOB, last_seen REAL,
    UNIQUE (scenario_id, name));
"""


def public_key() -> str:
    return Identity.generate(secrets.token_bytes).public.to_text()


def old_database(path: Path, machine_key: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(OLD_MACHINES)
        db.executescript(SCHEMA)  # the other tables; machines exists already, so it keeps its old shape
        columns = [row[1] for row in db.execute("PRAGMA table_info(machines)")]
        assert "report_key" not in columns
        machine_id = MachineSpec("old", "linux", "old", machine_key).id
        db.execute("INSERT INTO scenarios (id, owner, name, created) VALUES ('sc-old', 'alice', 'legacy', ?)", (NOW,))
        db.execute(
            "INSERT INTO machines (id, scenario_id, name, os, role, public_key, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (machine_id, "sc-old", "old", "linux", "old", machine_key, MachineStatus.OFFLINE.value),
        )
        db.commit()
    finally:
        db.close()


async def test_an_old_database_gains_the_report_key_column_and_keeps_its_machines(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    old_key = public_key()
    old_database(path, old_key)

    store = SqliteStore(path)
    try:
        old_id = MachineSpec("old", "linux", "old", old_key).id
        old = await store.machine(old_id)
        assert old is not None
        assert (old.scenario_id, old.name, old.public_key, old.status) == (
            "sc-old",
            "old",
            old_key,
            MachineStatus.OFFLINE,
        )
        assert old.report_key == ""
        assert [m.report_key for m in await store.machines("sc-old")] == [""]

        spec = MachineSpec("new", "linux", "new", public_key(), secrets.token_hex(32))
        scenario = await store.create_scenario("alice", "fresh", [spec], NOW)
        new = await store.machine(spec.id)
        assert new is not None and (new.scenario_id, new.report_key) == (scenario.id, spec.report_key)
    finally:
        await store.close()

    # reopening a migrated database migrates nothing twice
    again = SqliteStore(path)
    try:
        reopened = await again.machine(spec.id)
        assert reopened is not None and reopened.report_key == spec.report_key
        old = await again.machine(old_id)
        assert old is not None and old.report_key == ""
    finally:
        await again.close()


# The jobs table as the hub created it before jobs were signed.
OLD_JOBS = """
CREATE TABLE jobs (
    owner TEXT NOT NULL, name TEXT NOT NULL, shell TEXT NOT NULL, script TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (owner, name));
"""


async def test_jobs_stored_before_signatures_stay_readable_as_unsigned(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    db = sqlite3.connect(path)
    try:
        db.executescript(OLD_JOBS)
        db.executescript(SCHEMA)
        db.execute("INSERT INTO jobs VALUES ('alice', 'deploy', 'sh', 'echo old', ?, ?, 3)", (NOW, NOW))
        db.commit()
    finally:
        db.close()

    store = SqliteStore(path)
    try:
        old = await store.job("alice", "deploy")
        assert old is not None and (old.script, old.version, old.statement, old.signature) == ("echo old", 3, None, b"")
        assert not old.to_wire()["signed"]
        statement = {"name": "deploy", "version": 1, "script": "echo new"}
        new = await store.put_job("alice", "deploy", "sh", "echo new", NOW + 1, version=1, statement=statement,
                                  signature=b"sig")  # fmt: skip
        assert (new.version, new.statement, new.signature) == (1, statement, b"sig")
    finally:
        await store.close()


async def test_an_old_database_gains_boot_report_memory_and_it_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "hub.sqlite3"
    old_database(path, public_key())
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'boot_reports_seen'").fetchone() is None
    finally:
        db.close()

    store = SqliteStore(path)
    try:
        for n in range(50):
            assert await store.first_boot_report("m1", f"mac-{n}", NOW + n + 1, NOW + n)
        assert await store.first_boot_report("m1", "late", NOW + 1_000, NOW + 100)  # the 50 above expired
        rows = store._db.execute("SELECT signature FROM boot_reports_seen").fetchall()
        assert rows == [("late",)]
    finally:
        await store.close()
