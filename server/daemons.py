"""What the hub does with each message a daemon sends: readiness, acknowledgements, output and results."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from protocol import Envelope, ErrorCode, MsgType, OrderKind, OrderState, ProtocolError, PublicKey, SignedResult
from protocol.certificates import addresses_from_facts
from protocol.events import (
    MACHINE_READY_FACTS,
    CommandDelivered,
    CommandFinished,
    CommandStarted,
    MachineKeyRotated,
    MachineReady,
)
from protocol.messages import OrderAck, OrderStarted, Output, Reconnect, Result, ResultAck, SystemReady
from server import futures, messaging
from server.connection import Connection, log_safe
from server.errors import RequestError
from server.hub import Hub
from server.masters import REPORT_KEY_PATTERN
from server.store import MachineStatus

log = logging.getLogger(__name__)

Handler = Callable[[Hub, Connection, Envelope], Awaitable[None]]


async def system_ready(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, SystemReady)
    ips = addresses_from_facts(body.facts)
    # Kept as sent (checked by masters, not here): a master uses these addresses only if the machine signed them.
    proof = {"at": body.at, "signature": body.signature} if body.signature else None
    await hub.store.update_machine(
        conn.id, status=MachineStatus.READY, last_seen=time.time(), facts=body.facts, ips=ips, ready_proof=proof
    )
    # The facts repeated in the event are kept as reported (a fact the daemon could not determine is None).
    facts = {k: body.facts[k] for k in MACHINE_READY_FACTS if k in body.facts}
    await hub.emit(conn.scenario_id, MachineReady(ips=ips, facts=facts), conn.machine_name)


# Orders a session remembers as its machine's (beyond those it delivered): enough for every command running at once.
_OWNED_CACHE = 4096


async def _own_order(hub: Hub, conn: Connection, order_id: str) -> bool:
    """Whether ``order_id`` is an order for this machine: a report about any other (another machine's, or one the
    hub does not know) is to be dropped, so no master sees output or progress a machine made up for it."""
    if order_id in conn.delivered or order_id in conn.owned_orders:
        return True
    order = await hub.store.order(order_id)
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


_PROGRESS: dict[MsgType, tuple[OrderState, type[CommandDelivered | CommandStarted]]] = {
    MsgType.ORDER_ACK: (OrderState.DELIVERED, CommandDelivered),
    MsgType.ORDER_STARTED: (OrderState.RUNNING, CommandStarted),
}


async def order_progress(hub: Hub, conn: Connection, env: Envelope) -> None:
    """ORDER_ACK (journaled by the daemon) and ORDER_STARTED move an order forward, never back."""
    body = env.body
    assert isinstance(body, OrderAck | OrderStarted)
    state, event = _PROGRESS[env.type]
    if await _own_order(hub, conn, body.order_id) and await hub.store.set_order_state(
        body.order_id, state, time.time()
    ):
        await hub.emit(conn.scenario_id, event(order_id=body.order_id), conn.machine_name)


async def output(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, Output)
    if body.stream not in ("stdout", "stderr"):
        raise RequestError(ErrorCode.INVALID_REQUEST, f"unknown output stream {body.stream!r}")
    if not await _own_order(hub, conn, body.order_id):
        return
    hub.forward_output(
        conn.scenario_id, conn.scenario_name, Output(body.order_id, body.stream, body.data, conn.machine_name)
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


async def result(hub: Hub, conn: Connection, env: Envelope) -> None:
    """Store a finished order's signed result (once) and acknowledge it so the daemon can drop its spool."""
    body = env.body
    assert isinstance(body, Result)
    signed = SignedResult.from_wire(body.result)
    if signed.machine != conn.id:
        raise ProtocolError(ErrorCode.WRONG_TARGET, "a machine can only report its own results", machine=signed.machine)
    await _verify_result(hub, conn, signed)
    if not signed.status.final:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"result status {signed.status.value} is not final")
    order = await hub.store.order(signed.order_id)
    if order is None or order.machine_id != conn.id:
        _not_its_own(hub, conn, signed.order_id)
    else:
        stored = await hub.store.store_result(
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
        machine = await hub.store.machine(conn.id)
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
    machine = await hub.store.machine(conn.id)
    if machine is None or machine.public_key == new_key.to_text():
        return  # gone, or this result was resent after the rotation was done
    # The signed result goes with the key: it is how masters (and daemons) accept the new key without the hub.
    await hub.store.rotate_machine_key(conn.id, new_key.to_text(), report.lower(), proof=signed.to_wire())
    await hub.emit(conn.scenario_id, MachineKeyRotated(public_key=new_key.to_text()), conn.machine_name)
    conn.send(Reconnect(0.0, "the machine key was rotated: reconnect with the new key"), scenario=conn.scenario_name)


async def nothing(hub: Hub, conn: Connection, env: Envelope) -> None:
    """PONG (and any answer we did not ask for): receiving it already refreshed the heartbeat."""


DAEMON_HANDLERS: dict[MsgType, Handler] = {
    MsgType.SYSTEM_READY: system_ready,
    MsgType.ORDER_ACK: order_progress,
    MsgType.ORDER_STARTED: order_progress,
    MsgType.OUTPUT: output,
    MsgType.RESULT: result,
    MsgType.PONG: nothing,
    MsgType.KV_SET: futures.kv_set,
    MsgType.KV_GET: futures.kv_get,
    MsgType.KV_WAIT: futures.kv_wait,
    MsgType.MSG_SEND: messaging.msg_send,
    MsgType.MSG_RECV: messaging.msg_recv,
}
