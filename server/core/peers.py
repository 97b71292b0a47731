"""What hub replicas tell each other over the backplane: one frozen dataclass per ``PeerKind``.

On the wire a message is a flat map, ``{"kind": <PeerKind value>, <field>: <value>, ...}``, packed by the backplane
(``server.backplane``), which adds the sender's replica id under ``from`` and strips it again before
``peer_from_wire``. Parsing is strict: replicas of one hub run the same code, and whatever else arrives on a channel
(anything that can reach Redis can publish there) must be refused rather than half-understood. An unknown kind, a
missing field, a field this side does not know or a value of the wrong type raises ``PeerMessageError`` naming the
kind and the field.

Every kind lives here, the features' too (plans' ``cancel_plan``): the wire vocabulary between replicas is one
module, and the core hands a feature its messages without importing it. Who handles a kind is a ``PeerTable``:
the hub's own (``server.core.hub``) and each feature's ``Feature.peer_handlers``.

This module imports nothing of the server but the protocol, so the backplane, which is below the core, can
decode messages with it (``tests/server/test_layering.py`` keeps it that way).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar, get_type_hints

from protocol import CrcError
from protocol.messages import Output, fits_annotation

__all__ = [
    "PEER_TYPES",
    "CancelOrder",
    "CancelPlan",
    "DeliverQueued",
    "DropMaster",
    "LiveOutput",
    "NewEvents",
    "NewMail",
    "PeerKind",
    "PeerMessage",
    "PeerMessageError",
    "PeerRoute",
    "PeerTable",
    "RevokeMachine",
    "peer_from_wire",
    "to_wire",
]


class PeerKind(StrEnum):
    DELIVER = "deliver"
    CANCEL = "cancel"
    REVOKE = "revoke"
    EVENT = "event"
    OUTPUT = "output"
    MAIL = "mail"
    DROP_MASTER = "drop_master"
    CANCEL_PLAN = "cancel_plan"


class PeerMessageError(CrcError):
    """A backplane message is not one this hub sends: not a map, an unknown kind, or not the shape of its kind.

    Args:
        message: what is wrong, naming the kind and the field.
        kind: the message's kind as it came (None when it had none, or not a string).
        field: the offending field, dotted inside a nested record (``output.stream``); None when the whole message
            is at fault.
    """

    def __init__(self, message: str, *, kind: str | None, field: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


@dataclass(frozen=True)
class PeerMessage:
    """Base of every backplane message: ``KIND`` names its kind on the wire."""

    KIND: ClassVar[PeerKind]


@dataclass(frozen=True)
class DeliverQueued(PeerMessage):
    """To the replica holding ``machine``: send it the queued orders its session has not had yet."""

    KIND = PeerKind.DELIVER
    machine: str


@dataclass(frozen=True)
class CancelOrder(PeerMessage):
    """To the replica holding ``machine``: tell its daemon to cancel ``order`` (of the scenario named ``name``)."""

    KIND = PeerKind.CANCEL
    machine: str
    order: str
    name: str


@dataclass(frozen=True)
class RevokeMachine(PeerMessage):
    """To the replica holding ``machine``: its key was revoked, close its session saying ``reason``."""

    KIND = PeerKind.REVOKE
    machine: str
    reason: str


@dataclass(frozen=True)
class NewEvents(PeerMessage):
    """On the scenario's channel: its event log has news (the store has them; this only wakes the followers)."""

    KIND = PeerKind.EVENT
    scenario: str


@dataclass(frozen=True)
class LiveOutput(PeerMessage):
    """On the scenario's channel: a live output chunk for the subscribers of the scenario named ``name``."""

    KIND = PeerKind.OUTPUT
    scenario: str
    name: str
    output: Output


@dataclass(frozen=True)
class NewMail(PeerMessage):
    """On the scenario's channel: these machines have mail (wakes their mailbox waits)."""

    KIND = PeerKind.MAIL
    scenario: str
    machines: list[str]


@dataclass(frozen=True)
class DropMaster(PeerMessage):
    """To every replica: close the sessions of this master (it was removed, or moved to a new key)."""

    KIND = PeerKind.DROP_MASTER
    master: str


@dataclass(frozen=True)
class CancelPlan(PeerMessage):
    """To every replica (plans' own): cancel the plan if its runner is here."""

    KIND = PeerKind.CANCEL_PLAN
    plan: str


PEER_TYPES: dict[PeerKind, type[PeerMessage]] = {
    cls.KIND: cls
    for cls in (DeliverQueued, CancelOrder, RevokeMachine, NewEvents, LiveOutput, NewMail, DropMaster, CancelPlan)
}


def to_wire(message: PeerMessage) -> dict[str, Any]:
    """The map the backplane packs for ``message``: ``kind`` and every field (nested records as maps)."""
    return {"kind": message.KIND.value, **_record_to_wire(message)}


def peer_from_wire(data: Any) -> PeerMessage:
    """The typed message in a map a backplane decoded (without the backplane's own ``from``).

    Raises:
        PeerMessageError: ``data`` is not a map, has no string ``kind``, names a kind ``PeerKind`` lacks, or does
            not have exactly the fields of its kind with values of their types.
    """
    if not isinstance(data, dict):
        raise PeerMessageError(
            f"a backplane message must be a map with a 'kind', not a {type(data).__name__}", kind=None
        )
    if "kind" not in data:
        raise PeerMessageError("a backplane message lacks its 'kind'", kind=None, field="kind")
    raw_kind = data["kind"]
    if not isinstance(raw_kind, str):
        raise PeerMessageError(
            f"a backplane message needs a string 'kind' (got {type(raw_kind).__name__})", kind=None, field="kind"
        )
    try:
        kind = PeerKind(raw_kind)
    except ValueError:
        known = ", ".join(k.value for k in PeerKind)
        raise PeerMessageError(
            f"unknown backplane message kind {raw_kind!r} (known: {known})", kind=raw_kind, field="kind"
        ) from None
    fields = {k: v for k, v in data.items() if k != "kind"}
    return PEER_TYPES[kind](**_parse_record(PEER_TYPES[kind], fields, kind.value, ""))


def _record_to_wire(record: Any) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    for name, annotation, _ in _schema(type(record)):
        value = getattr(record, name)
        wire[name] = _record_to_wire(value) if _is_record(annotation) else value
    return wire


def _parse_record(cls: type[Any], data: dict[Any, Any], kind: str, prefix: str) -> dict[str, Any]:
    """The constructor's arguments of ``cls`` from ``data``, checked field by field; ``prefix`` is where the
    record sits in the message (``"output."``), for the error messages."""
    schema = _schema(cls)
    names = {name for name, _, _ in schema}
    extra = sorted((k for k in data if k not in names), key=repr)
    if extra:
        listed = ", ".join(repr(f"{prefix}{k}") if isinstance(k, str) else repr(k) for k in extra)
        raise PeerMessageError(
            f"{kind} backplane message has unknown field(s) {listed}", kind=kind, field=f"{prefix}{extra[0]}"
        )
    values: dict[str, Any] = {}
    for name, annotation, required in schema:
        where = prefix + name
        if name not in data:
            if required:
                raise PeerMessageError(f"{kind} backplane message lacks field {where!r}", kind=kind, field=where)
            continue
        value = data[name]
        if _is_record(annotation):
            if not isinstance(value, dict):
                raise _wrong_type(kind, where, f"a map ({annotation.__name__})", value)
            values[name] = annotation(**_parse_record(annotation, value, kind, f"{where}."))
        elif fits_annotation(value, annotation):
            values[name] = value
        else:
            raise _wrong_type(kind, where, _type_name(annotation), value)
    return values


def _wrong_type(kind: str, where: str, expected: str, value: Any) -> PeerMessageError:
    return PeerMessageError(
        f"{kind} backplane message field {where!r} must be {expected}, not {type(value).__name__}",
        kind=kind,
        field=where,
    )


def _type_name(annotation: Any) -> str:
    # ``list[str].__name__`` is plain "list"; a generic alias says what it is through ``str``.
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def _is_record(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


_SCHEMAS: dict[type[Any], tuple[tuple[str, Any, bool], ...]] = {}


def _schema(cls: type[Any]) -> tuple[tuple[str, Any, bool], ...]:
    """(name, annotation, required) per field; resolving annotations is slow, so once per class."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = get_type_hints(cls)
        schema = _SCHEMAS[cls] = tuple(
            (f.name, hints[f.name], f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
            for f in dataclasses.fields(cls)
        )
    return schema


Ctx = TypeVar("Ctx")
M = TypeVar("M", bound=PeerMessage)
PeerHandler = Callable[[Ctx, M], Awaitable[None]]


@dataclass(frozen=True)
class PeerRoute(Generic[Ctx]):
    message: type[PeerMessage]
    handler: Callable[[Ctx, Any], Awaitable[None]]


class PeerTable(Generic[Ctx]):
    """Handlers of backplane messages by kind, one per kind; ``Ctx`` is what a handler gets first (the ``Hub``:
    this module cannot import it, the hub imports this one).

    A kind has exactly one message class (``PEER_TYPES``), and ``add`` refuses any other, so the handler found for
    a decoded message's kind always gets the type it was registered for.
    """

    def __init__(self) -> None:
        self._routes: dict[PeerKind, PeerRoute[Ctx]] = {}

    def on(self, message: type[M]) -> Callable[[PeerHandler[Ctx, M]], PeerHandler[Ctx, M]]:
        """Register the decorated handler for ``message``'s kind."""

        def register(handler: PeerHandler[Ctx, M]) -> PeerHandler[Ctx, M]:
            self.add(message, handler)
            return handler

        return register

    def add(self, message: type[M], handler: PeerHandler[Ctx, M]) -> None:
        """Register ``handler`` for ``message``'s kind.

        Raises:
            ValueError: the kind has a handler already, or ``message`` is not the class of its kind.
        """
        if PEER_TYPES.get(message.KIND) is not message:
            raise ValueError(f"{message.__name__} is not the message class of kind {message.KIND.value}")
        if message.KIND in self._routes:
            raise ValueError(f"two handlers for backplane messages of kind {message.KIND.value}")
        self._routes[message.KIND] = PeerRoute(message, handler)

    def merged(self, *others: PeerTable[Ctx]) -> PeerTable[Ctx]:
        """One table of this one's and the others' handlers (ValueError if two handle the same kind)."""
        table: PeerTable[Ctx] = PeerTable()
        for source in (self, *others):
            for route in source._routes.values():
                table.add(route.message, route.handler)
        return table

    def route(self, kind: PeerKind) -> PeerRoute[Ctx] | None:
        return self._routes.get(kind)

    def __iter__(self) -> Iterator[PeerKind]:
        return iter(self._routes)
