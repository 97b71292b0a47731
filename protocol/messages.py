"""Message types and their typed bodies.

Every body is a frozen dataclass registered for one ``MsgType``; ``body_from_wire`` turns the decoded msgpack map
into that dataclass, checking every field's type, so code past the decoder only ever sees typed messages.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

from protocol.errors import ErrorCode, ProtocolError


class MsgType(StrEnum):
    # handshake (not sealed) and the first sealed frame
    CHALLENGE = "challenge"
    AUTH = "auth"
    WELCOME = "welcome"
    # any direction
    ERROR = "error"
    PING = "ping"
    PONG = "pong"
    RESPONSE = "response"
    # master -> hub requests (answered by RESPONSE or ERROR with reply_to set)
    SCENARIO_CREATE = "scenario.create"
    SCENARIO_LIST = "scenario.list"
    SCENARIO_SHOW = "scenario.show"
    SCENARIO_DELETE = "scenario.delete"
    MACHINE_ADD = "machine.add"
    MACHINE_REVOKE = "machine.revoke"
    MACHINE_CERTIFY = "machine.certify"
    DIST_PUT = "dist.put"
    MASTER_REKEY = "master.rekey"
    JOB_PUT = "job.put"
    JOB_LIST = "job.list"
    JOB_SHOW = "job.show"
    JOB_DELETE = "job.delete"
    COMPOSITION_ASSIGN = "composition.assign"
    COMPOSITION_UNASSIGN = "composition.unassign"
    COMPOSITION_LIST = "composition.list"
    COMPOSITION_PERFORMANCES = "composition.performances"
    KV_SET = "kv.set"
    KV_GET = "kv.get"
    KV_WAIT = "kv.wait"
    PLAN_SUBMIT = "plan.submit"
    PLAN_SHOW = "plan.show"
    PLAN_LIST = "plan.list"
    PLAN_CANCEL = "plan.cancel"
    MSG_SEND = "msg.send"
    MSG_RECV = "msg.recv"
    ENROLL_CREATE = "enroll.create"
    ENROLL_LIST = "enroll.list"
    ENROLL_REVOKE = "enroll.revoke"
    TOKEN_CREATE = "token.create"
    TOKEN_LIST = "token.list"
    TOKEN_REVOKE = "token.revoke"
    TOKEN_RENEW = "token.renew"
    ORDER_SUBMIT = "order.submit"
    ORDER_CANCEL = "order.cancel"
    RESULTS_QUERY = "results.query"
    EVENTS_SUBSCRIBE = "events.subscribe"
    EVENTS_UNSUBSCRIBE = "events.unsubscribe"
    # hub -> master
    EVENT = "event"
    # hub <-> daemon
    DELIVER = "deliver"
    FILE_CHUNK = "file.chunk"
    CANCEL = "cancel"
    RESULT_ACK = "result.ack"
    RECONNECT = "reconnect"
    SYSTEM_READY = "system.ready"
    ORDER_ACK = "order.ack"
    ORDER_STARTED = "order.started"
    OUTPUT = "output"
    RESULT = "result"


@dataclass(frozen=True)
class Body:
    """Base of every message body."""

    TYPE: ClassVar[MsgType]

    def to_wire(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _, _ in _schema(type(self))}


@dataclass(frozen=True)
class Challenge(Body):
    TYPE = MsgType.CHALLENGE
    nonce: bytes
    hub_id: str
    ephemeral_key: bytes
    versions: list[int]


@dataclass(frozen=True)
class Auth(Body):
    TYPE = MsgType.AUTH
    client_id: str
    role: str
    ephemeral_key: bytes
    signature: bytes
    version: int


@dataclass(frozen=True)
class Welcome(Body):
    TYPE = MsgType.WELCOME
    session_id: str
    heartbeat_interval: float
    dead_after: float
    max_frame: int
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Error(Body):
    TYPE = MsgType.ERROR
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Ping(Body):
    TYPE = MsgType.PING


@dataclass(frozen=True)
class Pong(Body):
    TYPE = MsgType.PONG


@dataclass(frozen=True)
class Response(Body):
    TYPE = MsgType.RESPONSE
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioCreate(Body):
    """``machines``: ``[{"name", "os", "role", "public_key"}]``; only public keys ever reach the hub."""

    TYPE = MsgType.SCENARIO_CREATE
    name: str
    machines: list[dict[str, Any]]


@dataclass(frozen=True)
class ScenarioList(Body):
    TYPE = MsgType.SCENARIO_LIST


@dataclass(frozen=True)
class ScenarioShow(Body):
    """One page of a scenario's machines, by name, after ``after`` (the answer says whether ``more`` follow)."""

    TYPE = MsgType.SCENARIO_SHOW
    name: str
    after: str = ""
    limit: int = 0  # 0: the hub's page size


@dataclass(frozen=True)
class ScenarioDelete(Body):
    TYPE = MsgType.SCENARIO_DELETE
    name: str


@dataclass(frozen=True)
class MasterRekey(Body):
    """Move the asking master (its scenarios, its name) to a new key. ``proof`` is the new key's signature over
    ``master_rekey_payload(old id, new key)``, so nobody can move a master to a key they do not hold."""

    TYPE = MsgType.MASTER_REKEY
    public_key: str
    proof: bytes


def master_rekey_payload(old_id: str, new_public_key: str) -> bytes:
    return b"crc-master-rekey-v1\n" + old_id.encode() + b"\n" + new_public_key.encode()


@dataclass(frozen=True)
class JobPut(Body):
    """Keep (or replace) a named script on the hub, for this master: a *stored job*, as the master signed it
    (``protocol.jobs.JobStatement``: ``statement`` is its ``unsigned_wire``)."""

    TYPE = MsgType.JOB_PUT
    statement: dict[str, Any]
    signature: bytes


@dataclass(frozen=True)
class JobList(Body):
    TYPE = MsgType.JOB_LIST


@dataclass(frozen=True)
class JobShow(Body):
    TYPE = MsgType.JOB_SHOW
    name: str


@dataclass(frozen=True)
class JobDelete(Body):
    TYPE = MsgType.JOB_DELETE
    name: str


@dataclass(frozen=True)
class CompositionAssign(Body):
    """Assign a stored job to the machines a target selects, now and as they join: the master-signed
    ``protocol.compositions.Composition`` (its wire form). Each member plays it once."""

    TYPE = MsgType.COMPOSITION_ASSIGN
    scenario: str
    composition: dict[str, Any]


@dataclass(frozen=True)
class CompositionUnassign(Body):
    """No member that has not played the composition yet gets it (plays not delivered yet are cancelled)."""

    TYPE = MsgType.COMPOSITION_UNASSIGN
    scenario: str
    composition_id: str


@dataclass(frozen=True)
class CompositionList(Body):
    TYPE = MsgType.COMPOSITION_LIST
    scenario: str


@dataclass(frozen=True)
class CompositionPerformances(Body):
    """A composition with each member's play: its order and the daemon-signed result, or none yet."""

    TYPE = MsgType.COMPOSITION_PERFORMANCES
    scenario: str
    composition_id: str


@dataclass(frozen=True)
class KvSet(Body):
    """Set a future: a per-scenario key (``ttl`` seconds, 0: no expiry). A machine may set only ``NAME/...``.
    ``statement``: the writer's signed ``protocol.signed_values.SignedValue`` of this key and value."""

    TYPE = MsgType.KV_SET
    scenario: str
    key: str
    value: bytes
    ttl: float = 0.0
    statement: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KvGet(Body):
    TYPE = MsgType.KV_GET
    scenario: str
    key: str


@dataclass(frozen=True)
class KvWait(Body):
    """Answered the moment the key is set (at once if it is), or with a ``timeout`` error."""

    TYPE = MsgType.KV_WAIT
    scenario: str
    key: str
    timeout: float


@dataclass(frozen=True)
class EnrollCreate(Body):
    """Register an enrollment token the master issued (``protocol.enrollment``): its signed claims only; the
    token's secret never leaves the master and the machines."""

    TYPE = MsgType.ENROLL_CREATE
    scenario: str
    claims: dict[str, Any]
    signature: bytes


@dataclass(frozen=True)
class EnrollList(Body):
    """The scenario's enrollment tokens with the registrations of the machines that joined with each."""

    TYPE = MsgType.ENROLL_LIST
    scenario: str


@dataclass(frozen=True)
class EnrollRevoke(Body):
    TYPE = MsgType.ENROLL_REVOKE
    scenario: str
    token_id: str


@dataclass(frozen=True)
class TokenCreate(Body):
    """Register an access token the master made (``protocol.tokens``): the hub keeps only the secret's hash and,
    for operators, the master-signed delegation and the delegate key sealed under the secret."""

    TYPE = MsgType.TOKEN_CREATE
    token_id: str
    role: str  # viewer | operator
    scenario: str  # "" = every scenario of this master
    expires: float  # 0 = never
    secret_hash: str
    label: str = ""
    delegation: dict[str, Any] | None = None
    sealed_key: bytes = b""


@dataclass(frozen=True)
class TokenList(Body):
    TYPE = MsgType.TOKEN_LIST


@dataclass(frozen=True)
class TokenRevoke(Body):
    TYPE = MsgType.TOKEN_REVOKE
    token_id: str


@dataclass(frozen=True)
class TokenRenew(Body):
    """Operator tokens' delegations signed anew by their master (``protocol.delegation.Delegation.renewed``): same
    token, delegate key, scope and token expiry, a fresh short lifetime."""

    TYPE = MsgType.TOKEN_RENEW
    delegations: list[dict[str, Any]]


@dataclass(frozen=True)
class PlanSubmit(Body):
    """A plan for the hub to run: its spec (``protocol.plans``) and, per step, the orders the master signed for
    each target machine (the hub queues a step's orders once the steps it depends on are done)."""

    TYPE = MsgType.PLAN_SUBMIT
    scenario: str
    plan_id: str
    spec: dict[str, Any]
    orders: dict[str, Any]


@dataclass(frozen=True)
class PlanShow(Body):
    TYPE = MsgType.PLAN_SHOW
    scenario: str
    plan_id: str


@dataclass(frozen=True)
class PlanList(Body):
    TYPE = MsgType.PLAN_LIST
    scenario: str


@dataclass(frozen=True)
class PlanCancel(Body):
    TYPE = MsgType.PLAN_CANCEL
    scenario: str
    plan_id: str


@dataclass(frozen=True)
class MsgSend(Body):
    """A named message to the machines a target names (masters and machines alike may send); ``statement``: the
    sender's signed ``protocol.signed_values.SignedValue`` of this topic, target and data."""

    TYPE = MsgType.MSG_SEND
    scenario: str
    target: str
    topic: str
    data: bytes
    statement: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MsgRecv(Body):
    """A machine asks for its next message after ``after`` (of ``topic``, or any): answered when there is one."""

    TYPE = MsgType.MSG_RECV
    scenario: str
    topic: str
    after: int
    timeout: float


@dataclass(frozen=True)
class DistPut(Body):
    """Add a file the master sent (``upload``: its SHA-256, chunks sent first) to the hub's ``/v1/dist/``, so that
    machines can fetch the daemon build and lock the master chose; they check the hashes the master signed."""

    TYPE = MsgType.DIST_PUT
    name: str
    upload: str


@dataclass(frozen=True)
class MachineCertify(Body):
    """Replace machines' certificates (``protocol.certificates``) with ones this master endorsed anew: after a
    master key rotation, or to adopt machines of a scenario made before certificates existed."""

    TYPE = MsgType.MACHINE_CERTIFY
    scenario: str
    certificates: list[dict[str, Any]]


@dataclass(frozen=True)
class MachineAdd(Body):
    """Add machines to an existing scenario, declared as ``ScenarioCreate``'s are (public keys only, each with the
    master's certificate)."""

    TYPE = MsgType.MACHINE_ADD
    scenario: str
    machines: list[dict[str, Any]]


@dataclass(frozen=True)
class MachineRevoke(Body):
    """Remove one machine from a scenario: its key stops working and its sessions close on every replica."""

    TYPE = MsgType.MACHINE_REVOKE
    scenario: str
    machine: str


@dataclass(frozen=True)
class OrderSubmit(Body):
    """A master-signed order (see ``protocol.orders``).

    A file's content travels ahead of it as FILE_CHUNK messages whose ``order_id`` is the upload id (the content's
    SHA-256); ``upload`` names that upload, so one upload serves the orders of every target machine.
    ``last_use``: no later order names it, so the hub frees it once this one is handled.
    """

    TYPE = MsgType.ORDER_SUBMIT
    order: dict[str, Any]
    upload: str = ""
    last_use: bool = False


@dataclass(frozen=True)
class OrderCancel(Body):
    TYPE = MsgType.ORDER_CANCEL
    scenario: str
    order_id: str


@dataclass(frozen=True)
class ResultsQuery(Body):
    """Orders and results of a scenario (all, or ``order_ids``), a page at a time from the ``skip``-th on: the
    answer holds as many as fit in a frame and ``next`` (the ``skip`` of the next page, or -1 at the end)."""

    TYPE = MsgType.RESULTS_QUERY
    scenario: str
    order_ids: list[str] = field(default_factory=list)
    skip: int = 0


@dataclass(frozen=True)
class EventsSubscribe(Body):
    """Replay the scenario's events numbered above ``after`` then stream new ones (and live output)."""

    TYPE = MsgType.EVENTS_SUBSCRIBE
    scenario: str
    after: int = 0


@dataclass(frozen=True)
class EventsUnsubscribe(Body):
    TYPE = MsgType.EVENTS_UNSUBSCRIBE
    scenario: str


@dataclass(frozen=True)
class Event(Body):
    TYPE = MsgType.EVENT
    scenario: str
    cursor: int
    kind: str
    machine: str
    ts: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Deliver(Body):
    """An order for the daemon; a file order is followed by ``chunk_count`` FILE_CHUNK messages."""

    TYPE = MsgType.DELIVER
    order: dict[str, Any]


@dataclass(frozen=True)
class FileChunk(Body):
    """One piece of a file: master -> hub (``order_id`` is the upload id) and hub -> daemon (the order's id)."""

    TYPE = MsgType.FILE_CHUNK
    order_id: str
    index: int
    data: bytes


@dataclass(frozen=True)
class Cancel(Body):
    TYPE = MsgType.CANCEL
    order_id: str


@dataclass(frozen=True)
class ResultAck(Body):
    TYPE = MsgType.RESULT_ACK
    order_id: str


@dataclass(frozen=True)
class Reconnect(Body):
    """Hub -> daemon: close this session after ``after`` seconds and connect again (through the load balancer,
    so to another replica when this one is draining or shedding load)."""

    TYPE = MsgType.RECONNECT
    after: float
    reason: str


@dataclass(frozen=True)
class SystemReady(Body):
    """``signature``: the machine's over ``protocol.certificates.ReadyStatement(scenario, machine, facts, at)``, so
    a master can use its addresses without believing the hub."""

    TYPE = MsgType.SYSTEM_READY
    facts: dict[str, Any]
    daemon_version: str
    at: float = 0.0
    signature: bytes = b""


@dataclass(frozen=True)
class OrderAck(Body):
    TYPE = MsgType.ORDER_ACK
    order_id: str


@dataclass(frozen=True)
class OrderStarted(Body):
    TYPE = MsgType.ORDER_STARTED
    order_id: str


@dataclass(frozen=True)
class Output(Body):
    """A live chunk of a command's output; the hub adds ``machine`` when forwarding it to masters."""

    TYPE = MsgType.OUTPUT
    order_id: str
    stream: str
    data: bytes
    machine: str = ""
    sealed: bool = False  # ``data`` is sealed to the master (``protocol.sealed_orders.seal_output``)


@dataclass(frozen=True)
class Result(Body):
    """A daemon-signed result (see ``protocol.orders.SignedResult``)."""

    TYPE = MsgType.RESULT
    result: dict[str, Any]


BODY_TYPES: dict[MsgType, type[Body]] = {
    cls.TYPE: cls
    for cls in (
        Challenge, Auth, Welcome, Error, Ping, Pong, Response, ScenarioCreate, ScenarioList, ScenarioShow,
        ScenarioDelete, MachineAdd, MachineRevoke, MasterRekey, JobPut, JobList, JobShow, JobDelete, CompositionAssign,
        CompositionUnassign, CompositionList, CompositionPerformances, KvSet, KvGet,
        KvWait, PlanSubmit, PlanShow, PlanList, PlanCancel, MsgSend, MsgRecv, EnrollCreate, EnrollList, EnrollRevoke,
        TokenCreate, TokenList, TokenRevoke, TokenRenew, OrderSubmit, OrderCancel,
        ResultsQuery, EventsSubscribe, EventsUnsubscribe, Event, Deliver, FileChunk, Cancel, ResultAck, Reconnect,
        SystemReady, OrderAck, OrderStarted, Output, Result, MachineCertify, DistPut,
    )
}  # fmt: skip

B = TypeVar("B", bound=Body)


def fits_annotation(value: Any, annotation: Any) -> bool:
    """Whether a decoded msgpack or JSON value fits a field annotation (lists deeply, dicts by their keys only; an
    int fits a float, as JSON has one number type). Message bodies and event payloads are checked by it."""
    if annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(fits_annotation(value, arg) for arg in get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is list:
        (item,) = get_args(annotation)
        return isinstance(value, list) and all(fits_annotation(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def body_from_wire(msg_type: MsgType, raw: Any) -> Body:
    """Build the typed body for ``msg_type`` from a decoded map.

    Raises:
        ProtocolError: BAD_FIELD if a field is missing or of the wrong type. Fields this side does not know are
            ignored, so a newer peer can add optional fields without breaking older ones.
    """
    cls = BODY_TYPES[msg_type]
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{msg_type.value} body must be a map", type=msg_type.value)
    values: dict[str, Any] = {}
    for name, annotation, required in _schema(cls):
        if name not in raw:
            if required:
                raise ProtocolError(ErrorCode.BAD_FIELD, f"{msg_type.value} lacks field {name!r}", field=name)
            continue
        value = raw[name]
        if not fits_annotation(value, annotation):
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"{msg_type.value}.{name} has the wrong type ({type(value).__name__})",
                field=name,
            )
        values[name] = float(value) if annotation is float else value
    return cls(**values)


_SCHEMAS: dict[type[Body], tuple[tuple[str, Any, bool], ...]] = {}


def _schema(cls: type[Body]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, annotation, required) per field; resolving annotations is slow, so once per class."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = get_type_hints(cls)
        schema = _SCHEMAS[cls] = tuple(
            (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        )
    return schema
