"""A feature of the hub: its request handlers, what it does with backplane messages from other replicas, what it
starts and stops with the hub, its HTTP routes, and how it hears of new events. ``server/app.py`` lists them; the
core knows them only through these fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from server.core.dispatch import HandlerTable
from server.core.hub import Hub
from server.core.peers import PeerTable

Hook = Callable[[Hub], Awaitable[None]]


async def _nothing(hub: Hub) -> None:
    return None


def _never(hub: Hub, scenario_id: str) -> bool:
    return False


def _ignore(hub: Hub, scenario_id: str) -> None:
    return None


async def _owe_nothing(hub: Hub, scenario_id: str, machine_id: str) -> None:
    return None


@dataclass(frozen=True)
class Feature:
    name: str
    handlers: HandlerTable = field(default_factory=HandlerTable)
    peer_handlers: PeerTable[Hub] = field(default_factory=PeerTable)
    """Handlers of the backplane message kinds this feature owns (``server.core.peers``; ``@peers.on(CancelPlan)``)."""
    routes: web.RouteTableDef = field(default_factory=web.RouteTableDef)
    """Its HTTP routes (REST, files), added to the hub's application by ``server/app.py``."""
    on_start: Hook = _nothing
    on_stop: Hook = _nothing
    """Before the hub closes its sessions."""
    on_events: Callable[[Hub, str], None] = _ignore
    """New events are in the scenario's log (from this replica or another)."""
    follows: Callable[[Hub, str], bool] = _never
    """Whether the feature waits on the scenario here (so the hub keeps hearing of it from other replicas)."""
    on_member: Callable[[Hub, str, str], Awaitable[None]] = _owe_nothing
    """A machine (scenario id, machine id) connected or was certified: queue any order the feature owes it (the
    hub delivers its queue right after)."""
