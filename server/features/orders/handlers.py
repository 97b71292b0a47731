"""Orders: a master's signed orders queued for its machines (with uploaded file contents), cancelled, and their
results; and what machines report about them (acknowledgements, live output, signed results).

The hub checks tenancy and who reports on which order; it does not need to trust the master's signatures: each
daemon verifies them against its own copy of the master key, so a compromised hub still cannot run anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from protocol import (
    Envelope,
    ErrorCode,
    MsgType,
    Order,
    OrderKind,
    OrderState,
    ProtocolError,
    PublicKey,
    Role,
    SignedResult,
)
from protocol.envelope import pack
from protocol.events import (
    CommandCancelRequested,
    CommandDelivered,
    CommandFinished,
    CommandQueued,
    CommandStarted,
    MachineKeyRotated,
)
from protocol.messages import (
    FileChunk,
    OrderAck,
    OrderCancel,
    OrderStarted,
    OrderSubmit,
    Output,
    Reconnect,
    Response,
    Result,
    ResultAck,
    ResultsQuery,
)
from protocol.orders import OrderEvent, advance, destination
from protocol.sealed_orders import is_sealed_body
from server.backplane import BackplaneUnavailable
from server.core import stores
from server.core.connection import Connection, log_safe
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError
from server.core.feature import Feature
from server.core.hub import Hub
from server.core.scope import order_in, owned_scenario
from server.features.scenarios import REPORT_KEY_PATTERN
from server.store import OrderRecord, ScenarioRecord, StoreConflict, StoreError
from server.uploads import UploadError

log = logging.getLogger(__name__)
handlers = HandlerTable()


# Orders a session remembers as its machine's (beyond those it delivered): enough for every command running at once.
_OWNED_CACHE = 4096


async def _own_order(hub: Hub, conn: Connection, order_id: str) -> bool:
    """Whether ``order_id`` is an order for this machine: a report about any other (another machine's, or one the
    hub does not know) is to be dropped, so no master sees output or progress a machine made up for it."""
    if order_id in conn.delivered or order_id in conn.owned_orders:
        return True
    order = await stores.orders(hub).order(order_id)
    if order is None or order.machine_id != conn.id:
        _not_its_own(hub, conn, order_id)
        return False
    if len(conn.owned_orders) >= _OWNED_CACHE:
        conn.owned_orders.clear()
    conn.owned_orders.add(order_id)
    return True


def _not_its_own(hub: Hub, conn: Connection, order_id: str) -> None:
    """Count a dropped report; log it once per session (a machine sending many must not flood the log)."""
    hub.metrics.foreign_reports.inc()
    if not conn.foreign_reported:
        conn.foreign_reported = True
        log.warning(
            "machine %s referred to order %s which is not its own: dropped (further ones on this session are "
            "only counted, crc_foreign_reports_total)", conn.id, log_safe(order_id),
        )  # fmt: skip


_PROGRESS: dict[MsgType, tuple[OrderEvent, type[CommandDelivered | CommandStarted]]] = {
    MsgType.ORDER_ACK: (OrderEvent.ACKNOWLEDGE, CommandDelivered),
    MsgType.ORDER_STARTED: (OrderEvent.START, CommandStarted),
}


@handlers.on(OrderAck, roles=(Role.DAEMON,))
async def order_acknowledged(hub: Hub, conn: Connection, env: Envelope, body: OrderAck) -> None:
    """Journaled by the daemon: from now on the machine has it."""
    await _progress(hub, conn, env.type, body.order_id)


@handlers.on(OrderStarted, roles=(Role.DAEMON,))
async def order_started(hub: Hub, conn: Connection, env: Envelope, body: OrderStarted) -> None:
    await _progress(hub, conn, env.type, body.order_id)


async def _progress(hub: Hub, conn: Connection, msg_type: MsgType, order_id: str) -> None:
    """ORDER_ACK and ORDER_STARTED move an order forward, never back: the store moves it only from the states
    the transition table allows (a late or repeated report is dropped), without a read of its own here."""
    order_event, payload = _PROGRESS[msg_type]
    state = destination(order_event)
    if await _own_order(hub, conn, order_id) and await stores.orders(hub).set_order_state(order_id, state, time.time()):
        await hub.emit(conn.scenario_id, payload(order_id=order_id), conn.machine_name)


@handlers.on(Output, roles=(Role.DAEMON,))
async def output(hub: Hub, conn: Connection, env: Envelope, body: Output) -> None:
    if body.stream not in ("stdout", "stderr"):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown output stream {body.stream!r}")
    if not await _own_order(hub, conn, body.order_id):
        return
    hub.forward_output(
        conn.scenario_id,
        conn.scenario_name,
        Output(body.order_id, body.stream, body.data, conn.machine_name, body.sealed),
    )


def _bounded(result: SignedResult, limit: int) -> dict[str, Any]:
    """The wire form, flagged truncated where the hub keeps less output than the daemon sent."""
    wire = result.to_wire()
    for stream in ("stdout", "stderr"):
        data: bytes = wire[stream]
        if len(data) > limit:
            wire[stream] = data[-limit:]
            wire[f"{stream}_truncated"] = True
    return wire


@handlers.on(Result, roles=(Role.DAEMON,))
async def result(hub: Hub, conn: Connection, env: Envelope, body: Result) -> None:
    """Store a finished order's signed result (once) and acknowledge it so the daemon can drop its spool."""
    signed = SignedResult.from_wire(body.result)
    if signed.machine != conn.id:
        raise ProtocolError(ErrorCode.WRONG_TARGET, "a machine can only report its own results", machine=signed.machine)
    if not signed.status.final:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"result status {signed.status.value} is not final")
    order = await stores.orders(hub).order(signed.order_id)
    if order is None or order.machine_id != conn.id:
        _not_its_own(hub, conn, signed.order_id)
    else:
        # Check once, where it matters: the session already proved which machine this is, and each master
        # verifies the signature against the key its own certificate names (an unverifiable result is shown
        # UNVERIFIED, never trusted). The hub acts on a result's signature only to register a rotated key.
        if order.kind == OrderKind.ROTATE_KEY.value:
            await _verify_result(hub, conn, signed)
        stored = await stores.orders(hub).store_result(
            signed.order_id, signed.status, _bounded(signed, hub.settings.output_limit), time.time()
        )
        if stored and signed.started is not None and signed.finished is not None:
            hub.metrics.command_duration.observe(max(0.0, signed.finished - signed.started))
        if stored and order.kind == OrderKind.ROTATE_KEY.value and signed.status is OrderState.SUCCEEDED:
            await _rotate_key(hub, conn, signed)
        if stored:
            finished = CommandFinished(
                order_id=signed.order_id, status=signed.status.value, exit_code=signed.exit_code, error=signed.error
            )
            await hub.emit(conn.scenario_id, finished, conn.machine_name)
    # Acknowledge even duplicates and orders the hub no longer knows, or the daemon would resend forever.
    conn.send(ResultAck(signed.order_id), scenario=conn.scenario_name)


async def _verify_result(hub: Hub, conn: Connection, signed: SignedResult) -> None:
    """Signed by the session's key, or (a result from before a key rotation, resent) by a former key."""
    try:
        signed.verify(conn.peer.public_key)
        return
    except ProtocolError:
        machine = await stores.machines(hub).machine(conn.id)
        for former in reversed(machine.former_keys if machine else []):
            try:
                signed.verify(PublicKey.from_text(former))
                return
            except ProtocolError:
                continue
        raise


async def _rotate_key(hub: Hub, conn: Connection, signed: SignedResult) -> None:
    """The daemon made a new key pair and reported its public half over its authenticated session: register it,
    then have the daemon reconnect with it. Its id, queue and history stay as they are."""
    extra = signed.extra or {}
    try:
        new_key = PublicKey.from_text(str(extra.get("public_key", "")))
    except ProtocolError as exc:
        log.warning("machine %s reported a rotated key that is not one: %s", conn.id, exc.message)
        return
    report = str(extra.get("report_key", ""))
    if not REPORT_KEY_PATTERN.match(report):
        report = ""
    machine = await stores.machines(hub).machine(conn.id)
    if machine is None or machine.public_key == new_key.to_text():
        return  # gone, or this result was resent after the rotation was done
    # The signed result goes with the key: it is how masters (and daemons) accept the new key without the hub.
    await stores.machines(hub).rotate_machine_key(conn.id, new_key.to_text(), report.lower(), proof=signed.to_wire())
    await hub.emit(conn.scenario_id, MachineKeyRotated(public_key=new_key.to_text()), conn.machine_name)
    conn.send(Reconnect(0.0, "the machine key was rotated: reconnect with the new key"), scenario=conn.scenario_name)


RESULTS_PAGE_BYTES = 512 * 1024


def order_summary(order: Order) -> CommandQueued:
    # The body is the master's, not checked here (the daemon checks it): its values are repeated as they are.
    body = order.body
    sealed = is_sealed_body(body)
    return CommandQueued(
        order_id=order.id,
        kind=order.kind.value,
        command=str(body.get("command", ""))[:200] if order.kind is OrderKind.EXEC and not sealed else None,
        sealed=True if sealed else None,
        path=body.get("path", "") if order.kind is OrderKind.PUT_FILE else None,
        wheel=body.get("wheel", "") if order.kind is OrderKind.UPDATE else None,
        job=body["job"] if body.get("job") else None,
    )


@handlers.on(OrderSubmit)
async def order_submit(hub: Hub, conn: Connection, env: Envelope, body: OrderSubmit) -> None:
    """Queue a master-signed order for one machine of the master's scenario.

    The hub checks tenancy but deliberately does not need to trust the signature: the daemon verifies it
    against its own copy of the master key, so a compromised hub still cannot run anything.
    """
    try:
        order = Order.from_wire(body.order)
        if order.master != conn.id:
            raise RequestError(ErrorCode.FORBIDDEN, "orders must be signed by the master that submits them")
        scenario = await owned_scenario(hub, conn.id, order.scenario)
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
    if not order.expires <= time.time() + hub.settings.order_ttl_max:  # "not <=": a NaN expiry is refused too
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
    wire: dict[str, Any] | None = None,
) -> None:
    """Store a signed order for one machine of ``scenario`` and try to deliver it; ``accepted`` is called once it
    is stored (from then on it is the hub's to deliver, so later failures are logged, not reported).

    ``wire``: what the machine is sent when it is not ``order`` itself: a composition's play
    (``protocol.compositions.MemberOrder``), valid as long as its composition, so the order lifetime limit does
    not apply (the daemon remembers such an id for good).

    Raises:
        RequestError: no such machine here, its queue is full, the expiry is too far, or the id was used.
    """
    if not hub.backplane.available:
        # Never accept and drop: without the backplane this replica cannot be sure to route the order.
        raise RequestError(ErrorCode.UNAVAILABLE, "backplane unavailable; nothing was queued, try again shortly")
    machine = await stores.machines(hub).machine(order.machine)
    if machine is None or machine.scenario_id != scenario.id:
        raise RequestError(
            ErrorCode.NOT_FOUND,
            f"scenario {scenario.name!r} has no machine {order.machine!r}",
            machine=order.machine,
        )
    if await stores.orders(hub).queued_count(machine.id) >= hub.settings.max_queued_per_machine:
        raise RequestError(
            ErrorCode.QUEUE_FULL,
            f"machine {machine.name!r} already has {hub.settings.max_queued_per_machine} orders waiting; "
            "nothing was queued (wait until it catches up, or cancel some)",
            machine=machine.name,
        )
    if wire is None:
        refuse_long_lived(hub, order)
    now = time.time()
    record = OrderRecord(
        order.id, scenario.id, machine.id, order.kind.value, wire or order.to_wire(), OrderState.QUEUED, now, now
    )
    try:
        await stores.orders(hub).add_order(record, chunks)
    except StoreConflict:
        raise RequestError(ErrorCode.ALREADY_EXISTS, f"order id {order.id} was used before") from None
    # Stored means accepted: from here on a failure must not be reported as a refusal. Delivery catches up
    # when the machine reconnects or the backplane comes back.
    accepted()
    try:
        await hub.emit(scenario.id, order_summary(order), machine.name)
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


@handlers.on(FileChunk)
async def file_chunk(hub: Hub, conn: Connection, env: Envelope, body: FileChunk) -> None:
    """Collect one chunk of an upload; chunks come in order, and one master's sessions on this replica may hold a
    bounded total (``max_upload_bytes``) until the orders naming them are submitted."""
    if body.index == 0:
        conn.uploads.release(body.order_id)  # sent again from the start: what it held does not count twice
    pending = sum(session.uploads.size for session in hub.sessions.masters.get(conn.id, ()))
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


@handlers.on(OrderCancel)
async def order_cancel(hub: Hub, conn: Connection, env: Envelope, body: OrderCancel) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    order = await order_in(hub, scenario, body.order_id)
    state = await cancel_order(hub, scenario, order)
    conn.send(Response({"order_id": order.id, "state": state.value}), reply_to=env.id)


async def cancel_order(hub: Hub, scenario: ScenarioRecord, order: OrderRecord) -> OrderState:
    """Cancel an order: final at once if it never reached its machine, else asked of the daemon."""
    machine = await stores.machines(hub).machine(order.machine_id)
    machine_name = machine.name if machine else ""
    if order.state is OrderState.QUEUED and await hub.locate(order.machine_id) is None:
        # Never reached the machine: cancelling it here is final and nothing runs.
        cancelled = advance(order.state, OrderEvent.CANCEL)
        await stores.orders(hub).store_result(order.id, cancelled, {}, time.time())
        finished = CommandFinished(
            order_id=order.id, status=cancelled.value, exit_code=None, error="cancelled before delivery"
        )
        await hub.emit(scenario.id, finished, machine_name)
        return cancelled
    if not order.state.final:
        await hub.cancel_on_machine(order.machine_id, order.id, scenario.name)
        await hub.emit(scenario.id, CommandCancelRequested(order_id=order.id), machine_name)
    return order.state


@handlers.on(ResultsQuery)
async def results_query(hub: Hub, conn: Connection, env: Envelope, body: ResultsQuery) -> None:
    scenario = await owned_scenario(hub, conn.id, body.scenario)
    names = {m.id: m.name for m in await stores.machines(hub).machines(scenario.id)}
    records = await stores.orders(hub).orders(scenario.id, body.order_ids or None)
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


FEATURE = Feature("orders", handlers)
