"""The store as each feature sees it: ``stores.orders(hub)`` is the hub's store typed as ``OrderStore`` alone.

A call names the Protocol it goes through, so a feature's imports and calls say what state it can touch, and
mypy refuses a call outside that Protocol. The hub keeps one ``Store`` (every Protocol at once, see
``server/store/base.py``); these are views of it, not copies.
"""

from __future__ import annotations

from server.core.hub import Hub
from server.store import (
    BootReportStore,
    CompositionStore,
    EnrollmentStore,
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


def compositions(hub: Hub) -> CompositionStore:
    return hub.store


def enrollments(hub: Hub) -> EnrollmentStore:
    return hub.store


def masters(hub: Hub) -> MasterStore:
    return hub.store


def jobs(hub: Hub) -> JobStore:
    return hub.store


def tokens(hub: Hub) -> TokenStore:
    return hub.store


def plans(hub: Hub) -> PlanStore:
    return hub.store


def messages(hub: Hub) -> MessageStore:
    return hub.store


def keys(hub: Hub) -> KvStore:
    return hub.store


def boot_reports(hub: Hub) -> BootReportStore:
    return hub.store


def scenarios(hub: Hub) -> ScenarioStore:
    return hub.store


def machines(hub: Hub) -> MachineStore:
    return hub.store


def orders(hub: Hub) -> OrderStore:
    return hub.store


def events(hub: Hub) -> EventStore:
    return hub.store
