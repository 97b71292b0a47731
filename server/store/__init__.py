"""Where the hub keeps masters, scenarios, machines, orders and events: one Protocol per feature
(``interfaces``), the records (``records``), and the backends implementing them all (``Store``)."""

from server.store.base import Store
from server.store.interfaces import (
    BootReportStore,
    EventStore,
    JobStore,
    KvStore,
    MachineStore,
    MasterStore,
    MessageStore,
    OrderStore,
    PlanStore,
    ScenarioStore,
    TokenStore,
)
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
    StoredRecordError,
    StoreError,
    TokenRecord,
)
from server.store.sqlite import SqliteStore

__all__ = [
    "BootReportStore",
    "EventRecord",
    "EventStore",
    "JobRecord",
    "JobStore",
    "KvStore",
    "MachineRecord",
    "MachineSpec",
    "MachineStatus",
    "MachineStore",
    "MasterRecord",
    "MasterStore",
    "MessageRecord",
    "MessageStore",
    "OrderRecord",
    "OrderStore",
    "PlanRecord",
    "PlanStore",
    "ScenarioRecord",
    "ScenarioStore",
    "SqliteStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoredRecordError",
    "TokenRecord",
    "TokenStore",
]
