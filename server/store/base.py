"""The store interface: everything the hub must not lose on restart.

Implementations: ``SqliteStore`` (embedded default, one file in the data dir). A Redis implementation for
several hub replicas passes the same contract tests (``tests/server/test_store_contract.py``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import CrcError, OrderState, PublicKey


class StoreError(CrcError):
    """The store could not do what was asked (a bug, a full disk, a broken backend)."""


class StoreConflict(StoreError):
    """The record already exists (a scenario name, a machine key, an order id)."""


class MachineStatus(StrEnum):
    OFFLINE = "offline"
    CONNECTED = "connected"
    READY = "ready"


@dataclass(frozen=True)
class MasterRecord:
    id: str
    name: str
    public_key: str
    created: float


@dataclass(frozen=True)
class ScenarioRecord:
    id: str
    owner: str
    name: str
    created: float


@dataclass(frozen=True)
class MachineSpec:
    """A machine as a master declares it: only its public key, never the private one."""

    name: str
    os: str
    role: str
    public_key: str
    report_key: str = ""  # hex; authenticates the startup script's boot reports (protocol.boot)
    labels: dict[str, str] = field(default_factory=dict)  # for targeting: label:KEY=VALUE
    certificate: dict[str, Any] | None = None  # the master's signed word on it (protocol.certificates)

    @property
    def id(self) -> str:
        return PublicKey.from_text(self.public_key).id


@dataclass(frozen=True)
class MachineRecord:
    id: str
    scenario_id: str
    name: str
    os: str
    role: str
    public_key: str
    status: MachineStatus
    facts: dict[str, Any] = field(default_factory=dict)
    ips: list[str] = field(default_factory=list)
    last_seen: float | None = None
    report_key: str = ""  # never shown: see MachineSpec
    former_keys: list[str] = field(default_factory=list)  # keys it had before rotations, oldest first
    labels: dict[str, str] = field(default_factory=dict)
    # What lets a master check this record without believing the hub (protocol.certificates): its certificate,
    # the signed results of its key rotations (oldest first) and its signed facts (``at``, ``signature``).
    certificate: dict[str, Any] | None = None
    key_proofs: list[dict[str, Any]] = field(default_factory=list)
    ready_proof: dict[str, Any] | None = None

    def proofs_wire(self) -> dict[str, Any]:
        return {"certificate": self.certificate, "key_proofs": self.key_proofs, "ready_proof": self.ready_proof}

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "os": self.os, "role": self.role, "public_key": self.public_key,
            "status": self.status.value, "facts": self.facts, "ips": self.ips, "last_seen": self.last_seen,
            "former_keys": self.former_keys, "labels": self.labels,
        }  # fmt: skip


@dataclass(frozen=True)
class OrderRecord:
    """An order as the hub tracks it; ``result`` is the daemon-signed result once there is one."""

    id: str
    scenario_id: str
    machine_id: str
    kind: str
    order: dict[str, Any]
    state: OrderState
    created: float
    updated: float
    result: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id, "machine": self.machine_id, "kind": self.kind, "state": self.state.value,
            "created": self.created, "updated": self.updated, "order": self.order, "result": self.result,
        }  # fmt: skip


@dataclass(frozen=True)
class JobRecord:
    """A stored job: a named script of one master; ``version`` counts its replacements.

    ``statement`` and ``signature`` are the master's signed ``protocol.jobs.JobStatement`` of this version (its
    ``unsigned_wire``, and the signature apart); a job stored before jobs were signed has neither, and masters
    refuse to run it until it is added again.
    """

    owner: str
    name: str
    shell: str
    script: str
    created: float
    updated: float
    version: int = 1
    statement: dict[str, Any] | None = None
    signature: bytes = b""

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name, "shell": self.shell, "script": self.script, "created": self.created,
            "updated": self.updated, "version": self.version, "statement": self.statement,
            "signature": self.signature, "signed": self.statement is not None,
        }  # fmt: skip


@dataclass(frozen=True)
class TokenRecord:
    """An access token for the REST API and dashboard. Only a hash of its secret half is kept; an operator
    token also keeps its master-signed delegation and the delegate signing key sealed under the secret, so the
    hub can sign orders for it only while the token is presented."""

    id: str  # the public half of the token (what lists and revocation name)
    owner: str  # the master id that made it
    role: str  # "viewer" or "operator"
    scenario: str  # the scenario name it is limited to; "" = every scenario of its owner
    secret_hash: str  # SHA-256 hex of the secret half
    created: float
    expires: float  # unix time; 0 = never
    label: str = ""
    delegation: dict[str, Any] | None = None
    sealed_key: bytes = b""
    revoked: bool = False

    def to_wire(self) -> dict[str, Any]:
        """What lists show: never the secret's hash, the sealed key or the delegation."""
        return {
            "id": self.id, "role": self.role, "scenario": self.scenario, "created": self.created,
            "expires": self.expires, "label": self.label, "revoked": self.revoked,
        }  # fmt: skip


@dataclass(frozen=True)
class PlanRecord:
    """A plan the hub runs: its spec (``protocol.plans`` format), the master-signed orders of each step, and the
    state of each step (what the engine needs to resume after a restart)."""

    id: str
    scenario_id: str
    name: str
    spec: dict[str, Any]
    orders: dict[str, list[dict[str, Any]]]
    states: dict[str, str]
    created: float
    updated: float
    done: bool = False
    started: dict[str, float] = field(default_factory=dict)  # when each step became ready (waiting included)


@dataclass(frozen=True)
class MessageRecord:
    """A scenario message in one machine's mailbox; ``seq`` orders that mailbox."""

    seq: int
    topic: str
    sender: str  # a machine name, or "" for the master
    data: bytes
    ts: float

    def to_wire(self) -> dict[str, Any]:
        return {"seq": self.seq, "topic": self.topic, "sender": self.sender, "data": self.data, "ts": self.ts}


@dataclass(frozen=True)
class EventRecord:
    scenario_id: str
    cursor: int
    ts: float
    kind: str
    machine: str
    data: dict[str, Any]


class Store(ABC):
    """Persistent state of one hub (or of a group of replicas sharing it)."""

    # masters
    @abstractmethod
    async def enroll_master(self, name: str, public_key: str, now: float) -> MasterRecord:
        """Enrol (or re-enrol, idempotently) a master. Raises StoreConflict if the name has another key."""

    @abstractmethod
    async def master(self, master_id: str) -> MasterRecord | None: ...

    @abstractmethod
    async def rekey_master(self, master_id: str, public_key: str) -> MasterRecord | None:
        """Move a master to a new key: a record under the new id (same name and created), its scenarios and access
        tokens owned by it, the old record gone. None if ``master_id`` is unknown.

        Raises:
            StoreConflict: the new key is enrolled already.
        """

    @abstractmethod
    async def master_by_name(self, name: str) -> MasterRecord | None: ...

    @abstractmethod
    async def remove_master(self, name: str) -> MasterRecord | None:
        """Forget the master enrolled under ``name`` and its access tokens (its scenarios are the caller's
        business); None if unknown."""

    # stored jobs
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

    # access tokens
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

    # plans
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

    # scenario messages
    @abstractmethod
    async def post_message(
        self, scenario_id: str, machine_ids: list[str], topic: str, sender: str, data: bytes, now: float
    ) -> None:
        """Append a message to each machine's mailbox (in one go)."""

    @abstractmethod
    async def messages_after(self, machine_id: str, after: int, topic: str, limit: int) -> list[MessageRecord]:
        """The machine's messages numbered above ``after`` (of ``topic`` only, unless it is '')."""

    # futures (per-scenario keys)
    @abstractmethod
    async def kv_set(self, scenario_id: str, key: str, value: bytes, ttl: float | None, now: float) -> None:
        """Set a key for ``ttl`` seconds from ``now`` (None: no expiry)."""

    @abstractmethod
    async def kv_get(self, scenario_id: str, key: str, now: float) -> bytes | None:
        """The key's value, None when unset or expired."""

    # boot-report replay memory: shared by every replica and kept across restarts, so a captured report is
    # accepted once by the whole hub, not once per process
    @abstractmethod
    async def first_boot_report(self, machine_id: str, signature: str, expires: float, now: float) -> bool:
        """Remember a verified boot report (by its MAC) until ``expires``: True the first time, False while it is
        remembered (a replay). Entries past their expiry are forgotten, so the memory stays bounded; an
        implementation may expire them on its own clock, ``expires - now`` seconds from now."""

    # scenarios and machines
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
    async def delete_scenario(self, scenario_id: str) -> list[str]:
        """Delete a scenario with its machines (revoking their keys), orders and events; returns machine ids."""

    @abstractmethod
    async def delete_machine(self, machine_id: str) -> bool:
        """Remove one machine from its scenario (revoking its key); its past orders and results stay.
        False if there was no such machine."""

    @abstractmethod
    async def machine(self, machine_id: str) -> MachineRecord | None: ...

    @abstractmethod
    async def rotate_machine_key(
        self, machine_id: str, public_key: str, report_key: str, proof: dict[str, Any] | None = None
    ) -> MachineRecord | None:
        """Give the machine a new key (its id stays); the old one joins ``former_keys`` and ``proof`` (the signed
        result announcing the new key) joins ``key_proofs``. None if unknown."""

    @abstractmethod
    async def certify_machine(self, machine_id: str, certificate: dict[str, Any]) -> bool:
        """Replace the machine's certificate (a master endorsing it with a new key). False if unknown."""

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

    # orders
    @abstractmethod
    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        """Queue an order (and a file's chunks). Raises StoreConflict for an id seen before."""

    @abstractmethod
    async def order(self, order_id: str) -> OrderRecord | None: ...

    @abstractmethod
    async def order_chunks(self, order_id: str) -> list[bytes]: ...

    @abstractmethod
    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        """Orders not yet acknowledged by the machine, oldest first: what to (re)deliver when it connects."""

    @abstractmethod
    async def queued_count(self, machine_id: str) -> int:
        """How many orders wait for the machine (cheap: checked on every submit)."""

    @abstractmethod
    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        """Move an order forward (queued -> delivered -> running); False if unknown, already there or further,
        or if ``state`` is not delivered or running (final states come with ``store_result``)."""

    @abstractmethod
    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        """Record the signed result and its final state; False if the order already had a final result."""

    @abstractmethod
    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]: ...

    # events
    @abstractmethod
    async def append_event(
        self, scenario_id: str, kind: str, machine: str, data: dict[str, Any], now: float
    ) -> EventRecord:
        """Append to the scenario's log; cursors count 1, 2, 3... per scenario."""

    @abstractmethod
    async def events_after(self, scenario_id: str, cursor: int, limit: int) -> list[EventRecord]: ...

    @abstractmethod
    async def last_cursor(self, scenario_id: str) -> int: ...

    @abstractmethod
    async def close(self) -> None: ...
