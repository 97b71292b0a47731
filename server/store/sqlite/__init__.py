"""The embedded default store: one SQLite file (WAL) in the hub's data dir.

Calls run on the event loop thread: each is a few indexed statements on a local file, cheaper than a hop to a
worker thread, and it keeps every write in one order without locks.
"""

from __future__ import annotations

from server.store.base import Store
from server.store.sqlite.base import SqliteBase
from server.store.sqlite.compositions import SqliteCompositions
from server.store.sqlite.enrollments import SqliteEnrollments
from server.store.sqlite.events import SqliteEvents
from server.store.sqlite.jobs import SqliteJobs
from server.store.sqlite.kv import SqliteKv
from server.store.sqlite.machines import SqliteMachines
from server.store.sqlite.masters import SqliteMasters
from server.store.sqlite.messages import SqliteMessages
from server.store.sqlite.orders import SqliteOrders
from server.store.sqlite.plans import SqlitePlans
from server.store.sqlite.scenarios import SqliteScenarios
from server.store.sqlite.tokens import SqliteTokens

__all__ = ["SqliteBase", "SqliteStore"]


class SqliteStore(
    SqliteMasters,
    SqliteJobs,
    SqliteTokens,
    SqlitePlans,
    SqliteMessages,
    SqliteKv,
    SqliteScenarios,
    SqliteEnrollments,
    SqliteCompositions,
    SqliteMachines,
    SqliteOrders,
    SqliteEvents,
    Store,
):
    """The hub's state in one SQLite file: one part per store Protocol, each in its module of this package, over
    the connection of ``SqliteBase`` (its argument, the database file's path, is this class's)."""
