"""What each feature may ask of the store: one small Protocol per feature, none over 8 methods.

A feature types its store as the Protocol it needs (``jobs(hub)`` in ``server/features/jobs.py`` and so on), so a
reader sees from the type what a feature can touch, and a backend (``SqliteStore``, ``RedisStore``) implements
them all through ``server.store.base.Store``. The contract suite (``tests/server/test_store_contract.py``) holds
both backends to every docstring here.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Protocol

from protocol import OrderState
from server.store.records import (
    CompositionRecord,
    EnrollmentRecord,
    EnrollOutcome,
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
    TokenRecord,
)


class MasterStore(Protocol):
    """Masters: who may sign orders (``masters`` feature, the handshake)."""

    @abstractmethod
    async def enroll_master(self, name: str, public_key: str, now: float) -> MasterRecord:
        """Enrol (or re-enrol, idempotently) a master. Raises StoreConflict if the name has another key."""

    @abstractmethod
    async def master(self, master_id: str) -> MasterRecord | None: ...

    @abstractmethod
    async def master_by_name(self, name: str) -> MasterRecord | None: ...

    @abstractmethod
    async def rekey_master(self, master_id: str, public_key: str) -> MasterRecord | None:
        """Move a master to a new key: a record under the new id (same name and created), its scenarios and access
        tokens owned by it, the old record gone. None if ``master_id`` is unknown.

        Raises:
            StoreConflict: the new key is enrolled already.
        """

    @abstractmethod
    async def remove_master(self, name: str) -> MasterRecord | None:
        """Forget the master enrolled under ``name`` and its access tokens (its scenarios are the caller's
        business); None if unknown."""


class JobStore(Protocol):
    """Stored jobs of each master (``jobs`` feature)."""

    @abstractmethod
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
        """Store a job, or replace it (``created`` kept). Its ``version`` is the one given (the master chose and
        signed it), else the stored one + 1; ``statement`` and ``signature`` are kept as given, or cleared."""

    @abstractmethod
    async def job(self, owner: str, name: str) -> JobRecord | None: ...

    @abstractmethod
    async def jobs(self, owner: str) -> list[JobRecord]:
        """The owner's jobs, by name."""

    @abstractmethod
    async def delete_job(self, owner: str, name: str) -> bool: ...


class TokenStore(Protocol):
    """REST and dashboard access tokens (``tokens`` feature, REST auth)."""

    @abstractmethod
    async def put_token(self, token: TokenRecord) -> None:
        """Store a new token. Raises StoreConflict if a token with that id exists."""

    @abstractmethod
    async def token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    async def tokens(self, owner: str) -> list[TokenRecord]:
        """The owner's tokens (revoked ones too), oldest first (by created, then id)."""

    @abstractmethod
    async def revoke_token(self, owner: str, token_id: str) -> bool:
        """Mark the owner's token revoked and erase its sealed key; False if the owner has no such token."""

    @abstractmethod
    async def renew_token(self, owner: str, token_id: str, delegation: dict[str, Any]) -> bool:
        """Replace the delegation of the owner's live (not revoked) token; False if there is no such token."""


class PlanStore(Protocol):
    """Plans and the lease that lets one replica at a time run each (``plans`` feature)."""

    @abstractmethod
    async def put_plan(self, plan: PlanRecord) -> None:
        """Store a plan, or its new states (same id)."""

    @abstractmethod
    async def plan(self, plan_id: str) -> PlanRecord | None: ...

    @abstractmethod
    async def plans(self, scenario_id: str) -> list[PlanRecord]:
        """The scenario's plans, oldest first."""

    @abstractmethod
    async def open_plans(self) -> list[PlanRecord]:
        """Plans not done yet, of every scenario (to resume after a restart)."""

    @abstractmethod
    async def claim_plan(self, plan_id: str, owner: str, now: float, ttl: float) -> bool:
        """Take or renew the lease on running a plan, so that one replica at a time runs it: True (and the lease
        is ``owner``'s until ``now + ttl``) if it was free, expired or ``owner``'s already; False while another
        owner holds it. An implementation may expire leases on its own clock rather than ``now``."""

    @abstractmethod
    async def release_plan(self, plan_id: str, owner: str) -> None:
        """Give the lease up (the plan is done, or its runner stopped), unless another owner holds it by now."""


class MessageStore(Protocol):
    """Scenario messages, one mailbox per machine (``messaging`` feature)."""

    @abstractmethod
    async def post_message(
        self, scenario_id: str, machine_ids: list[str], topic: str, sender: str, data: bytes, now: float
    ) -> None:
        """Append a message to each machine's mailbox (in one go)."""

    @abstractmethod
    async def messages_after(self, machine_id: str, after: int, topic: str, limit: int) -> list[MessageRecord]:
        """The machine's messages numbered above ``after`` (of ``topic`` only, unless it is '')."""


class KvStore(Protocol):
    """Futures: per-scenario keys with a TTL (``kv`` feature, plan steps that wait on keys)."""

    @abstractmethod
    async def kv_set(self, scenario_id: str, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Set a key for ``ttl`` seconds from ``now`` (None: no expiry)."""

    @abstractmethod
    async def kv_get(self, scenario_id: str, key: str, now: float) -> bytes | None:
        """The key's value, None when unset or expired."""


class BootReportStore(Protocol):
    """Boot-report replay memory, shared by every replica and kept across restarts, so a captured report is
    accepted once by the whole hub, not once per process (``server/boot.py``)."""

    @abstractmethod
    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        """Remember a verified boot report (by its MAC) until ``expires``: True the first time, False while it is
        remembered (a replay). Entries past their expiry are forgotten, so the memory stays bounded; an
        implementation may expire them on its own clock, ``expires - now`` seconds from now."""


class ScenarioStore(Protocol):
    """Scenarios of each master, created with their machines (``scenarios`` feature)."""

    @abstractmethod
    async def create_scenario(self, owner: str, name: str, machines: list[MachineSpec], now: float) -> ScenarioRecord:
        """Create a scenario and its machines atomically.

        Raises:
            StoreConflict: the owner already has a scenario of that name, or a machine key is already in use.
        """

    @abstractmethod
    async def scenarios(self, owner: str) -> list[ScenarioRecord]: ...

    @abstractmethod
    async def scenario_by_name(self, owner: str, name: str) -> ScenarioRecord | None: ...

    @abstractmethod
    async def scenario(self, scenario_id: str) -> ScenarioRecord | None: ...

    @abstractmethod
    async def add_machines(self, scenario_id: str, machines: list[MachineSpec]) -> bool:
        """Add machines to a scenario atomically (all or none); False if there is no such scenario.

        Raises:
            StoreConflict: a name is taken in the scenario, or a machine key is already in use.
        """

    @abstractmethod
    async def delete_scenario(self, scenario_id: str) -> list[str]:
        """Delete a scenario with its machines (revoking their keys), orders and events; returns machine ids."""


class CompositionStore(Protocol):
    """Compositions: stored jobs assigned to a scenario's ensembles (``compositions`` feature). The plays
    themselves are orders (``OrderStore``), one id per composition and machine."""

    @abstractmethod
    async def put_composition(self, record: CompositionRecord) -> bool:
        """Store (or replace, by id) a composition; False if its scenario is gone."""

    @abstractmethod
    async def compositions(self, scenario_id: str) -> list[CompositionRecord]:
        """The scenario's compositions, oldest first."""

    @abstractmethod
    async def remove_composition(self, scenario_id: str, composition_id: str) -> bool:
        """Forget a composition (its plays stay, as orders); False if the scenario has no such composition."""


class EnrollmentStore(Protocol):
    """Enrollment tokens of a scenario and the machines that join with them (``enrollment`` feature)."""

    @abstractmethod
    async def put_enrollment(self, record: EnrollmentRecord) -> bool:
        """Store a new token; False if its scenario is gone.

        Raises:
            StoreConflict: a token of that id exists.
        """

    @abstractmethod
    async def enrollments(self, scenario_id: str) -> list[EnrollmentRecord]:
        """The scenario's tokens, oldest first, each with its registrations."""

    @abstractmethod
    async def revoke_enrollment(self, scenario_id: str, token_id: str) -> bool:
        """Refuse every later join with the token; False if the scenario has no such token."""

    @abstractmethod
    async def enroll_machine(
        self, scenario_id: str, token_id: str, machine: MachineSpec, registration: dict[str, Any], now: float
    ) -> EnrollOutcome:
        """Add the machine and count one use of the token, atomically across replicas: ENROLLED, or why not
        (nothing is added then).

        Raises:
            StoreConflict: the scenario has a machine of that name, or the key is in use.
        """


class MachineStore(Protocol):
    """Machines: keys, presence, facts and proofs (``scenarios`` and ``orders`` features, sessions)."""

    @abstractmethod
    async def machine(self, machine_id: str) -> MachineRecord | None: ...

    @abstractmethod
    async def machines(self, scenario_id: str) -> list[MachineRecord]: ...

    @abstractmethod
    async def update_machine(
        self,
        machine_id: str,
        *,
        status: MachineStatus,
        last_seen: float,
        facts: dict[str, Any] | None = None,
        ips: list[str] | None = None,
        ready_proof: dict[str, Any] | None = None,
    ) -> None: ...

    @abstractmethod
    async def reset_presence(self, now: float) -> int:
        """At hub start-up: no machine is connected yet, whatever the store said before a crash."""

    @abstractmethod
    async def delete_machine(self, machine_id: str) -> bool:
        """Remove one machine from its scenario (revoking its key); its past orders and results stay.
        False if there was no such machine."""

    @abstractmethod
    async def rotate_machine_key(
        self, machine_id: str, public_key: str, report_key: str, proof: dict[str, Any] | None = None
    ) -> MachineRecord | None:
        """Give the machine a new key (its id stays); the old one joins ``former_keys`` and ``proof`` (the signed
        result announcing the new key) joins ``key_proofs``. None if unknown."""

    @abstractmethod
    async def certify_machine(self, machine_id: str, certificate: dict[str, Any]) -> bool:
        """Replace the machine's certificate (a master endorsing it with a new key). False if unknown."""


class OrderStore(Protocol):
    """Orders, their file chunks and results (``orders`` and ``plans`` features, delivery)."""

    @abstractmethod
    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        """Queue an order (and a file's chunks). Raises StoreConflict for an id seen before."""

    @abstractmethod
    async def order(self, order_id: str) -> OrderRecord | None: ...

    @abstractmethod
    async def order_chunks(self, order_id: str) -> list[bytes]: ...

    @abstractmethod
    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]: ...

    @abstractmethod
    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        """Orders not yet acknowledged by the machine, oldest first: what to (re)deliver when it connects."""

    @abstractmethod
    async def queued_count(self, machine_id: str) -> int:
        """How many orders wait for the machine (cheap: checked on every submit)."""

    @abstractmethod
    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        """Move an order forward (queued -> delivered -> running) if it is in one of
        ``protocol.orders.sources(state)``, checked and set atomically; False if unknown, already there or further,
        or if ``state`` is not delivered or running (final states come with ``store_result``)."""

    @abstractmethod
    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        """Record the signed result and its final state; False if the order already had a final result. Only a
        result makes an order final, so "no result yet" is "in one of ``protocol.orders.sources(state)``"."""


class EventStore(Protocol):
    """Each scenario's event log (the event bus, event streams)."""

    @abstractmethod
    async def append_event(
        self, scenario_id: str, kind: str, machine: str, data: dict[str, Any], now: float
    ) -> EventRecord:
        """Append to the scenario's log; cursors count 1, 2, 3... per scenario."""

    @abstractmethod
    async def events_after(self, scenario_id: str, cursor: int, limit: int) -> list[EventRecord]: ...

    @abstractmethod
    async def last_cursor(self, scenario_id: str) -> int: ...
