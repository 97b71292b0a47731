"""The durable order journal, including behaviour across a crash (close without finishing, reopen)."""

from __future__ import annotations

import os
import sqlite3
import stat

import msgpack
import pytest

from clients.daemon.journal import JOURNAL_FILE, Journal, OrderState


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def journal(state_dir):
    with Journal(state_dir) as journal:
        yield journal


def order(n: int) -> dict:
    return {"kind": "exec", "command": f"echo {n}", "payload": bytes([n, 0, 255])}


def result(n: int) -> dict:
    return {"order_id": f"o{n}", "exit_code": 0, "stdout": b"\x00out"}


def test_the_state_dir_is_created_private(state_dir):
    Journal(state_dir).close()

    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700
    assert (state_dir / JOURNAL_FILE).exists()


def test_a_received_order_reads_back_with_its_bytes(journal):
    assert journal.record_received("o1", order(1), now=100.0) is True

    entry = journal.get("o1")

    assert entry is not None
    assert entry.state is OrderState.RECEIVED
    assert entry.order == order(1)
    assert entry.result is None
    assert entry.result_acked is False
    assert entry.received_at == 100.0


def test_unknown_ids_are_none(journal):
    assert journal.get("nope") is None


def test_a_duplicate_order_is_refused_even_after_a_reopen(state_dir):
    with Journal(state_dir) as journal:
        assert journal.record_received("o1", order(1), now=1.0)
        assert not journal.record_received("o1", order(2), now=2.0)

    with Journal(state_dir) as reopened:
        assert not reopened.record_received("o1", order(3), now=3.0)
        entry = reopened.get("o1")
        assert entry is not None
        assert entry.order == order(1), "a duplicate must not overwrite the original"


def test_orders_running_at_a_crash_are_listed_as_running_after_reopen(state_dir):
    crashed = Journal(state_dir)
    crashed.record_received("o1", order(1), now=1.0)
    crashed.record_received("o2", order(2), now=2.0)
    crashed.record_received("o3", order(3), now=3.0)
    crashed.mark_running("o2")
    crashed.close()  # the process dies here: o2 never finishes

    with Journal(state_dir) as journal:
        assert [entry.order_id for entry in journal.running()] == ["o2"]
        assert [entry.order_id for entry in journal.received_not_started()] == ["o1", "o3"]
        assert journal.running()[0].order == order(2)


def test_a_result_moves_the_order_out_of_running(journal):
    journal.record_received("o1", order(1), now=1.0)
    journal.mark_running("o1")

    journal.record_result("o1", result(1))

    assert journal.running() == []
    entry = journal.get("o1")
    assert entry is not None
    assert entry.state is OrderState.FINISHED
    assert entry.result == result(1)


def test_unacked_results_survive_a_reopen_in_finishing_order(state_dir):
    with Journal(state_dir) as journal:
        for n in (1, 2, 3):
            journal.record_received(f"o{n}", order(n), now=n)
        journal.record_result("o3", result(3))
        journal.record_result("o1", result(1))
        journal.record_result("o2", result(2))
        journal.mark_acked("o1")

    with Journal(state_dir) as reopened:
        assert reopened.unacked_results() == [result(3), result(2)]


def test_a_result_can_be_recorded_for_an_order_never_received(journal):
    journal.record_result("rejected", {"order_id": "rejected", "error": "bad signature"})

    entry = journal.get("rejected")
    assert entry is not None
    assert entry.state is OrderState.FINISHED
    assert entry.order == {}
    assert journal.unacked_results() == [{"order_id": "rejected", "error": "bad signature"}]
    assert not journal.record_received("rejected", order(1), now=1.0), "its id now counts as seen"


def test_acks_for_unknown_or_unfinished_orders_are_ignored(journal):
    journal.record_received("o1", order(1), now=1.0)

    journal.mark_acked("o1")
    journal.mark_acked("never-seen")

    entry = journal.get("o1")
    assert entry is not None
    assert entry.result_acked is False


def test_mark_running_rejects_unknown_and_finished_orders(journal):
    with pytest.raises(KeyError):
        journal.mark_running("nope")
    journal.record_result("o1", result(1))
    with pytest.raises(ValueError, match="already finished"):
        journal.mark_running("o1")


def test_prune_deletes_only_old_acked_results_and_keeps_dedupe(state_dir):
    with Journal(state_dir) as journal:
        for n in (1, 2, 3, 4):
            journal.record_received(f"o{n}", order(n), now=n)
        journal.record_result("o1", result(1))
        journal.mark_acked("o1")
        journal.record_result("o2", result(2))  # old but unacked: must stay
        journal.record_result("o4", result(4))
        journal.mark_acked("o4")  # acked but too recent

        assert journal.prune(older_than=3.5) == 1

        assert journal.get("o1") is None
        assert journal.get("o2") is not None
        assert journal.get("o3") is not None
        assert journal.get("o4") is not None

    with Journal(state_dir) as reopened:
        assert not reopened.record_received("o1", order(1), now=10.0), "a pruned id is still a duplicate"


def test_prune_can_forget_very_old_ids(journal):
    journal.record_received("o1", order(1), now=1.0, expires=3.0)
    journal.record_result("o1", result(1))
    journal.mark_acked("o1")
    journal.record_received("o2", order(2), now=2.0, expires=3.0)  # still pending: its id must stay

    assert journal.prune(older_than=5.0, forget_ids_older_than=5.0) == 1

    assert journal.record_received("o1", order(1), now=10.0), "a forgotten id is accepted again"
    assert not journal.record_received("o2", order(2), now=10.0)


def test_a_closed_journal_refuses_use_and_close_is_idempotent(state_dir):
    journal = Journal(state_dir)
    journal.close()
    journal.close()

    with pytest.raises(ValueError, match="closed"):
        journal.get("o1")


def test_a_non_serialisable_order_is_refused_without_recording_the_id(journal):
    with pytest.raises(TypeError):
        journal.record_received("o1", {"bad": object()}, now=1.0)

    assert journal.record_received("o1", order(1), now=1.0)


def test_the_journal_uses_wal_and_full_sync(journal):
    db = journal._conn()

    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


DAY = 86400.0


def test_an_id_is_kept_while_its_order_could_still_verify_whatever_its_receipt_time(journal):
    # Received on day 0, valid until day 60 (signed before orders were capped). On day 29 a daemon that forgot
    # ids by receipt time alone would take a re-queued copy as new; the id must stay until day 60 has passed.
    journal.record_received("long", order(1), now=0.0, expires=60 * DAY)
    journal.record_result("long", result(1))
    journal.mark_acked("long")
    journal.record_received("short", order(2), now=0.0, expires=1 * DAY)
    journal.record_result("short", result(2))
    journal.mark_acked("short")

    day_29 = 29 * DAY
    journal.prune(day_29 - 7 * DAY, forget_ids_older_than=day_29 - 28 * DAY, forget_ids_expired_before=day_29)

    assert journal.seen("long") and not journal.record_received("long", order(1), now=day_29, expires=60 * DAY)
    assert not journal.seen("short"), "an expired, long-received id is forgotten: the table does not grow forever"
    assert journal.latest_forgotten_expiry() == 1 * DAY, "what could be a forgotten order is known"

    day_61 = 61 * DAY
    journal.prune(day_61 - 7 * DAY, forget_ids_older_than=day_61 - 28 * DAY, forget_ids_expired_before=day_61)
    assert not journal.seen("long")


def test_the_id_of_an_order_refused_unrecorded_is_kept_until_it_expires(journal):
    # A refused order leaves only its result; were its id forgotten by receipt time, a copy redelivered in the
    # last days of its validity would verify and run.
    journal.record_result("refused", {"order_id": "refused", "error": "valid too long"}, now=0.0, expires=60 * DAY)
    journal.mark_acked("refused")

    day_53 = 53 * DAY
    journal.prune(day_53 - 7 * DAY, forget_ids_older_than=day_53 - 28 * DAY, forget_ids_expired_before=day_53)

    assert journal.get("refused") is None, "the entry itself is pruned"
    assert journal.seen("refused") and not journal.record_received("refused", order(1), now=day_53)


def test_ids_of_unknown_expiry_are_never_forgotten(journal):
    journal.record_received("unknown", order(1), now=0.0)
    journal.record_result("unknown", result(1))
    journal.mark_acked("unknown")

    journal.prune(1000 * DAY, forget_ids_older_than=1000 * DAY)

    assert journal.seen("unknown")


def _schema_1_journal(state_dir):
    """A journal as daemons before expiries wrote it: ``seen_ids`` without an ``expires`` column."""
    state_dir.mkdir(mode=0o700)
    db = sqlite3.connect(state_dir / JOURNAL_FILE, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE orders (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL UNIQUE, state TEXT NOT NULL,
            order_data BLOB NOT NULL, result_data BLOB, result_acked INTEGER NOT NULL DEFAULT 0,
            received_at REAL NOT NULL, finished_seq INTEGER);
        CREATE INDEX orders_state ON orders (state, result_acked);
        CREATE TABLE seen_ids (order_id TEXT PRIMARY KEY, received_at REAL NOT NULL) WITHOUT ROWID;
        PRAGMA user_version=1;
        """
    )
    kept = msgpack.packb({"id": "kept", "expires": 5 * DAY, "payload": b"\x00"}, use_bin_type=True)
    db.execute(
        "INSERT INTO orders (order_id, state, order_data, received_at) VALUES ('kept', 'received', ?, 0)", (kept,)
    )
    db.execute("INSERT INTO seen_ids VALUES ('kept', 0), ('pruned-long-ago', 0)")
    db.close()


def test_a_journal_from_before_expiries_opens_and_keeps_every_id_it_cannot_date(state_dir):
    _schema_1_journal(state_dir)

    with Journal(state_dir) as journal:
        entry = journal.get("kept")
        assert entry is not None and entry.state is OrderState.RECEIVED and entry.order["payload"] == b"\x00"
        assert [e.order_id for e in journal.received_not_started()] == ["kept"]
        journal.record_result("kept", result(1))
        journal.mark_acked("kept")

        later = 100 * DAY
        journal.prune(later, forget_ids_older_than=later, forget_ids_expired_before=later)

        assert not journal.seen("kept"), "its order was still in the journal: its expiry was recovered"
        assert journal.seen("pruned-long-ago"), "its order may have been valid for any time: kept"
        assert journal.record_received("new", order(2), now=later, expires=later + DAY)

    with Journal(state_dir) as reopened:  # migrated once: opens again as the current schema
        assert reopened.seen("new") and reopened.seen("pruned-long-ago")
        assert reopened._conn().execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_journal_of_an_unknown_schema_is_refused(state_dir):
    state_dir.mkdir(mode=0o700)
    sqlite3.connect(state_dir / JOURNAL_FILE, isolation_level=None).execute("PRAGMA user_version=99")

    with pytest.raises(RuntimeError, match="schema version 99"):
        Journal(state_dir)


def test_the_latest_forgotten_expiry_only_grows(journal):
    assert journal.latest_forgotten_expiry() == 0.0
    for n, expires in enumerate((5 * DAY, 9 * DAY, 2 * DAY)):
        journal.record_received(f"o{n}", order(n), now=0.0, expires=expires)
        journal.record_result(f"o{n}", result(n))
        journal.mark_acked(f"o{n}")
        journal.prune(100 * DAY, forget_ids_older_than=100 * DAY)
    assert journal.latest_forgotten_expiry() == 9 * DAY
    journal.prune(100 * DAY, forget_ids_older_than=100 * DAY)  # nothing left to forget: unchanged
    assert journal.latest_forgotten_expiry() == 9 * DAY
