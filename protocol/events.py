"""The hub's event kinds and their typed payloads: one frozen dataclass per ``EventKind``.

The hub appends an event as ``(kind, machine, data)`` to a scenario's log; ``data`` is ``payload.to_wire()``, a plain
map stored (SQLite, Redis) and sent (WebSocket, REST, SSE) as it is. Consumers turn it back with ``from_wire``, so
a field is named in one place only and renaming it breaks the tests here rather than a watcher somewhere.

Parsing is tolerant where a newer or older hub may differ and strict where a reader would otherwise guess:

- keys a payload does not know are ignored (a newer hub may add fields);
- a field that not every emitter writes, or that older hubs did not write, is ``None`` when absent and left out of
  the wire again (``to_wire(from_wire(d)) == d`` for everything a hub stores);
- a missing required field or a value of the wrong type raises ``ProtocolError(BAD_FIELD)`` naming the kind and the
  field (``details``: ``kind``, ``field``); an unknown kind raises ``ProtocolError(UNKNOWN_TYPE)``. A client that
  must keep going past such an event (a watcher) catches it and still has the kind and the raw map.

``event_schema()`` describes the same payloads as JSON Schema, for the dashboard and other non-Python readers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, get_args, get_origin, get_type_hints

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import fits_annotation

__all__ = [
    "BootStep",
    "CommandCancelRequested",
    "CommandDelivered",
    "CommandFinished",
    "CommandQueued",
    "CommandStarted",
    "CompositionAssigned",
    "CompositionUnassigned",
    "EventKind",
    "EventPayload",
    "KvSet",
    "MachineConnected",
    "MachineEnrolled",
    "MachineKeyRotated",
    "MachineOffline",
    "MachineReady",
    "MachineRevoked",
    "MachinesAdded",
    "MessageSent",
    "PlanFinished",
    "PlanStep",
    "ScenarioCreated",
    "event_schema",
    "from_wire",
    "payload_type",
]


class EventKind(StrEnum):
    SCENARIO_CREATED = "scenario_created"
    MACHINES_ADDED = "machines_added"
    MACHINE_ENROLLED = "machine_enrolled"
    MACHINE_CONNECTED = "machine_connected"
    MACHINE_READY = "machine_ready"
    MACHINE_OFFLINE = "machine_offline"
    MACHINE_REVOKED = "machine_revoked"
    MACHINE_KEY_ROTATED = "machine_key_rotated"
    BOOT_STEP = "boot_step"
    COMMAND_QUEUED = "command_queued"
    COMMAND_DELIVERED = "command_delivered"
    COMMAND_STARTED = "command_started"
    COMMAND_FINISHED = "command_finished"
    COMMAND_CANCEL_REQUESTED = "command_cancel_requested"
    PLAN_STEP = "plan_step"
    PLAN_FINISHED = "plan_finished"
    KV_SET = "kv_set"
    MESSAGE_SENT = "message_sent"
    COMPOSITION_ASSIGNED = "composition_assigned"
    COMPOSITION_UNASSIGNED = "composition_unassigned"


# Marks a field that is ``None`` when its key is absent and is left out of the wire when ``None``: the stored map of
# an event that never had the key stays without it.
_OMITTED = "omitted_when_none"
_OMIT_WHEN_NONE = {_OMITTED: True}


@dataclass(frozen=True)
class EventPayload:
    """Base of every payload: ``KIND`` names the event kind it is the data of."""

    KIND: ClassVar[EventKind]

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {}
        for spec in _fields(type(self)):
            value = getattr(self, spec.name)
            if value is None and spec.omitted:
                continue
            wire[spec.name] = value
        return wire

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The constructor's arguments from a wire map (checked field by field)."""
        values: dict[str, Any] = {}
        for spec in _fields(cls):
            if spec.name not in data:
                if spec.required:
                    raise ProtocolError(
                        ErrorCode.BAD_FIELD,
                        f"{cls.KIND.value} event lacks field {spec.name!r}",
                        kind=cls.KIND.value,
                        field=spec.name,
                    )
                continue
            value = data[spec.name]
            if not fits_annotation(value, spec.annotation):
                raise ProtocolError(
                    ErrorCode.BAD_FIELD,
                    f"{cls.KIND.value} event field {spec.name!r} has the wrong type ({type(value).__name__})",
                    kind=cls.KIND.value,
                    field=spec.name,
                )
            values[spec.name] = value
        return values

    @classmethod
    def _json_schema(cls) -> dict[str, Any]:
        specs = _fields(cls)
        return {
            "title": cls.__name__,
            "type": "object",
            "properties": {s.name: _annotation_schema(s.annotation) for s in specs},
            "required": [s.name for s in specs if s.required],
            "additionalProperties": True,  # newer hubs may add fields; readers ignore them
        }


@dataclass(frozen=True)
class ScenarioCreated(EventPayload):
    KIND = EventKind.SCENARIO_CREATED
    machines: list[str]


@dataclass(frozen=True)
class MachinesAdded(EventPayload):
    """Machines joined a scenario after it was created (``crc scenario add-machine``); they start offline."""

    KIND = EventKind.MACHINES_ADDED
    machines: list[str]


@dataclass(frozen=True)
class MachineEnrolled(EventPayload):
    """A machine joined with an enrollment token; it waits offline, uncertified, until its master checks the
    registration and certifies it (at once, or on ``crc machine approve`` for tokens made with ``--approve``)."""

    KIND = EventKind.MACHINE_ENROLLED
    token: str
    role: str


@dataclass(frozen=True)
class MachineConnected(EventPayload):
    """``replica``: the hub replica holding the session. Hubs before replicas wrote ``session`` (its id) instead."""

    KIND = EventKind.MACHINE_CONNECTED
    replica: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    session: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)


# The facts a ``machine_ready`` event repeats from SystemReady, with the types the daemon reports them as
# (``clients/daemon/facts.py``; a fact it cannot determine is ``None``).
MACHINE_READY_FACTS: dict[str, Any] = {
    "hostname": str | None,
    "os": str | None,
    "os_release": str | None,
    "kernel": str | None,
    "cpus": dict[str, Any] | int | None,  # {"logical": N, "physical": M}
    "memory_total": int | None,
    "daemon_version": str | None,
}


@dataclass(frozen=True)
class MachineReady(EventPayload):
    """The machine reported SystemReady: its addresses and the key facts among those it reported.

    ``facts`` holds exactly the keys the daemon sent (one it did not send is absent, one it could not determine is
    ``None``), so the stored map stays as the hub wrote it; the properties read them typed. The hub does not check
    facts, so a fact of another type is kept but read as ``None`` rather than making the whole event unreadable.
    """

    KIND = EventKind.MACHINE_READY
    ips: list[str]
    facts: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.facts.items() if k in MACHINE_READY_FACTS}, "ips": list(self.ips)}

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> dict[str, Any]:
        ips = data.get("ips")
        if "ips" not in data:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, "machine_ready event lacks field 'ips'", kind=cls.KIND.value, field="ips"
            )
        if not fits_annotation(ips, list[str]):
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"machine_ready event field 'ips' has the wrong type ({type(ips).__name__})",
                kind=cls.KIND.value,
                field="ips",
            )
        return {"ips": ips, "facts": {k: data[k] for k in MACHINE_READY_FACTS if k in data}}

    @classmethod
    def _json_schema(cls) -> dict[str, Any]:
        properties = {name: _annotation_schema(tp) for name, tp in MACHINE_READY_FACTS.items()}
        properties["ips"] = _annotation_schema(list[str])
        return {"title": cls.__name__, "type": "object", "properties": properties, "required": ["ips"],
                "additionalProperties": True}  # fmt: skip

    def _fact(self, name: str, tp: Any) -> Any:
        value = self.facts.get(name)
        return value if fits_annotation(value, tp) else None

    @property
    def hostname(self) -> str | None:
        return typing.cast("str | None", self._fact("hostname", str))

    @property
    def os(self) -> str | None:
        return typing.cast("str | None", self._fact("os", str))

    @property
    def os_release(self) -> str | None:
        return typing.cast("str | None", self._fact("os_release", str))

    @property
    def kernel(self) -> str | None:
        return typing.cast("str | None", self._fact("kernel", str))

    @property
    def cpus(self) -> dict[str, Any] | int | None:
        return typing.cast("dict[str, Any] | int | None", self._fact("cpus", dict[str, Any] | int))

    @property
    def memory_total(self) -> int | None:
        return typing.cast("int | None", self._fact("memory_total", int))

    @property
    def daemon_version(self) -> str | None:
        return typing.cast("str | None", self._fact("daemon_version", str))


@dataclass(frozen=True)
class MachineOffline(EventPayload):
    KIND = EventKind.MACHINE_OFFLINE


@dataclass(frozen=True)
class MachineRevoked(EventPayload):
    KIND = EventKind.MACHINE_REVOKED
    machine_id: str


@dataclass(frozen=True)
class MachineKeyRotated(EventPayload):
    KIND = EventKind.MACHINE_KEY_ROTATED
    public_key: str


@dataclass(frozen=True)
class BootStep(EventPayload):
    """A step of the machine's startup script (``protocol.boot``): ``status`` is a ``BootStatus`` value, kept as a
    string so a newer daemon's status does not make the event unreadable; ``detail`` is the end of its output."""

    KIND = EventKind.BOOT_STEP
    step: str
    status: str
    detail: str
    time: int


@dataclass(frozen=True)
class CommandQueued(EventPayload):
    """An order was queued. ``kind`` is its ``OrderKind`` value; at most one of ``command`` (exec, cut to 200
    characters), ``path`` (put_file) and ``wheel`` (update) is set; ``job`` for a stored job's run; ``plan`` and
    ``step`` for an order a plan queued; ``sealed`` (True) for an order of a sealed scenario, whose command the
    hub cannot read (then ``command`` is not set)."""

    KIND = EventKind.COMMAND_QUEUED
    order_id: str
    kind: str
    command: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    sealed: bool | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    path: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    wheel: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    job: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    plan: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    step: str | None = field(default=None, metadata=_OMIT_WHEN_NONE)


@dataclass(frozen=True)
class CommandDelivered(EventPayload):
    KIND = EventKind.COMMAND_DELIVERED
    order_id: str


@dataclass(frozen=True)
class CommandStarted(EventPayload):
    KIND = EventKind.COMMAND_STARTED
    order_id: str


@dataclass(frozen=True)
class CommandFinished(EventPayload):
    """``status`` is the final ``OrderState`` value; ``exit_code`` is ``None`` when nothing ran to an exit."""

    KIND = EventKind.COMMAND_FINISHED
    order_id: str
    status: str
    exit_code: int | None
    error: str


@dataclass(frozen=True)
class CommandCancelRequested(EventPayload):
    KIND = EventKind.COMMAND_CANCEL_REQUESTED
    order_id: str


@dataclass(frozen=True)
class PlanStep(EventPayload):
    """A plan step changed state (a ``StepState`` value). A step that waits for futures also names the keys it
    waits for and those still missing."""

    KIND = EventKind.PLAN_STEP
    plan: str
    step: str
    name: str
    state: str
    keys: list[str] | None = field(default=None, metadata=_OMIT_WHEN_NONE)
    missing: list[str] | None = field(default=None, metadata=_OMIT_WHEN_NONE)


@dataclass(frozen=True)
class PlanFinished(EventPayload):
    KIND = EventKind.PLAN_FINISHED
    plan: str
    outcome: str  # "succeeded" or "failed"


@dataclass(frozen=True)
class KvSet(EventPayload):
    """A future was set: its key, TTL in seconds (0: none) and the value's size; never the value itself."""

    KIND = EventKind.KV_SET
    key: str
    ttl: float
    size: int


@dataclass(frozen=True)
class MessageSent(EventPayload):
    """A scenario message was sent: its topic, the machines it went to and its size; never its content."""

    KIND = EventKind.MESSAGE_SENT
    topic: str
    to: list[str]
    size: int


@dataclass(frozen=True)
class CompositionAssigned(EventPayload):
    """A stored job was assigned to the machines ``target`` selects (``crc job assign``); ``members`` are those
    given it now, those that join later get it when they connect."""

    KIND = EventKind.COMPOSITION_ASSIGNED
    composition: str
    job: str
    version: int | None
    target: str
    members: list[str]


@dataclass(frozen=True)
class CompositionUnassigned(EventPayload):
    KIND = EventKind.COMPOSITION_UNASSIGNED
    composition: str
    job: str
    cancelled: list[str]  # members whose play was cancelled before it reached them


_PAYLOAD_TYPES: dict[EventKind, type[EventPayload]] = {
    cls.KIND: cls
    for cls in (
        ScenarioCreated, MachinesAdded, MachineEnrolled, MachineConnected, MachineReady, MachineOffline, MachineRevoked,
        MachineKeyRotated, BootStep, CommandQueued, CommandDelivered, CommandStarted, CommandFinished,
        CommandCancelRequested, PlanStep, PlanFinished, KvSet, MessageSent, CompositionAssigned, CompositionUnassigned,
    )
}  # fmt: skip


def payload_type(kind: EventKind | str) -> type[EventPayload]:
    """The payload class of an event kind.

    Raises:
        ProtocolError: UNKNOWN_TYPE for a kind this side does not know (a newer hub's, or a typo).
    """
    try:
        return _PAYLOAD_TYPES[EventKind(kind)]
    except ValueError:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown event kind {kind!r}", kind=str(kind)) from None


def from_wire(kind: EventKind | str, data: Any) -> EventPayload:
    """The typed payload of a stored or received event.

    Raises:
        ProtocolError: UNKNOWN_TYPE for an unknown kind; BAD_FIELD (details ``kind`` and ``field``) when ``data`` is
            not a map or a field is missing or of the wrong type. Unknown keys are ignored.
    """
    cls = payload_type(kind)
    if not isinstance(data, dict):
        raise ProtocolError(
            ErrorCode.BAD_FIELD, f"{cls.KIND.value} event data must be a map", kind=cls.KIND.value, field=""
        )
    return cls(**cls._parse(data))


def event_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) of an event as REST, SSE and the dashboard see it: ``kind`` picks the payload."""
    defs = {kind.value: cls._json_schema() for kind, cls in _PAYLOAD_TYPES.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "crc event",
        "type": "object",
        "required": ["kind", "data"],
        "properties": {"kind": {"enum": [kind.value for kind in EventKind]}, "data": {"type": "object"}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": kind}}},
                "then": {"properties": {"data": {"$ref": f"#/$defs/{kind}"}}},
            }
            for kind in defs
        ],
        "$defs": defs,
    }


@dataclass(frozen=True)
class _Field:
    name: str
    annotation: Any
    required: bool
    omitted: bool


_FIELDS: dict[type[EventPayload], tuple[_Field, ...]] = {}


def _fields(cls: type[EventPayload]) -> tuple[_Field, ...]:
    """The fields of a payload class; resolving annotations is slow, so once per class."""
    specs = _FIELDS.get(cls)
    if specs is None:
        hints = get_type_hints(cls)
        specs = _FIELDS[cls] = tuple(
            _Field(
                f.name,
                hints[f.name],
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
                bool(f.metadata.get(_OMITTED)),
            )
            for f in dataclasses.fields(cls)
        )
    return specs


_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _annotation_schema(annotation: Any) -> dict[str, Any]:
    origin = get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        return {"anyOf": [_annotation_schema(arg) for arg in get_args(annotation)]}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": "array", "items": _annotation_schema(item)}
    if origin is dict:
        return {"type": "object"}
    if annotation is Any:
        return {}
    return {"type": _JSON_TYPES[annotation]}
