"""Scenarios and their machines: create, list, show, delete; revoke or certify a machine; machines reporting
ready; following a scenario's events. A master only ever sees and targets its own scenarios; the machines view
(``machines_view``) is the one the REST API shows too.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from typing import Any

from protocol import Envelope, ErrorCode, ProtocolError, PublicKey, Role
from protocol.certificates import MachineCertificate, addresses_from_facts
from protocol.events import MACHINE_READY_FACTS, MachineReady, MachineRevoked, MachinesAdded, ScenarioCreated
from protocol.messages import (
    EventsSubscribe,
    EventsUnsubscribe,
    MachineAdd,
    MachineCertify,
    MachineRevoke,
    Response,
    ScenarioCreate,
    ScenarioDelete,
    ScenarioList,
    ScenarioShow,
    SystemReady,
)
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError, check_name
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import owned_scenario
from server.store import MachineSpec, MachineStatus, ScenarioRecord, StoreConflict

log = logging.getLogger(__name__)
handlers = HandlerTable()

OPERATING_SYSTEMS = ("linux", "windows")
REPORT_KEY_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
# Machines per scenario-show page: each with its facts is well under 1 KiB, so a page stays far below 1 MiB.
MACHINES_PAGE = 250


async def _machines_wire(
    hub: Hub, scenario: ScenarioRecord, after: str = "", limit: int | None = None, *, proofs: bool = False
) -> list[dict[str, Any]]:
    """The scenario's machines as stored (by name, after ``after``, at most ``limit``), shown offline where no
    replica holds their session any more; with ``proofs``, what a master checks them by (binary: not for JSON)."""
    machines = []
    stored = sorted(
        (m for m in await stores.machines(hub).machines(scenario.id) if m.name > after), key=lambda m: m.name
    )
    for machine in stored[:limit]:
        wire = {**machine.to_wire(), **(machine.proofs_wire() if proofs else {})}
        if machine.status is not MachineStatus.OFFLINE and await hub.locate(machine.id) is None:
            wire["status"] = MachineStatus.OFFLINE.value  # its replica died without saying so
        machines.append(wire)
    return machines


async def scenario_summary(hub: Hub, scenario: ScenarioRecord) -> dict[str, Any]:
    """A line of a scenario list (WebSocket and REST alike): how many machines, how many ready, counted from the
    same view as ``scenario_wire``, so a machine whose replica died counts as offline in both."""
    machines = await _machines_wire(hub, scenario)
    ready = sum(1 for m in machines if m["status"] == MachineStatus.READY.value)
    return {"name": scenario.name, "created": scenario.created, "machines": len(machines), "ready": ready}


async def scenario_wire(
    hub: Hub, scenario: ScenarioRecord, after: str = "", limit: int = 0, *, proofs: bool = False
) -> dict[str, Any]:
    """The scenario with one page of its machines (``more``: further pages follow, ask with ``after``)."""
    limit = limit if 0 < limit <= MACHINES_PAGE else MACHINES_PAGE
    machines = await _machines_wire(hub, scenario, after, limit + 1, proofs=proofs)
    return {
        "id": scenario.id,
        "name": scenario.name,
        "created": scenario.created,
        "cursor": await stores.events(hub).last_cursor(scenario.id),
        "machines": machines[:limit],
        "more": len(machines) > limit,
    }


LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
MAX_LABELS = 32


def check_labels(machine: str, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_LABELS:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {machine!r}: labels are a map of at most {MAX_LABELS}")
    for key, value in raw.items():
        if not isinstance(key, str) or not LABEL_KEY.match(key):
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"machine {machine!r}: label {key!r} must be 1-63 letters, digits, '.', '_', '-' or '/'",
            )
        if not isinstance(value, str) or len(value) > 255 or "," in value:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"machine {machine!r}: label {key!r} needs a string value (<= 255, no ',')"
            )
    return dict(raw)


def _certificate(master_key: PublicKey, scenario: str, spec: MachineSpec, raw: Any) -> dict[str, Any] | None:
    """The machine's certificate as sent, once it is found to be this master's word on exactly this machine (the
    hub does not rely on it, but a master that sent a wrong one should hear so now, not at its first command)."""
    if raw is None:
        return None
    try:
        certificate = MachineCertificate.from_wire(raw)
        certificate.verify(master_key, scenario)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {spec.name!r}: {exc.message}") from None
    declared = (spec.name, spec.id, spec.public_key, spec.os, spec.role, spec.labels)
    if (certificate.name, certificate.machine, certificate.public_key, certificate.os, certificate.role,
            certificate.labels) != declared:  # fmt: skip
        raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {spec.name!r}: its certificate describes another")
    return certificate.to_wire()


def _machine_specs(master_key: PublicKey, scenario: str, raw: list[dict[str, Any]]) -> list[MachineSpec]:
    specs: list[MachineSpec] = []
    for item in raw:
        name, os_name, role, key = (item.get(k) for k in ("name", "os", "role", "public_key"))
        if not all(isinstance(v, str) for v in (name, os_name, role, key)):
            raise RequestError(ErrorCode.INVALID_REQUEST, "each machine needs name, os, role and public_key strings")
        assert isinstance(name, str) and isinstance(os_name, str) and isinstance(role, str) and isinstance(key, str)
        check_name("machine", name)
        if os_name not in OPERATING_SYSTEMS:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {name!r}: os must be one of {OPERATING_SYSTEMS}")
        try:
            PublicKey.from_text(key)
        except ProtocolError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {name!r}: {exc.message}") from None
        report_key = item.get("report_key", "")
        if not isinstance(report_key, str) or (report_key and not REPORT_KEY_PATTERN.match(report_key)):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"machine {name!r}: report_key must be 64 hex digits")
        spec = MachineSpec(name, os_name, role, key, report_key.lower(), check_labels(name, item.get("labels")))
        specs.append(replace(spec, certificate=_certificate(master_key, scenario, spec, item.get("certificate"))))
    if len({s.name for s in specs}) != len(specs):
        raise RequestError(ErrorCode.INVALID_REQUEST, "machine names in a scenario must be unique")
    if len({s.id for s in specs}) != len(specs):
        raise RequestError(ErrorCode.INVALID_REQUEST, "each machine needs its own key")
    return specs


@handlers.on(ScenarioCreate)
async def scenario_create(hub: Hub, conn: Connection, env: Envelope, body: ScenarioCreate) -> None:
    check_name("scenario", body.name)
    specs = _machine_specs(conn.peer.public_key, body.name, body.machines)
    if await stores.masters(hub).master(conn.id) is None:
        raise RequestError(ErrorCode.REVOKED, "this master is no longer enrolled on the hub")
    try:
        scenario = await stores.scenarios(hub).create_scenario(conn.id, body.name, specs, time.time())
    except StoreConflict:
        raise RequestError(
            ErrorCode.ALREADY_EXISTS,
            f"scenario {body.name!r} exists already, or a machine key is in use elsewhere",
        ) from None
    await hub.emit(scenario.id, ScenarioCreated(machines=[s.name for s in specs]), "")
    conn.send(Response(await scenario_wire(hub, scenario, proofs=True)), scenario=body.name, reply_to=env.id)


@handlers.on(ScenarioList)
async def scenario_list(hub: Hub, conn: Connection, env: Envelope, body: ScenarioList) -> None:
    items = [await scenario_summary(hub, scenario) for scenario in await stores.scenarios(hub).scenarios(conn.id)]
    conn.send(Response({"scenarios": items}), reply_to=env.id)


@handlers.on(ScenarioShow)
async def scenario_show(hub: Hub, conn: Connection, env: Envelope, body: ScenarioShow) -> None:
    """The scenario with one page of its machines: a scenario of thousands does not fit one frame."""
    scenario = await owned_scenario(hub, conn.id, body.name)
    wire = await scenario_wire(hub, scenario, body.after, body.limit, proofs=True)
    conn.send(Response(wire), scenario=body.name, reply_to=env.id)


@handlers.on(ScenarioDelete)
async def scenario_delete(hub: Hub, conn: Connection, env: Envelope, body: ScenarioDelete) -> None:
    scenario = await owned_scenario(hub, conn.id, body.name)
    await hub.unsubscribe_all(scenario.id)
    machine_ids = await stores.scenarios(hub).delete_scenario(scenario.id)
    await hub.revoke(machine_ids, f"scenario {body.name!r} was deleted; this machine's key is revoked")
    conn.send(Response({"deleted": body.name, "revoked": machine_ids}), reply_to=env.id)


@handlers.on(MachineAdd)
async def machine_add(hub: Hub, conn: Connection, env: Envelope, body: MachineAdd) -> None:
    """Grow a scenario: machines declared as at its creation (public keys and this master's certificates)."""
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    if not body.machines:
        raise RequestError(ErrorCode.INVALID_REQUEST, "name at least one machine to add")
    specs = _machine_specs(conn.peer.public_key, scenario.name, body.machines)
    present = {m.name for m in await stores.machines(hub).machines(scenario.id)}
    if taken := sorted(present & {s.name for s in specs}):
        raise RequestError(
            ErrorCode.ALREADY_EXISTS, f"scenario {scenario.name!r} has machines named {', '.join(taken)} already"
        )
    try:
        added = await stores.scenarios(hub).add_machines(scenario.id, specs)
    except StoreConflict:  # a key in use, or a name taken meanwhile
        raise RequestError(
            ErrorCode.ALREADY_EXISTS,
            f"cannot add to scenario {scenario.name!r}: a machine name is taken or a machine key is in use elsewhere",
        ) from None
    if not added:  # deleted meanwhile
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {scenario.name!r}")
    await hub.emit(scenario.id, MachinesAdded(machines=[s.name for s in specs]), "")
    conn.send(Response(await scenario_wire(hub, scenario, proofs=True)), scenario=scenario.name, reply_to=env.id)


@handlers.on(MachineRevoke)
async def machine_revoke(hub: Hub, conn: Connection, env: Envelope, body: MachineRevoke) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    machine = next((m for m in await stores.machines(hub).machines(scenario.id) if m.name == body.machine), None)
    if machine is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"scenario {scenario.name!r} has no machine {body.machine!r}")
    await stores.machines(hub).delete_machine(machine.id)
    await hub.revoke([machine.id], f"machine {machine.name!r} was revoked from scenario {scenario.name!r}")
    await hub.emit(scenario.id, MachineRevoked(machine_id=machine.id), machine.name)
    conn.send(Response({"revoked": machine.id}), scenario=scenario.name, reply_to=env.id)


@handlers.on(MachineCertify)
async def machine_certify(hub: Hub, conn: Connection, env: Envelope, body: MachineCertify) -> None:
    """Store certificates this master endorsed anew (after ``crc rotate-key``, or adopting older machines)."""
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    by_id = {m.id: m for m in await stores.machines(hub).machines(scenario.id)}
    certified = []
    for raw in body.certificates:
        try:
            certificate = MachineCertificate.from_wire(raw)
            certificate.verify(conn.peer.public_key, scenario.name)
        except ProtocolError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"a certificate does not verify: {exc.message}") from None
        machine = by_id.get(certificate.machine)
        if machine is None or machine.name != certificate.name:
            raise RequestError(ErrorCode.NOT_FOUND, f"scenario {scenario.name!r} has no machine {certificate.name!r}")
        if await stores.machines(hub).certify_machine(machine.id, certificate.to_wire()):
            certified.append(machine.name)
            await hub.member_changed(scenario.id, machine.id)  # a joiner approved now is owed its compositions
    conn.send(Response({"certified": certified}), scenario=scenario.name, reply_to=env.id)


@handlers.on(EventsSubscribe)
async def events_subscribe(hub: Hub, conn: Connection, env: Envelope, body: EventsSubscribe) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    head = await stores.events(hub).last_cursor(scenario.id)
    after = head if body.after < 0 else min(body.after, head)
    # Answer first so the master knows the subscription exists before the first EVENT arrives.
    conn.send(Response({"cursor": head, "after": after}), scenario=body.scenario, reply_to=env.id)
    await hub.subscribe(conn, scenario, after)


@handlers.on(EventsUnsubscribe)
async def events_unsubscribe(hub: Hub, conn: Connection, env: Envelope, body: EventsUnsubscribe) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    await hub.unsubscribe(conn, scenario.id)
    conn.send(Response({}), reply_to=env.id)


@handlers.on(SystemReady, roles=(Role.DAEMON,))
async def system_ready(hub: Hub, conn: Connection, env: Envelope, body: SystemReady) -> None:
    ips = addresses_from_facts(body.facts)
    # Kept as sent (checked by masters, not here): a master uses these addresses only if the machine signed them.
    proof = {"at": body.at, "signature": body.signature} if body.signature else None
    await stores.machines(hub).update_machine(
        conn.id, status=MachineStatus.READY, last_seen=time.time(), facts=body.facts, ips=ips, ready_proof=proof
    )
    # The facts repeated in the event are kept as reported (a fact the daemon could not determine is None).
    facts = {k: body.facts[k] for k in MACHINE_READY_FACTS if k in body.facts}
    await hub.emit(conn.scenario_id, MachineReady(ips=ips, facts=facts), conn.machine_name)


FEATURE = Feature("scenarios", handlers)
