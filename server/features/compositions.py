"""Compositions: stored jobs assigned to the machines a target selects (``crc job assign``), played once by each
member, present or joining later (``protocol.compositions``).

The hub keeps the master's signed composition and, for each member, queues one play: an ordinary order record
whose id is the composition's joined to the machine's, carrying the composition and the machine's certificate
(``MemberOrder``). It does so when the composition is assigned (for the members there), when a machine connects
and when one is certified (a joiner approved). Because the id is fixed, a second attempt on any replica finds the
play already stored, and the daemon's journal refuses a second delivery: each member plays once. The daemon
checks the signature and its own membership, so the hub's choice of members is bookkeeping, not trust.

A member is a machine the target selects that its master certified, or that joined with an enrollment token
needing no approval (the daemon knows its role from that token); a joiner waiting for approval gets nothing yet.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from protocol import Envelope, ErrorCode, OrderKind, OrderState, ProtocolError, PublicKey
from protocol.compositions import Composition, Member, MemberOrder, member_order_id
from protocol.events import CompositionAssigned, CompositionUnassigned
from protocol.messages import (
    CompositionAssign,
    CompositionList,
    CompositionPerformances,
    CompositionUnassign,
    Response,
)
from protocol.order_bodies import parse_body
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import owned_scenario
from server.features.orders import cancel_order, queue_order
from server.store import CompositionRecord, MachineRecord, ScenarioRecord

log = logging.getLogger(__name__)
handlers = HandlerTable()

MAX_COMPOSITIONS = 100  # per scenario: each is looked at whenever one of its machines connects


def _checked(raw: dict[str, Any], master_key: PublicKey, scenario: str, now: float) -> Composition:
    """The composition as sent, once it is this master's for this scenario and its body is an EXEC body."""
    try:
        composition = Composition.from_wire(raw)
        composition.verify(master_key, scenario)
        parse_body(OrderKind.EXEC, composition.body)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"the composition does not verify: {exc.message}") from None
    if not now < composition.valid_until:
        raise RequestError(ErrorCode.INVALID_REQUEST, "the composition has expired already")
    return composition


class _Members:
    """Which machines of a scenario count as members (the enrollments are read once, and only if needed)."""

    def __init__(self, hub: Hub, scenario_id: str) -> None:
        self.hub, self.scenario_id = hub, scenario_id
        self._self_certified: set[str] | None = None

    async def admitted(self, composition: Composition, machine: MachineRecord) -> bool:
        if not composition.admits(Member(machine.name, machine.role, machine.labels)):
            return False
        return machine.certificate is not None or machine.id in await self._joined_without_approval()

    async def _joined_without_approval(self) -> set[str]:
        if self._self_certified is None:
            self._self_certified = set()
            for token in await stores.enrollments(self.hub).enrollments(self.scenario_id):
                if token.claims.get("approve") is False:
                    for registration in token.registrations:
                        try:
                            self._self_certified.add(PublicKey.from_text(str(registration.get("public_key"))).id)
                        except ProtocolError:
                            continue
        return self._self_certified


async def _queue_play(hub: Hub, scenario: ScenarioRecord, composition: Composition, machine: MachineRecord) -> bool:
    """Queue the machine's play of the composition unless it has one already; whether it was queued now.

    Raises:
        RequestError: the machine's queue is full, or the backplane is down (nothing queued; tried again later).
    """
    if await stores.orders(hub).order(composition.member_order_id(machine.id)) is not None:
        return False
    play = MemberOrder(composition, machine.id, machine.certificate)
    try:
        await queue_order(hub, scenario, play.as_order(), [], wire=play.to_wire())
    except RequestError as exc:
        if exc.code is ErrorCode.ALREADY_EXISTS:  # another replica queued it in between
            return False
        raise
    return True


def _no_composition(scenario: ScenarioRecord, composition_id: str) -> RequestError:
    return RequestError(ErrorCode.NOT_FOUND, f"scenario {scenario.name!r} has no composition {composition_id!r}")


@handlers.on(CompositionAssign)
async def composition_assign(hub: Hub, conn: Connection, env: Envelope, body: CompositionAssign) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    now = time.time()
    composition = _checked(body.composition, conn.peer.public_key, scenario.name, now)
    kept = await stores.compositions(hub).compositions(scenario.id)
    if len(kept) >= MAX_COMPOSITIONS and composition.id not in {c.id for c in kept}:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"scenario {scenario.name!r} has {MAX_COMPOSITIONS} compositions already: unassign one first",
        )
    record = CompositionRecord(composition.id, scenario.id, composition.to_wire(), now)
    if not await stores.compositions(hub).put_composition(record):
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {scenario.name!r}")
    queued, waiting = [], {}
    members = _Members(hub, scenario.id)
    for machine in await stores.machines(hub).machines(scenario.id):
        if not await members.admitted(composition, machine):
            continue
        try:
            if await _queue_play(hub, scenario, composition, machine):
                queued.append(machine.name)
        except RequestError as exc:
            waiting[machine.name] = exc.message  # queued when it next connects
    await hub.emit(scenario.id, CompositionAssigned(
        composition=composition.id, job=composition.job, version=composition.job_version,
        target=composition.target, members=queued,
    ), "")  # fmt: skip
    conn.send(Response({"composition": composition.id, "queued": queued, "waiting": waiting}), reply_to=env.id)


@handlers.on(CompositionUnassign)
async def composition_unassign(hub: Hub, conn: Connection, env: Envelope, body: CompositionUnassign) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    kept = {c.id: c for c in await stores.compositions(hub).compositions(scenario.id)}
    record = kept.get(body.composition_id)
    if record is None or not await stores.compositions(hub).remove_composition(scenario.id, body.composition_id):
        raise _no_composition(scenario, body.composition_id)
    machines = {m.id: m.name for m in await stores.machines(hub).machines(scenario.id)}
    plays = await stores.orders(hub).orders(scenario.id, [member_order_id(record.id, m) for m in machines])
    cancelled = []
    for play in plays:
        if play.state is OrderState.QUEUED and (await cancel_order(hub, scenario, play)) is OrderState.CANCELLED:
            cancelled.append(machines.get(play.machine_id, play.machine_id))
    job = str(record.composition.get("body", {}).get("job") or "")
    await hub.emit(scenario.id, CompositionUnassigned(composition=record.id, job=job, cancelled=cancelled), "")
    conn.send(Response({"composition": record.id, "cancelled": cancelled}), reply_to=env.id)


@handlers.on(CompositionList)
async def composition_list(hub: Hub, conn: Connection, env: Envelope, body: CompositionList) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    records = await stores.compositions(hub).compositions(scenario.id)
    conn.send(Response({"compositions": [r.composition for r in records]}), reply_to=env.id)


@handlers.on(CompositionPerformances)
async def composition_performances(hub: Hub, conn: Connection, env: Envelope, body: CompositionPerformances) -> None:
    """Every machine of the scenario with its play of the composition (the order record, result included) or
    None, and whether the hub counts it a member: the master verifies the results and sorts them out."""
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    kept = {c.id: c for c in await stores.compositions(hub).compositions(scenario.id)}
    record = kept.get(body.composition_id)
    if record is None:
        raise _no_composition(scenario, body.composition_id)
    composition = Composition.from_wire(record.composition)
    machines = await stores.machines(hub).machines(scenario.id)
    plays = {p.machine_id: p for p in await stores.orders(hub).orders(
        scenario.id, [composition.member_order_id(m.id) for m in machines]
    )}  # fmt: skip
    members = _Members(hub, scenario.id)
    performances = []
    for machine in machines:
        play = plays.get(machine.id)
        targeted = composition.admits(Member(machine.name, machine.role, machine.labels))
        if play is None and not targeted:
            continue
        performances.append({
            "machine": machine.name, "machine_id": machine.id, "targeted": targeted,
            "member": await members.admitted(composition, machine), "status": machine.status.value,
            "play": None if play is None else play.to_wire(),
        })  # fmt: skip
    answer = {"composition": record.composition, "performances": performances}
    conn.send(Response(answer), scenario=scenario.name, reply_to=env.id)


async def queue_owed(hub: Hub, scenario_id: str, machine_id: str) -> None:
    """The plays a machine that connected or was certified is owed: one per composition selecting it."""
    records = await stores.compositions(hub).compositions(scenario_id)
    if not records:
        return
    scenario = await stores.scenarios(hub).scenario(scenario_id)
    machine = await stores.machines(hub).machine(machine_id)
    if scenario is None or machine is None or machine.scenario_id != scenario_id:
        return
    members = _Members(hub, scenario_id)
    now = time.time()
    for record in records:
        try:
            composition = Composition.from_wire(record.composition)
        except ProtocolError as exc:
            log.warning("composition %s of scenario %s is unreadable: %s", record.id, scenario.name, exc)
            continue
        if not now < composition.valid_until or not await members.admitted(composition, machine):
            continue
        try:
            await _queue_play(hub, scenario, composition, machine)
        except RequestError as exc:
            log.warning("composition %s not queued for %s yet: %s", composition.id, machine.name, exc.message)


FEATURE = Feature("compositions", handlers, on_member=queue_owed)
