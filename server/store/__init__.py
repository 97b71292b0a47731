"""Where the hub keeps masters, scenarios, machines, orders and events: an interface and its implementations."""

from server.store.base import (
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
    Store,
    StoreConflict,
    StoreError,
    TokenRecord,
)
from server.store.sqlite import SqliteStore

__all__ = [
    "EventRecord",
    "JobRecord",
    "MachineRecord",
    "MachineSpec",
    "MachineStatus",
    "MasterRecord",
    "MessageRecord",
    "OrderRecord",
    "PlanRecord",
    "ScenarioRecord",
    "SqliteStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "TokenRecord",
]
