"""The daemon's durable memory of orders, so a crash never reruns a command nor loses a result.

Every order is written down before it runs, marked running when it starts and updated with its
result when it ends; the result stays "unacked" until the hub confirms it. After a restart the
daemon asks the journal what was received but never started (run it), what was running (report
it as interrupted — it must not be rerun) and which results still need delivering.

Storage is one SQLite file in WAL mode with ``synchronous=FULL``; every call commits before it
returns. Order and result dicts are stored msgpack-encoded, so they may contain bytes.

Every id ever received is remembered with its order's expiry, and forgotten only once the order was received
long ago *and* has expired: until then a redelivered or replayed copy could still verify, and would run again.
Schema 1 journals (ids without expiries) are migrated on open; ids whose expiry cannot be recovered are kept.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

import msgpack

__all__ = ["JOURNAL_FILE", "Journal", "JournalEntry", "OrderState"]

JOURNAL_FILE = "journal.sqlite3"
_SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- receive order
    order_id     TEXT    NOT NULL UNIQUE,
    state        TEXT    NOT NULL,
    order_data   BLOB    NOT NULL,
    result_data  BLOB,
    result_acked INTEGER NOT NULL DEFAULT 0,
    received_at  REAL    NOT NULL,
    finished_seq INTEGER                               -- finishing order
);
CREATE INDEX IF NOT EXISTS orders_state ON orders (state, result_acked);
-- Outlives pruned orders so that a redelivered old order is still recognised as a duplicate.
CREATE TABLE IF NOT EXISTS seen_ids (
    order_id    TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    expires     REAL                                  -- NULL: unknown (schema 1), never forgotten
) WITHOUT ROWID;
-- The latest expiry among forgotten ids: an order expiring no later may be one of them (the clock went back).
CREATE TABLE IF NOT EXISTS forgotten (
    only_row       INTEGER PRIMARY KEY CHECK (only_row = 0),
    latest_expiry  REAL NOT NULL
);
"""


class OrderState(StrEnum):
    """Where an order is in its life."""

    RECEIVED = "received"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(frozen=True)
class JournalEntry:
    """One order as recorded in the journal."""

    order_id: str
    state: OrderState
    order: dict[str, Any]
    """The order as received; ``{}`` for a result recorded without a received order."""
    result: dict[str, Any] | None
    result_acked: bool
    received_at: float


class Journal:
    """Durable record of orders and results in ``<state_dir>/journal.sqlite3``.

    Safe to use from several threads (e.g. via ``asyncio.to_thread``); calls are serialised.
    """

    def __init__(self, state_dir: str | Path) -> None:
        """Open (creating if needed) the journal; a missing ``state_dir`` is created with mode 0700."""
        self.state_dir = Path(state_dir)
        if not self.state_dir.exists():
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.state_dir.chmod(0o700)  # mkdir's mode is filtered through the umask
        self.path = self.state_dir / JOURNAL_FILE
        self._lock = threading.Lock()
        # Autocommit mode: each statement outside an explicit transaction commits on its own.
        self._db: sqlite3.Connection | None = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            self._migrate_from_1()
        elif version not in (0, _SCHEMA_VERSION):
            self._db.close()
            raise RuntimeError(f"{self.path}: journal schema version {version} is not supported")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

    def _migrate_from_1(self) -> None:
        """Give remembered ids their orders' expiry where the journal still holds the order; the others (their
        orders pruned, or refused unrecorded) stay unknown, so they are never forgotten: a daemon before
        ``MAX_ORDER_TTL`` accepted orders valid for any time."""
        with self._transaction() as db:
            db.execute("ALTER TABLE seen_ids ADD COLUMN expires REAL")
            for order_id, order_data in db.execute("SELECT order_id, order_data FROM orders").fetchall():
                expires = _unpack(order_data).get("expires")
                if isinstance(expires, int | float) and not isinstance(expires, bool):
                    db.execute("UPDATE seen_ids SET expires = ? WHERE order_id = ?", (float(expires), order_id))
            db.execute("PRAGMA user_version=2")

    def record_received(
        self, order_id: str, order: dict[str, Any], now: float, *, expires: float | None = None
    ) -> bool:
        """Write down a newly received order, valid until ``expires`` (None: unknown, so its id is never
        forgotten); False (and nothing written) if this id was ever seen."""
        data = _pack(order)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO seen_ids (order_id, received_at, expires) VALUES (?, ?, ?)",
                (order_id, now, expires),
            )
            if cursor.rowcount == 0:
                return False
            db.execute(
                "INSERT INTO orders (order_id, state, order_data, received_at) VALUES (?, ?, ?, ?)",
                (order_id, OrderState.RECEIVED.value, data, now),
            )
            return True

    def seen(self, order_id: str) -> bool:
        """Whether this id was ever received or answered (and not yet forgotten), even if its entry was pruned."""
        with self._lock:
            row = self._conn().execute("SELECT 1 FROM seen_ids WHERE order_id = ?", (order_id,)).fetchone()
        return row is not None

    def get(self, order_id: str) -> JournalEntry | None:
        """The entry for ``order_id``, or None if unknown (or pruned)."""
        with self._lock:
            row = self._conn().execute(f"{_SELECT} WHERE order_id = ?", (order_id,)).fetchone()
        return _entry(row) if row else None

    def mark_running(self, order_id: str) -> None:
        """Record that the order's command is about to start.

        Raises ``KeyError`` for an unknown id and ``ValueError`` if the order already finished.
        """
        with self._transaction() as db:
            row = db.execute("SELECT state FROM orders WHERE order_id = ?", (order_id,)).fetchone()
            if row is None:
                raise KeyError(order_id)
            if row[0] == OrderState.FINISHED:
                raise ValueError(f"order {order_id} already finished")
            db.execute("UPDATE orders SET state = ? WHERE order_id = ?", (OrderState.RUNNING.value, order_id))

    def record_result(
        self, order_id: str, result: dict[str, Any], *, now: float | None = None, expires: float | None = None
    ) -> None:
        """Store the order's result (state FINISHED, not yet acknowledged).

        Also accepted for ids that were never received (e.g. orders rejected before being
        recorded); such an entry gets an empty order, ``now`` (default: the current time) as
        receive time and ``expires`` as its order's expiry, so a refused order cannot be
        redelivered later and run while it is still valid.
        """
        data = _pack(result)
        with self._transaction() as db:
            finished_seq = db.execute("SELECT COALESCE(MAX(finished_seq), 0) + 1 FROM orders").fetchone()[0]
            cursor = db.execute(
                "UPDATE orders SET state = ?, result_data = ?, result_acked = 0, finished_seq = ? WHERE order_id = ?",
                (OrderState.FINISHED.value, data, finished_seq, order_id),
            )
            if cursor.rowcount == 0:
                received_at = time.time() if now is None else now
                db.execute(
                    "INSERT OR IGNORE INTO seen_ids (order_id, received_at, expires) VALUES (?, ?, ?)",
                    (order_id, received_at, expires),
                )
                db.execute(
                    "INSERT INTO orders (order_id, state, order_data, result_data, received_at, finished_seq)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (order_id, OrderState.FINISHED.value, _pack({}), data, received_at, finished_seq),
                )

    def mark_acked(self, order_id: str) -> None:
        """Record that the hub has the result; unknown ids are ignored (acks may be repeated)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE orders SET result_acked = 1 WHERE order_id = ? AND state = ?",
                (order_id, OrderState.FINISHED.value),
            )

    def unacked_results(self) -> list[dict[str, Any]]:
        """Results not yet acknowledged by the hub, in the order they finished."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT result_data FROM orders WHERE state = ? AND result_acked = 0 ORDER BY finished_seq",
                    (OrderState.FINISHED.value,),
                )
                .fetchall()
            )
        return [_unpack(row[0]) for row in rows]

    def received_not_started(self) -> list[JournalEntry]:
        """Orders received but never started, in receive order: to be run after a restart."""
        return self._in_state(OrderState.RECEIVED)

    def running(self) -> list[JournalEntry]:
        """Orders that were running when the daemon stopped: to be reported as interrupted, not rerun."""
        return self._in_state(OrderState.RUNNING)

    def prune(
        self,
        older_than: float,
        *,
        forget_ids_older_than: float | None = None,
        forget_ids_expired_before: float | None = None,
    ) -> int:
        """Delete finished, acknowledged entries received before ``older_than``; return how many.

        Their ids stay known, so redelivered orders are still rejected as duplicates. Pass
        ``forget_ids_older_than`` to also drop remembered ids received before that time and whose
        order expired before ``forget_ids_expired_before`` (default: the same time), so the id table
        does not grow forever yet no id is forgotten while a copy of its order could still verify,
        however long ago it was received. Ids of unknown expiry are never forgotten.
        """
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM orders WHERE state = ? AND result_acked = 1 AND received_at < ?",
                (OrderState.FINISHED.value, older_than),
            )
            pruned = cursor.rowcount
            if forget_ids_older_than is not None:
                # Ids of entries still in `orders` stay, or dedupe for them would silently break.
                expired_before = (
                    forget_ids_older_than if forget_ids_expired_before is None else forget_ids_expired_before
                )
                forgettable = (
                    "FROM seen_ids WHERE received_at < ? AND expires IS NOT NULL AND expires < ?"
                    " AND order_id NOT IN (SELECT order_id FROM orders)"
                )
                cutoffs = (forget_ids_older_than, expired_before)
                (latest,) = db.execute(f"SELECT MAX(expires) {forgettable}", cutoffs).fetchone()
                if latest is not None:
                    db.execute(
                        "INSERT INTO forgotten (only_row, latest_expiry) VALUES (0, ?) ON CONFLICT (only_row)"
                        " DO UPDATE SET latest_expiry = MAX(latest_expiry, excluded.latest_expiry)",
                        (latest,),
                    )
                    db.execute(f"DELETE {forgettable}", cutoffs)
            return pruned

    def latest_forgotten_expiry(self) -> float:
        """The latest expiry of any order whose id was forgotten (0.0 if none): an order expiring no later
        could be one of them, so only a clock set back since could find it still valid. Refuse it."""
        with self._lock:
            row = self._conn().execute("SELECT latest_expiry FROM forgotten").fetchone()
        return float(row[0]) if row else 0.0

    def close(self) -> None:
        """Close the database; safe to call more than once."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- internals ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError("journal is closed")
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Serialise and wrap the block in one transaction, committed (durably) on success."""
        with self._lock:
            db = self._conn()
            # IMMEDIATE takes the write lock up front, so check-then-write sequences are atomic
            # even against another process opening the same journal.
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _in_state(self, state: OrderState) -> list[JournalEntry]:
        with self._lock:
            rows = self._conn().execute(f"{_SELECT} WHERE state = ? ORDER BY seq", (state.value,)).fetchall()
        return [_entry(row) for row in rows]


_SELECT = "SELECT order_id, state, order_data, result_data, result_acked, received_at FROM orders"


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    order_id, state, order_data, result_data, acked, received_at = row
    return JournalEntry(
        order_id=order_id,
        state=OrderState(state),
        order=_unpack(order_data),
        result=_unpack(result_data) if result_data is not None else None,
        result_acked=bool(acked),
        received_at=received_at,
    )


def _pack(value: dict[str, Any]) -> bytes:
    return cast(bytes, msgpack.packb(value, use_bin_type=True))


def _unpack(data: bytes) -> dict[str, Any]:
    return cast(dict[str, Any], msgpack.unpackb(data, raw=False))
