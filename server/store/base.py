"""The store: everything the hub must not lose on restart, as one object implementing every feature's Protocol.

Implementations: ``SqliteStore`` (embedded default, one file in the data dir) and ``RedisStore`` (several hub
replicas); both pass the same contract tests (``tests/server/test_store_contract.py``). Features never see this
whole: each types its store as the Protocol in ``server/store/interfaces.py`` it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from server.store.interfaces import (
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


class Store(
    MasterStore,
    JobStore,
    TokenStore,
    PlanStore,
    MessageStore,
    KvStore,
    BootReportStore,
    ScenarioStore,
    EnrollmentStore,
    CompositionStore,
    MachineStore,
    OrderStore,
    EventStore,
    ABC,
):
    """Persistent state of one hub (or of a group of replicas sharing it)."""

    @abstractmethod
    async def close(self) -> None: ...
