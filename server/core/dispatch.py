"""Typed request handlers: ``@table.on(Body, roles=...)`` registers a handler that gets the decoded body as that
type (the decoder built it from the message type: ``protocol.messages.body_from_wire``), and ``dispatch`` answers
every failure in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from protocol import Envelope, ErrorCode, MsgType, ProtocolError
from protocol.messages import Body
from protocol.session import Role
from server.backplane import BackplaneUnavailable
from server.core.connection import Connection
from server.core.errors import RequestError
from server.core.hub import Hub
from server.store import StoreError

log = logging.getLogger(__name__)

B = TypeVar("B", bound=Body)
Handler = Callable[[Hub, Connection, Envelope, B], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    body: type[Body]
    handler: Callable[[Hub, Connection, Envelope, Any], Awaitable[None]]


class HandlerTable:
    """Handlers by (role, message type); one per pair, for the whole hub."""

    def __init__(self) -> None:
        self._routes: dict[tuple[Role, MsgType], Route] = {}

    def on(self, *bodies: type[B], roles: Iterable[Role] = (Role.MASTER,)) -> Callable[[Handler[B]], Handler[B]]:
        """Register the decorated handler for these body types, from peers of these roles (masters by default)."""
        roles = tuple(roles)

        def register(handler: Handler[B]) -> Handler[B]:
            for body in bodies:
                for role in roles:
                    self._add(role, Route(body, handler))
            return handler

        return register

    def _add(self, role: Role, route: Route) -> None:
        key = (role, route.body.TYPE)
        if key in self._routes:
            raise ValueError(f"two handlers for {route.body.TYPE.value} from a {role.value}")
        self._routes[key] = route

    def merged(self, *others: HandlerTable) -> HandlerTable:
        table = HandlerTable()
        for source in (self, *others):
            for (role, _), route in source._routes.items():
                table._add(role, route)
        return table

    def route(self, role: Role, msg_type: MsgType) -> Route | None:
        return self._routes.get((role, msg_type))


async def dispatch(hub: Hub, table: HandlerTable, conn: Connection, envelope: Envelope) -> None:
    """Run the handler for this request; every refusal and backend failure becomes an ERROR answer."""
    route = table.route(conn.role, envelope.type)
    if route is None:
        conn.reply_error(envelope, ErrorCode.INVALID_REQUEST, f"a {conn.role.value} may not send {envelope.type.value}")
        return
    try:
        if not isinstance(envelope.body, route.body):  # the decoder makes this impossible; never act on a wrong type
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{envelope.type.value} carries a {type(envelope.body).__name__}")
        await route.handler(hub, conn, envelope, envelope.body)
    except RequestError as exc:
        conn.reply_error(envelope, exc.code, exc.message, **exc.details)
    except ProtocolError as exc:
        conn.reply_error(envelope, exc.code, exc.message, **exc.details)
    except (StoreError, BackplaneUnavailable) as exc:
        hub.metrics.backend_errors.labels(backend="store" if isinstance(exc, StoreError) else "backplane").inc()
        log.error("could not handle %s from %s: %s", envelope.type.value, conn.id, exc)
        conn.reply_error(envelope, ErrorCode.UNAVAILABLE, f"the hub cannot store or route this right now: {exc}")
    except Exception:
        # A bug: said to the peer as such (its session goes on), with the traceback in the hub's log.
        log.exception("handling %s from %s %s failed", envelope.type.value, conn.role.value, conn.id)
        conn.reply_error(envelope, ErrorCode.INTERNAL, f"the hub failed on this {envelope.type.value}; see its log")
