"""What the hub does with each request a master sends. Every handler answers with RESPONSE or raises
``RequestError`` (answered as ERROR). A master only ever sees and targets its own scenarios."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from protocol import Envelope, ErrorCode, MsgType, Order, OrderKind, OrderState, ProtocolError, PublicKey
from protocol.certificates import MachineCertificate
from protocol.envelope import pack
from protocol.events import CommandCancelRequested, CommandFinished, CommandQueued, MachineRevoked, ScenarioCreated
from protocol.messages import (
    DistPut,
    EventsSubscribe,
    EventsUnsubscribe,
    FileChunk,
    MachineCertify,
    MachineRevoke,
    MasterRekey,
    OrderCancel,
    OrderSubmit,
    Response,
    ResultsQuery,
    ScenarioCreate,
    ScenarioDelete,
    ScenarioShow,
    master_rekey_payload,
)
from server import futures, jobs, messaging, plans, tokens
from server.backplane import BackplaneUnavailable
from server.backplane.base import BROADCAST_CHANNEL
from server.connection import Connection
from server.dist_files import DistConflict, put_file
from server.errors import RequestError, check_name
from server.hub import Hub
from server.store import MachineSpec, MachineStatus, OrderRecord, ScenarioRecord, StoreConflict, StoreError
from server.uploads import UploadError

log = logging.getLogger(__name__)

OPERATING_SYSTEMS = ("linux", "windows")
REPORT_KEY_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
# Machines per scenario-show page: each with its facts is well under 1 KiB, so a page stays far below 1 MiB.
MACHINES_PAGE = 250
RESULTS_PAGE_BYTES = 512 * 1024

Handler = Callable[[Hub, Connection, Envelope], Awaitable[None]]


async def owned_scenario(hub: Hub, conn: Connection, name: str) -> ScenarioRecord:
    """The master's scenario of that name; another master's scenario is reported as not found."""
    scenario = await hub.store.scenario_by_name(conn.id, name)
    if scenario is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {name!r}", scenario=name)
    return scenario


async def _machines_wire(
    hub: Hub, scenario: ScenarioRecord, after: str = "", limit: int | None = None, *, proofs: bool = False
) -> list[dict[str, Any]]:
    """The scenario's machines as stored (by name, after ``after``, at most ``limit``), shown offline where no
    replica holds their session any more; with ``proofs``, what a master checks them by (binary: not for JSON)."""
    machines = []
    stored = sorted((m for m in await hub.store.machines(scenario.id) if m.name > after), key=lambda m: m.name)
    for machine in stored[:limit]:
        wire = {**machine.to_wire(), **(machine.proofs_wire() if proofs else {})}
        if machine.status is not MachineStatus.OFFLINE and await hub.locate(machine.id) is None:
            wire["status"] = MachineStatus.OFFLINE.value  # its replica died without saying so
        machines.append(wire)
    return machines


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
        "cursor": await hub.store.last_cursor(scenario.id),
        "machines": machines[:limit],
        "more": len(machines) > limit,
    }


LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}$")
MAX_LABELS = 32


def _labels(machine: str, raw: Any) -> dict[str, str]:
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
    if not raw:
        raise RequestError(ErrorCode.INVALID_REQUEST, "a scenario needs at least one machine")
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
        spec = MachineSpec(name, os_name, role, key, report_key.lower(), _labels(name, item.get("labels")))
        specs.append(replace(spec, certificate=_certificate(master_key, scenario, spec, item.get("certificate"))))
    if len({s.name for s in specs}) != len(specs):
        raise RequestError(ErrorCode.INVALID_REQUEST, "machine names in a scenario must be unique")
    if len({s.id for s in specs}) != len(specs):
        raise RequestError(ErrorCode.INVALID_REQUEST, "each machine needs its own key")
    return specs


async def scenario_create(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, ScenarioCreate)
    check_name("scenario", body.name)
    specs = _machine_specs(conn.peer.public_key, body.name, body.machines)
    if await hub.store.master(conn.id) is None:
        raise RequestError(ErrorCode.REVOKED, "this master is no longer enrolled on the hub")
    try:
        scenario = await hub.store.create_scenario(conn.id, body.name, specs, time.time())
    except StoreConflict:
        raise RequestError(
            ErrorCode.ALREADY_EXISTS,
            f"scenario {body.name!r} exists already, or a machine key is in use elsewhere",
        ) from None
    await hub.emit(scenario.id, ScenarioCreated(machines=[s.name for s in specs]), "")
    conn.send(Response(await scenario_wire(hub, scenario, proofs=True)), scenario=body.name, reply_to=env.id)


async def scenario_list(hub: Hub, conn: Connection, env: Envelope) -> None:
    items = []
    for scenario in await hub.store.scenarios(conn.id):
        machines = await _machines_wire(hub, scenario)
        items.append(
            {
                "name": scenario.name,
                "created": scenario.created,
                "machines": len(machines),
                "ready": sum(1 for m in machines if m["status"] == MachineStatus.READY.value),
            }
        )
    conn.send(Response({"scenarios": items}), reply_to=env.id)


async def scenario_show(hub: Hub, conn: Connection, env: Envelope) -> None:
    """The scenario with one page of its machines: a scenario of thousands does not fit one frame."""
    body = env.body
    assert isinstance(body, ScenarioShow)
    scenario = await owned_scenario(hub, conn, body.name)
    wire = await scenario_wire(hub, scenario, body.after, body.limit, proofs=True)
    conn.send(Response(wire), scenario=body.name, reply_to=env.id)


async def scenario_delete(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, ScenarioDelete)
    scenario = await owned_scenario(hub, conn, body.name)
    for watcher in list(hub.subscriptions.get(scenario.id, {})):
        await hub.unsubscribe(watcher, scenario.id)
    machine_ids = await hub.store.delete_scenario(scenario.id)
    await hub.revoke(machine_ids, f"scenario {body.name!r} was deleted; this machine's key is revoked")
    conn.send(Response({"deleted": body.name, "revoked": machine_ids}), reply_to=env.id)


async def machine_revoke(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, MachineRevoke)
    scenario = await owned_scenario(hub, conn, body.scenario)
    machine = next((m for m in await hub.store.machines(scenario.id) if m.name == body.machine), None)
    if machine is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"scenario {scenario.name!r} has no machine {body.machine!r}")
    await hub.store.delete_machine(machine.id)
    await hub.revoke([machine.id], f"machine {machine.name!r} was revoked from scenario {scenario.name!r}")
    await hub.emit(scenario.id, MachineRevoked(machine_id=machine.id), machine.name)
    conn.send(Response({"revoked": machine.id}), scenario=scenario.name, reply_to=env.id)


async def machine_certify(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Store certificates this master endorsed anew (after ``crc rotate-key``, or adopting older machines)."""
    body = env.body
    assert isinstance(body, MachineCertify)
    scenario = await owned_scenario(hub, conn, body.scenario)
    by_id = {m.id: m for m in await hub.store.machines(scenario.id)}
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
        if await hub.store.certify_machine(machine.id, certificate.to_wire()):
            certified.append(machine.name)
    conn.send(Response({"certified": certified}), scenario=scenario.name, reply_to=env.id)


def _order_summary(order: Order) -> CommandQueued:
    # The body is the master's, not checked here (the daemon checks it): its values are repeated as they are.
    body = order.body
    return CommandQueued(
        order_id=order.id,
        kind=order.kind.value,
        command=str(body.get("command", ""))[:200] if order.kind is OrderKind.EXEC else None,
        path=body.get("path", "") if order.kind is OrderKind.PUT_FILE else None,
        wheel=body.get("wheel", "") if order.kind is OrderKind.UPDATE else None,
        job=body["job"] if body.get("job") else None,
    )


async def order_submit(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Queue a master-signed order for one machine of the master's scenario.

    The hub checks tenancy but deliberately does not need to trust the signature: the daemon verifies it
    against its own copy of the master key, so a compromised hub still cannot run anything.
    """
    body = env.body
    assert isinstance(body, OrderSubmit)
    try:
        order = Order.from_wire(body.order)
        if order.master != conn.id:
            raise RequestError(ErrorCode.FORBIDDEN, "orders must be signed by the master that submits them")
        scenario = await owned_scenario(hub, conn, order.scenario)
        chunks = _uploaded_chunks(conn, order, body.upload) if order.kind is OrderKind.PUT_FILE else []
        await queue_order(hub, scenario, order, chunks, accepted=lambda: conn.send(
            Response({"order_id": order.id, "state": OrderState.QUEUED.value}), reply_to=env.id
        ))  # fmt: skip
    finally:
        if body.last_use and body.upload:
            conn.uploads.release(body.upload)  # stored with its orders now (or refused): the hub's memory lets go


def refuse_long_lived(hub: Hub, order: Order, where: str = "") -> None:
    """Refuse an order valid for longer than the hub's limit (never above ``MAX_ORDER_TTL``): daemons refuse
    those too, since they could not remember its id for as long as a copy of it could verify.

    Raises:
        RequestError: INVALID_REQUEST, naming the limit.
    """
    if order.expires > time.time() + hub.settings.order_ttl_max:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"{where}order expiry is too far in the future: orders may be valid for at most "
            f"{hub.settings.order_ttl_max / 86400:g} days (daemons could not tell a longer-lived one from a "
            "replay); nothing was queued",
            machine=order.machine,
        )


async def queue_order(
    hub: Hub,
    scenario: ScenarioRecord,
    order: Order,
    chunks: list[bytes],
    *,
    accepted: Callable[[], None] = lambda: None,
) -> None:
    """Store a signed order for one machine of ``scenario`` and try to deliver it; ``accepted`` is called once it
    is stored (from then on it is the hub's to deliver, so later failures are logged, not reported).

    Raises:
        RequestError: no such machine here, its queue is full, the expiry is too far, or the id was used.
    """
    if not hub.backplane.available:
        # Never accept and drop: without the backplane this replica cannot be sure to route the order.
        raise RequestError(ErrorCode.UNAVAILABLE, "backplane unavailable; nothing was queued, try again shortly")
    machine = await hub.store.machine(order.machine)
    if machine is None or machine.scenario_id != scenario.id:
        raise RequestError(
            ErrorCode.NOT_FOUND,
            f"scenario {scenario.name!r} has no machine {order.machine!r}",
            machine=order.machine,
        )
    if await hub.store.queued_count(machine.id) >= hub.settings.max_queued_per_machine:
        raise RequestError(
            ErrorCode.QUEUE_FULL,
            f"machine {machine.name!r} already has {hub.settings.max_queued_per_machine} orders waiting; "
            "nothing was queued (wait until it catches up, or cancel some)",
            machine=machine.name,
        )
    refuse_long_lived(hub, order)
    now = time.time()
    record = OrderRecord(
        order.id, scenario.id, machine.id, order.kind.value, order.to_wire(), OrderState.QUEUED, now, now
    )
    try:
        await hub.store.add_order(record, chunks)
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"order id {order.id} was used before") from None
    # Stored means accepted: from here on a failure must not be reported as a refusal. Delivery catches up
    # when the machine reconnects or the backplane comes back.
    accepted()
    try:
        await hub.emit(scenario.id, _order_summary(order), machine.name)
        await hub.deliver_queued(machine.id, record)
    except (StoreError, BackplaneUnavailable) as exc:
        log.warning("order %s is queued but could not be announced or delivered yet: %s", order.id, exc)


def _uploaded_chunks(conn: Connection, order: Order, upload_id: str) -> list[bytes]:
    """The chunks a file order refers to, checked against the size, count and SHA-256 the master signed."""
    upload = conn.uploads.get(upload_id, time.monotonic())
    if upload is None:
        raise RequestError(
            ErrorCode.NOT_FOUND,
            f"no upload {upload_id!r} on this session (never sent, used up, or unused for "
            f"{conn.uploads.idle:.0f} s): send the file's chunks first",
            upload=upload_id,
        )
    if len(upload.chunks) != order.body.get("chunks") or upload.size != order.body.get("size"):
        raise RequestError(ErrorCode.INVALID_REQUEST, "the upload's chunk count or size does not match the file order")
    if upload.sha256() != order.body.get("sha256"):
        raise RequestError(ErrorCode.INVALID_REQUEST, "the upload's SHA-256 does not match the file order")
    return upload.chunks


async def dist_put(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Put a file this master uploaded into the dist folder machines install from (nothing there is trusted: the
    hashes machines check come from the master's signature)."""
    body = env.body
    assert isinstance(body, DistPut)
    upload = conn.uploads.pop(body.upload)
    if upload is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"no upload {body.upload!r} on this session: send its chunks first")
    content = b"".join(upload.chunks)
    if upload.sha256() != body.upload:
        raise RequestError(ErrorCode.INVALID_REQUEST, "the upload's SHA-256 is not its id")
    try:
        added = await asyncio.to_thread(put_file, hub.settings.dist_dir, body.name, content)
    except DistConflict as exc:
        raise RequestError(ErrorCode.ALREADY_EXISTS, str(exc), name=body.name) from None
    except ValueError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None
    except OSError as exc:
        raise RequestError(ErrorCode.UNAVAILABLE, f"cannot write to the hub's dist folder: {exc.strerror}") from None
    conn.send(Response({"name": body.name, "sha256": body.upload, "added": added}), reply_to=env.id)


async def file_chunk(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Collect one chunk of an upload; chunks come in order, and one master's sessions on this replica may hold a
    bounded total (``max_upload_bytes``) until the orders naming them are submitted."""
    body = env.body
    assert isinstance(body, FileChunk)
    if body.index == 0:
        conn.uploads.release(body.order_id)  # sent again from the start: what it held does not count twice
    pending = sum(session.uploads.size for session in hub.masters.get(conn.id, ()))
    if pending + len(body.data) > hub.settings.max_upload_bytes:
        conn.uploads.release(body.order_id)
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"uploads waiting for their orders are limited to {hub.settings.max_upload_bytes} bytes per master; "
            "submit the orders of earlier ones first",
            limit=hub.settings.max_upload_bytes,
        )
    try:
        conn.uploads.add(body.order_id, body.index, body.data, time.monotonic())
    except UploadError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from None


async def order_cancel(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, OrderCancel)
    scenario = await owned_scenario(hub, conn, body.scenario)
    order = await hub.store.order(body.order_id)
    if order is None or order.scenario_id != scenario.id:
        raise RequestError(ErrorCode.NOT_FOUND, f"no order {body.order_id} in scenario {body.scenario!r}")
    state = await cancel_order(hub, scenario, order)
    conn.send(Response({"order_id": order.id, "state": state.value}), reply_to=env.id)


async def cancel_order(hub: Hub, scenario: ScenarioRecord, order: OrderRecord) -> OrderState:
    """Cancel an order: final at once if it never reached its machine, else asked of the daemon."""
    machine = await hub.store.machine(order.machine_id)
    machine_name = machine.name if machine else ""
    if order.state is OrderState.QUEUED and await hub.locate(order.machine_id) is None:
        # Never reached the machine: cancelling it here is final and nothing runs.
        await hub.store.store_result(order.id, OrderState.CANCELLED, {}, time.time())
        finished = CommandFinished(
            order_id=order.id, status=OrderState.CANCELLED.value, exit_code=None, error="cancelled before delivery"
        )
        await hub.emit(scenario.id, finished, machine_name)
        return OrderState.CANCELLED
    if not order.state.final:
        await hub.cancel_on_machine(order.machine_id, order.id, scenario.name)
        await hub.emit(scenario.id, CommandCancelRequested(order_id=order.id), machine_name)
    return order.state


async def results_query(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, ResultsQuery)
    scenario = await owned_scenario(hub, conn, body.scenario)
    names = {m.id: m.name for m in await hub.store.machines(scenario.id)}
    records = await hub.store.orders(scenario.id, body.order_ids or None)
    orders: list[dict[str, Any]] = []
    size = 0
    position = max(0, body.skip)
    # Results carry output (up to 2 x output_limit each): fill the page by size, at least one per page.
    while position < len(records):
        item = records[position].to_wire()
        item["machine_name"] = names.get(records[position].machine_id, "")
        cost = len(pack(item))
        if orders and size + cost > RESULTS_PAGE_BYTES:
            break
        orders.append(item)
        size += cost
        position += 1
    following = position if position < len(records) else -1
    conn.send(Response({"orders": orders, "next": following}), scenario=body.scenario, reply_to=env.id)


async def events_subscribe(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, EventsSubscribe)
    scenario = await owned_scenario(hub, conn, body.scenario)
    head = await hub.store.last_cursor(scenario.id)
    after = head if body.after < 0 else min(body.after, head)
    # Answer first so the master knows the subscription exists before the first EVENT arrives.
    conn.send(Response({"cursor": head, "after": after}), scenario=body.scenario, reply_to=env.id)
    await hub.subscribe(conn, scenario, after)


async def events_unsubscribe(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, EventsUnsubscribe)
    scenario = await owned_scenario(hub, conn, body.scenario)
    await hub.unsubscribe(conn, scenario.id)
    conn.send(Response({}), reply_to=env.id)


async def master_rekey(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Move this master to a new key (proved by the new key's signature); its other sessions are closed, and
    this one should be too (the SDK reconnects with the new key)."""
    body = env.body
    assert isinstance(body, MasterRekey)
    try:
        new_key = PublicKey.from_text(body.public_key)
        new_key.verify(body.proof, master_rekey_payload(conn.id, new_key.to_text()))
    except ProtocolError as exc:
        raise RequestError(exc.code, f"the new key's proof does not hold: {exc.message}") from None
    try:
        record = await hub.store.rekey_master(conn.id, new_key.to_text())
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, "that key is enrolled already") from None
    if record is None:
        raise RequestError(ErrorCode.REVOKED, "this master is no longer enrolled on the hub")
    log.info("master %s (%s) moved to a new key: now %s", record.name, conn.id, record.id)
    conn.send(Response({"master": record.id, "name": record.name}), reply_to=env.id)
    for other in [c for c in hub.masters.get(conn.id, set()) if c is not conn]:
        await other.close(ErrorCode.REVOKED, "this master moved to a new key")
    hub.backplane.publish(BROADCAST_CHANNEL, {"kind": "drop_master", "master": conn.id})


MASTER_HANDLERS: dict[MsgType, Handler] = {
    MsgType.SCENARIO_CREATE: scenario_create,
    MsgType.SCENARIO_LIST: scenario_list,
    MsgType.SCENARIO_SHOW: scenario_show,
    MsgType.SCENARIO_DELETE: scenario_delete,
    MsgType.MACHINE_REVOKE: machine_revoke,
    MsgType.MACHINE_CERTIFY: machine_certify,
    MsgType.DIST_PUT: dist_put,
    MsgType.MASTER_REKEY: master_rekey,
    MsgType.JOB_PUT: jobs.job_put,
    MsgType.JOB_LIST: jobs.job_list,
    MsgType.JOB_SHOW: jobs.job_show,
    MsgType.JOB_DELETE: jobs.job_delete,
    MsgType.KV_SET: futures.kv_set,
    MsgType.KV_GET: futures.kv_get,
    MsgType.KV_WAIT: futures.kv_wait,
    MsgType.PLAN_SUBMIT: plans.plan_submit,
    MsgType.PLAN_SHOW: plans.plan_show,
    MsgType.PLAN_LIST: plans.plan_list,
    MsgType.PLAN_CANCEL: plans.plan_cancel,
    MsgType.MSG_SEND: messaging.msg_send,
    MsgType.TOKEN_CREATE: tokens.token_create,
    MsgType.TOKEN_LIST: tokens.token_list,
    MsgType.TOKEN_REVOKE: tokens.token_revoke,
    MsgType.TOKEN_RENEW: tokens.token_renew,
    MsgType.ORDER_SUBMIT: order_submit,
    MsgType.FILE_CHUNK: file_chunk,
    MsgType.ORDER_CANCEL: order_cancel,
    MsgType.RESULTS_QUERY: results_query,
    MsgType.EVENTS_SUBSCRIBE: events_subscribe,
    MsgType.EVENTS_UNSUBSCRIBE: events_unsubscribe,
}
