"""What the hub keeps: the records the store reads and writes, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from protocol import CrcError, OrderState, PublicKey


class StoreError(CrcError):
    """The store could not do what was asked (a bug, a full disk, a broken backend)."""


class StoreConflict(StoreError):
    """The record already exists (a scenario name, a machine key, an order id)."""


class StoredRecordError(StoreError):
    """A stored record cannot be read back (``server.store.codec``): not msgpack, not a map, or missing a field
    its class requires. The data was written by something else, or a required field was added to a record without
    a default: give it one, so records stored before it still read."""

    def __init__(self, record: str, problem: str, *, missing: list[str] | None = None) -> None:
        super().__init__(f"a stored {record} cannot be read: {problem}")
        self.record = record
        self.missing = missing or []


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


class EnrollOutcome(StrEnum):
    """What became of a machine joining with an enrollment token (``EnrollmentStore.enroll_machine``)."""

    ENROLLED = "enrolled"
    NO_TOKEN = "no_token"  # no such token in that scenario (or no such scenario)
    REVOKED = "revoked"
    EXPIRED = "expired"
    USED_UP = "used_up"  # as many machines joined as the token allows


@dataclass(frozen=True)
class CompositionRecord:
    """A stored job assigned to the machines a target selects (``protocol.compositions``): the master-signed
    composition as sent (its wire form), kept until unassigned or its scenario is deleted."""

    id: str
    scenario_id: str
    composition: dict[str, Any]
    created: float


@dataclass(frozen=True)
class EnrollmentRecord:
    """An enrollment token as the hub keeps it: the master-signed claims (``protocol.enrollment``, never the
    token's secret) and the registration of every machine that joined with it (``used`` of ``uses``)."""

    id: str
    scenario_id: str
    claims: dict[str, Any]
    signature: bytes
    uses: int
    expires: float
    created: float
    revoked: bool = False
    registrations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def used(self) -> int:
        return len(self.registrations)
