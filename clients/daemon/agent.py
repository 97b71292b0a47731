"""The OS-independent daemon: connects out to the hub, verifies and runs master-signed orders, reports results.

Guarantees, backed by the journal in the state dir:
- an order id is carried out at most once, even when the hub delivers it again or the daemon restarts;
- results are kept until the hub acknowledges them, and resent on every reconnect;
- an order that was running when the daemon died is reported as ``interrupted``, never rerun.
Orders run in the order they arrived (``parallel = 1``), also across reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from clients.daemon import keys, localsocket, update
from clients.daemon.config import DaemonConfig
from clients.daemon.executor import ExecRequest, ExecStatus, Executor, ProcessExecutor
from clients.daemon.facts import collect_facts
from clients.daemon.files import FileIntegrityError, StagedFile
from clients.daemon.hosts import apply_hosts_file, parse_entries
from clients.daemon.journal import Journal
from clients.daemon.journal import OrderState as JournalState
from clients.daemon.platform import PlatformDefaults, current_platform
from clients.daemon.reports import report_step
from clients.daemon.sealed_files import install_sealed_file
from clients.link import HubLink, LinkClosed
from protocol import (
    CrcError,
    Envelope,
    ErrorCode,
    MsgType,
    Order,
    OrderKind,
    OrderState,
    ProtocolError,
    RemoteError,
    Role,
    SignedResult,
)
from protocol.boot import BootStatus, report_key
from protocol.certificates import ReadyStatement
from protocol.compositions import Member, MemberOrder, certified_member, check_member_order, is_member_order
from protocol.messages import (
    Body,
    Cancel,
    Deliver,
    Error,
    FileChunk,
    KvGet,
    KvSet,
    KvWait,
    MsgRecv,
    MsgSend,
    OrderAck,
    OrderStarted,
    Output,
    Reconnect,
    Result,
    ResultAck,
    SystemReady,
)
from protocol.order_bodies import (
    MIN_SECRET_BYTES,
    ExecBody,
    HostsBody,
    OrderBody,
    PutFileBody,
    TrustMasterBody,
    UpdateBody,
    file_context,
    parse_body,
    secret_context,
)
from protocol.orders import EXPIRY_SLACK, MAX_ORDER_TTL
from protocol.retry import backoff_delays, is_retryable
from protocol.sealed_files import ContentKey
from protocol.sealed_orders import (
    SEALED_KINDS,
    SEALED_RESULT_FIELDS,
    is_sealed_body,
    open_body,
    reply_key_of,
    seal_output,
    seal_result,
)
from protocol.sealing import sealing_key, unseal_any
from protocol.signed_values import SignedValue, ValueKind, VerifiedValue, WriterKind, untrusted_message, verify_value

log = logging.getLogger(__name__)

try:
    DAEMON_VERSION = metadata.version("cloudremotecontrol")
except metadata.PackageNotFoundError:  # running from a source tree
    DAEMON_VERSION = "0.0.0+source"

JOURNAL_KEEP = 7 * 24 * 3600.0
# How long received order ids are remembered: well beyond the longest an order may be valid (MAX_ORDER_TTL, and
# the daemon refuses any that claims longer), so no valid order can be run again from a forgotten id.
ID_MEMORY = 4 * JOURNAL_KEEP
assert ID_MEMORY > 2 * (MAX_ORDER_TTL + EXPIRY_SLACK)
POWERSHELL_ON_POSIX = ("pwsh", "-NoProfile", "-NonInteractive", "-Command")
RESEND_INTERVAL = 5.0
SEEN_MESSAGES = 1024  # message ids remembered against replays: bounded, so an old enough replay gets through

_EXEC_STATES = {
    ExecStatus.SUCCEEDED: OrderState.SUCCEEDED,
    ExecStatus.FAILED: OrderState.FAILED,
    ExecStatus.TIMED_OUT: OrderState.TIMED_OUT,
    ExecStatus.CANCELLED: OrderState.CANCELLED,
}


# How a pre-session refusal is logged, so an operator sees at once that the hub (or someone posing as it) says
# the key is no longer enrolled, and that the daemon nevertheless keeps trying.
_KEY_REFUSALS = {
    ErrorCode.REVOKED.value: "this machine's key is revoked",
    ErrorCode.UNKNOWN_IDENTITY.value: "this machine's key is revoked or was never enrolled",
    ErrorCode.UNSUPPORTED_VERSION.value: "it does not speak this daemon's protocol version",
}


class Revoked(CrcError):
    """The hub, inside an authenticated session, said it no longer accepts this machine (scenario deleted, key
    revoked). Refusals outside a session are unauthenticated and only ever retried."""


@dataclass
class _IncomingFile:
    """A file order whose chunks are still arriving; it is acknowledged only once complete."""

    order: Order
    spool: Path
    expected: int
    received: int = 0


@dataclass
class DaemonOptions:
    state_dir: Path
    hosts_file: Path
    platform: PlatformDefaults = field(default_factory=current_platform)
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    # The daemon's own clock, against which it checks expiries and dates what it remembers (tests move it).
    clock: Callable[[], float] = time.time


class Daemon:
    """One machine's daemon. ``await Daemon(config, options).run(stop)`` until ``stop`` is set."""

    def __init__(self, config: DaemonConfig, options: DaemonOptions, executor: Executor | None = None) -> None:
        self.options = options
        self._now = options.clock
        self.executor = executor or ProcessExecutor()
        options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config = keys.current_config(config, options.state_dir)
        self.spool_dir = options.state_dir / "incoming"
        self.spool_dir.mkdir(exist_ok=True, mode=0o700)
        self.journal = Journal(options.state_dir)
        self.link: HubLink | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._incoming: dict[str, _IncomingFile] = {}
        self._cancels: dict[str, asyncio.Event] = {}
        self._pings: set[str] = set()  # answered pings awaiting the hub's acknowledgement (never journaled)
        self._leaving: asyncio.Task[None] | None = None
        self._stop_self = asyncio.Event()
        self._confirmed = False
        self._background: set[asyncio.Task[None]] = set()
        self.exit_code = 0  # what crc-daemon exits with once run() returns (update.EXIT_RESTART: restart me)
        self._handlers: dict[MsgType, Callable[[Envelope], Awaitable[None]]] = {
            MsgType.DELIVER: self._on_deliver,
            MsgType.FILE_CHUNK: self._on_file_chunk,
            MsgType.CANCEL: self._on_cancel,
            MsgType.RESULT_ACK: self._on_result_ack,
            MsgType.ERROR: self._on_error,
            MsgType.RECONNECT: self._on_reconnect,
        }
        self.socket_path = options.state_dir / localsocket.SOCKET_NAME  # where run() serves it (maybe elsewhere)

    # lifecycle
    async def run(self, stop: asyncio.Event) -> None:
        """Recover from the journal, start the workers, and stay connected until ``stop`` is set.

        Raises:
            Revoked: the hub revoked this machine inside a sealed session (the only refusal taken as final).
        """
        self._recover()
        local = None
        if sys.platform != "win32":
            self.socket_path = localsocket.socket_path(self.options.state_dir)
            try:
                local = await localsocket.serve(self.socket_path, self._local_request)
            except OSError as exc:
                log.warning("no local socket at %s (crc-daemon kv will not work here): %s", self.socket_path, exc)
        workers = [asyncio.create_task(self._worker(), name=f"worker-{i}") for i in range(self.config.parallel)]
        connector = asyncio.create_task(self._connect_loop(), name="connect")
        stopper = asyncio.create_task(stop.wait())
        self_stopper = asyncio.create_task(self._stop_self.wait())
        trial = asyncio.create_task(self._trial_deadline()) if update.in_trial() else None
        tasks = {connector, stopper, self_stopper} | ({trial} if trial else set())
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if connector.done():
                connector.result()  # re-raise Revoked
        finally:
            for task in (*tasks, *workers):
                task.cancel()
            await asyncio.gather(*tasks, *workers, return_exceptions=True)
            if self.link is not None:
                await self.link.close()
            if local is not None:
                local.close()
                localsocket.remove_socket(self.socket_path, self.options.state_dir)
            self.journal.close()

    async def _trial_deadline(self) -> None:
        """A new build on trial must reach the hub in time; if not, exit so the launcher rolls it back."""
        await asyncio.sleep(update.trial_seconds())
        if self._confirmed:
            await asyncio.Event().wait()  # proven: nothing more to do
        log.error("this build did not reach the hub within %.0f s of starting; exiting", update.trial_seconds())
        self.exit_code = 1

    def _after_connect(self) -> None:
        """Connected: a build on trial has proven itself; tell the hub, and about any rolled-back build."""
        reports: list[tuple[str, BootStatus, str]] = []
        build = update.confirm(self.options.state_dir)
        if build is not None:
            self._confirmed = True
            reports.append(("update-confirmed", BootStatus.OK, f"now running {build.version}"))
        note = update.take_rollback_note(self.options.state_dir)
        if note is not None:
            detail = f"{note.get('reason')}; back on {DAEMON_VERSION} (tried {note.get('version')})"
            reports.append(("update-rolled-back", BootStatus.FAILED, detail))
        if reports:
            task = asyncio.create_task(self._report_all(reports))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _report_all(self, reports: list[tuple[str, BootStatus, str]]) -> None:
        for step, status, detail in reports:
            await report_step(self.config, step, status, detail)

    def _recover(self) -> None:
        """After a crash: report interrupted orders, requeue received ones, drop half-received files."""
        now = self._now()
        for entry in self.journal.running():
            order = Order.from_wire(entry.order)
            log.warning("order %s was running when the daemon stopped: reporting it interrupted", order.id)
            self._record(order, OrderState.INTERRUPTED, None, now, error="the daemon stopped while it ran; not rerun")
        for entry in self.journal.received_not_started():
            pending = Order.from_wire(entry.order)
            if pending.kind is OrderKind.TRUST_MASTER:
                # It was applied at delivery unless the daemon stopped in between: apply it now, before orders
                # signed with the new key are delivered (a no-op if it or a later rotation was applied).
                with contextlib.suppress(ProtocolError):
                    self._follow_master_rotation(pending)
            self._queue.put_nowait(entry.order_id)
        for leftover in self.spool_dir.iterdir():
            if not self.journal.get(leftover.name):
                leftover.unlink(missing_ok=True)

    async def _connect_loop(self) -> None:
        delays = backoff_delays(
            random.random, initial=self.options.reconnect_initial, maximum=self.options.reconnect_max
        )
        while True:
            try:
                link = await self._connect()
            except (OSError, TimeoutError, CrcError) as exc:
                delay = next(delays)
                if isinstance(exc, RemoteError | ProtocolError) and not is_retryable(exc):
                    # A refusal before the session is sealed is unauthenticated: anyone on the path (a relay on
                    # ws://) can send one, so it is never final. Only a sealed revocation stops this daemon.
                    code = exc.code.value if isinstance(exc, ProtocolError) else exc.code
                    said = _KEY_REFUSALS.get(code, "refused this machine")
                    log.warning(
                        "the hub at %s says %s (%r), but before any authenticated session; an unsealed "
                        "refusal is not trusted as final: retrying in %.1f s",
                        self.config.hub, said, str(exc), delay,
                    )  # fmt: skip
                else:
                    log.info("cannot reach the hub at %s (%r); retrying in %.1f s", self.config.hub, str(exc), delay)
                await asyncio.sleep(delay)
                continue
            delays = backoff_delays(
                random.random, initial=self.options.reconnect_initial, maximum=self.options.reconnect_max
            )
            log.info(
                "connected to hub %s as %s (%s)",
                link.session.hub_id,
                self.config.machine_name,
                self.config.machine_id,
            )
            self.link = link
            try:
                await self._session(link)
            except (LinkClosed, ProtocolError, OSError) as exc:
                log.info("lost the hub: %r", str(exc))
                revocation = link.sealed_close
                if revocation is not None and revocation.code == ErrorCode.REVOKED.value:
                    raise Revoked(f"{revocation.code}: {revocation.message}") from exc
            finally:
                self.link = None
                self._drop_incoming()
                with contextlib.suppress(Exception):
                    await link.close()
            await asyncio.sleep(next(delays))

    async def _connect(self) -> HubLink:
        """Connect with the key of a rotation in progress if the hub has registered it, else the current one."""
        pending = keys.pending_config(self.config, self.options.state_dir)
        if pending is not None:
            try:
                link = await self._connect_as(pending)
            except (RemoteError, ProtocolError) as exc:
                log.info("the hub does not accept the new key yet (%s); using the current one", exc)
            else:
                keys.promote_pending(pending, self.options.state_dir, previous=self.config.identity)
                self.config = pending
                log.info("now using the rotated key of machine %s", self.config.machine_id)
                return link
        return await self._connect_as(self.config)

    @staticmethod
    async def _connect_as(config: DaemonConfig) -> HubLink:
        return await HubLink.connect(
            config.hub, config.identity, Role.DAEMON, pin=config.hub_pin, client_id=config.machine_id
        )

    def forget_old_orders(self) -> None:
        """Prune old entries; forget an id only once it was received ``ID_MEMORY`` ago *and* its order expired
        (with ``EXPIRY_SLACK`` for the master's clock): a copy of an order that could still verify is always
        recognised as a replay, however far this machine's clock has moved since it was received."""
        now = self._now()
        self.journal.prune(
            now - JOURNAL_KEEP, forget_ids_older_than=now - ID_MEMORY, forget_ids_expired_before=now - EXPIRY_SLACK
        )

    async def _session(self, link: HubLink) -> None:
        self.forget_old_orders()
        facts = await asyncio.to_thread(collect_facts, DAEMON_VERSION)
        statement = ReadyStatement(self.config.scenario, self.config.machine_id, facts, time.time())
        signature = statement.signed(self.config.identity).signature
        await link.send(SystemReady(facts, DAEMON_VERSION, statement.at, signature), scenario=self.config.scenario)
        self._after_connect()
        for result in self.journal.unacked_results():
            await link.send(Result(result), scenario=self.config.scenario)
        resender = asyncio.create_task(self._resend_unacked(link))
        try:
            await self._read(link)
        finally:
            resender.cancel()

    async def _resend_unacked(self, link: HubLink) -> None:
        """Results the hub could not store yet (its store was briefly down) are offered again until acked."""
        while True:
            await asyncio.sleep(RESEND_INTERVAL)
            for result in self.journal.unacked_results():
                if time.time() - result["finished"] >= RESEND_INTERVAL:
                    await link.send(Result(result), scenario=self.config.scenario)

    async def _read(self, link: HubLink) -> None:
        while True:
            envelope = await link.recv()
            handler = self._handlers.get(envelope.type)
            if handler is None:
                log.debug("ignoring %s from the hub", envelope.type.value)
                continue
            await handler(envelope)

    async def _send(self, body: Any) -> None:
        """Best effort: while disconnected, the journal keeps what matters and it is resent on reconnect."""
        link = self.link
        if link is not None:
            with contextlib.suppress(LinkClosed, ProtocolError):
                await link.send(body, scenario=self.config.scenario)

    # messages from the hub
    async def _on_deliver(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, Deliver)
        if is_member_order(body.order):
            await self._on_member_order(body.order)
            return
        try:
            order = Order.from_wire(body.order)
        except ProtocolError as exc:
            log.warning("hub delivered a malformed order: %s", exc)
            return
        if await self._redelivered(order.id):
            return
        try:
            order.verify(self.config.master_key, self.config.machine_id, self.config.scenario, self._now())
        except ProtocolError as exc:
            await self._refuse(order, str(exc))
            return
        if self.config.sealed and order.delegation is not None:
            # An operator's requests go through the hub in the clear: in a sealed scenario only masters command.
            await self._refuse(
                order, "this machine's scenario is sealed: orders signed under an access token are refused"
            )
            return
        if self.journal.seen(order.id):  # its entry was pruned, its id is remembered: a replay
            await self._refuse(order, "this order id was received here before; it is not run again")
            return
        if order.expires <= self.journal.latest_forgotten_expiry():
            # Valid only because this machine's clock went back after ids expiring as late were forgotten.
            await self._refuse(
                order, "this machine's clock is behind the expiry of orders it has forgotten; it could be one of them"
            )
            return
        try:
            order_body = parse_body(order.kind, self._plain_body(order))
            self._open_secrets(order, order_body)  # nothing is journaled, let alone run, with one that fails
            self._open_file_key(order, order_body)  # a sealed file's key likewise (its chunks are not taken)
        except ProtocolError as exc:
            await self._refuse(order, exc.message)
            return
        if order.kind is OrderKind.PING:
            await self._pong(order)
            return
        if order.kind is OrderKind.TRUST_MASTER:
            if (refusal := self._master_rotation_refusal(order)) is not None:
                await self._refuse(order, refusal)
                return
            # Journaled first, then applied at once, so the orders right behind it (signed with the new key)
            # verify; a crash in between is caught up by _recover.
            if self._accept(order):
                self._follow_master_rotation(order)
            await self._send(OrderAck(order.id))
            return
        if isinstance(order_body, PutFileBody):
            self._incoming[order.id] = _IncomingFile(order, self.spool_dir / order.id, order_body.chunks)
            (self.spool_dir / order.id).write_bytes(b"")
            return
        self._accept(order)
        await self._send(OrderAck(order.id))

    async def _redelivered(self, order_id: str) -> bool:
        """Whether the order is journaled already. Then it is acknowledged again and its signed result sent again,
        acknowledged or not: a hub that lost it (restored from a backup, or its store edited) gets back the proof
        that the order ran once."""
        entry = self.journal.get(order_id)
        if entry is None:
            return False
        await self._send(OrderAck(order_id))
        if entry.result is not None:
            await self._send(Result(entry.result))
        return True

    async def _on_member_order(self, raw: dict[str, Any]) -> None:
        """A composition's play on this machine: played once, only if its master signed it and it selects this
        machine (``protocol.compositions``); its id is the same on every delivery, so the journal refuses a second."""
        try:
            delivered = MemberOrder.from_wire(raw)
        except ProtocolError as exc:
            log.warning("hub delivered a malformed composition: %s", exc)
            return
        order = delivered.as_order()
        if await self._redelivered(order.id):
            return
        config = self.config
        ensemble = config.ensemble
        try:
            check_member_order(
                delivered, config.master_key, config.machine_id, config.scenario, self._now(),
                certified=certified_member(delivered.certificate, config.master_key, config.scenario,
                                           config.machine_id),
                enrolled=None if ensemble is None else Member(config.machine_name, ensemble.role, ensemble.labels),
            )  # fmt: skip
            self._open_secrets(order, parse_body(order.kind, order.body))
        except ProtocolError as exc:
            await self._refuse(order, exc.message)
            return
        if self.journal.seen(order.id):
            await self._refuse(order, "this machine played this composition before; it is not played again")
            return
        self._accept(order)
        await self._send(OrderAck(order.id))

    async def _refuse(self, order: Order, reason: str) -> None:
        """Acknowledge and answer with a signed REJECTED result: nothing runs, and its id is remembered."""
        log.warning("refusing order %s: %s", order.id, reason)
        await self._send(OrderAck(order.id))
        await self._finish(order, OrderState.REJECTED, None, self._now(), error=f"refused by the daemon: {reason}")

    async def _pong(self, order: Order) -> None:
        """Answer a ping at once. Nothing runs, so nothing is journaled (four fsyncs saved): a redelivered ping
        is simply answered again, and the hub keeps the first answer."""
        now = self._now()
        result = SignedResult(
            order_id=order.id, scenario=order.scenario, machine=self.config.machine_id, status=OrderState.SUCCEEDED,
            exit_code=0, started=now, finished=now,
        ).signed(self.config.identity)  # fmt: skip
        if len(self._pings) > 10_000:  # acknowledgements lost with a session: forget them (unknown acks are no-ops)
            self._pings.clear()
        self._pings.add(order.id)
        await self._send(OrderAck(order.id))
        await self._send(Result(result.to_wire()))

    def _master_rotation_refusal(self, order: Order) -> str | None:
        """Why a delivered TRUST_MASTER must change nothing, or None. A rotation is followed once and never
        backwards: only an epoch greater than that of the key obeyed moves it, so a replayed rotation, or one
        older than a rotation applied since (A->B arriving after B->C), is refused and reported."""
        try:
            rotation = TrustMasterBody.from_wire(order.body)
        except ProtocolError as exc:
            return exc.message
        new_key, epoch = rotation.master_key, rotation.epoch
        obeyed = keys.master_epoch(self.config, self.options.state_dir)
        if epoch <= obeyed:
            return (
                f"master rotation {epoch} (to {new_key.id}) is not newer than rotation {obeyed} this machine follows "
                f"(master {self.config.master_key.id}): a replayed or out-of-date rotation, nothing changed"
            )
        return None

    def _follow_master_rotation(self, order: Order) -> None:
        """Obey the key a journaled TRUST_MASTER names, unless it or a later rotation was applied already.

        Raises:
            ProtocolError: the order names no valid key or epoch (journaled by a daemon from before epochs).
        """
        rotation = TrustMasterBody.from_wire(order.body)
        new_key, epoch = rotation.master_key, rotation.epoch
        self.config, moved = keys.follow_master_rotation(self.config, self.options.state_dir, new_key, epoch)
        if moved:
            log.info("now obeying master %s (rotation %d, told so by the previous master key)", new_key.id, epoch)

    def _accept(self, order: Order) -> bool:
        """Journal the order and queue it; False if its id was seen before (then nothing is queued)."""
        if self.journal.record_received(order.id, order.to_wire(), self._now(), expires=order.expires):
            self._queue.put_nowait(order.id)
            return True
        return False

    async def _on_file_chunk(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, FileChunk)
        incoming = self._incoming.get(body.order_id)
        if incoming is None:
            return  # for a rejected or already received order
        if body.index != incoming.received:
            log.warning("file chunk %d of %s out of order; dropping the transfer", body.index, body.order_id)
            self._incoming.pop(body.order_id, None)
            incoming.spool.unlink(missing_ok=True)
            return
        with incoming.spool.open("ab") as f:
            f.write(body.data)
        incoming.received += 1
        if incoming.received == incoming.expected:
            del self._incoming[body.order_id]
            self._accept(incoming.order)
            await self._send(OrderAck(body.order_id))

    def _drop_incoming(self) -> None:
        """Half-received files are discarded: unacknowledged, the hub sends them again whole."""
        for incoming in self._incoming.values():
            incoming.spool.unlink(missing_ok=True)
        self._incoming.clear()

    async def _on_cancel(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, Cancel)
        event = self._cancels.setdefault(body.order_id, asyncio.Event())
        event.set()

    async def _on_result_ack(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, ResultAck)
        if body.order_id in self._pings:
            self._pings.discard(body.order_id)
            return
        self.journal.mark_acked(body.order_id)

    async def _on_reconnect(self, envelope: Envelope) -> None:
        """The hub asks us to move (it drains, or sheds load): close after the given delay and connect again."""
        body = envelope.body
        assert isinstance(body, Reconnect)
        link = self.link
        if link is None:
            return
        log.info("hub asked to reconnect in %.1f s: %s", body.after, body.reason)

        async def leave() -> None:
            await asyncio.sleep(max(0.0, min(body.after, 300.0)))
            await link.close()

        self._leaving = asyncio.create_task(leave())

    async def request(self, body: Body, timeout: float) -> dict[str, Any]:
        """Ask the hub something about this machine's scenario and wait for the answer (futures, messages).

        Never waits for a connection nor asks again on the next one: a script on the local socket is told at
        once that the hub is unavailable, and asks again itself if it wants to.

        Raises:
            RemoteError: the hub refused; LinkClosed: no session, or it ended before the answer;
            TimeoutError: no answer in time.
        """
        link = self.link
        if link is None:
            raise LinkClosed("not connected to the hub")
        return await link.request(body, scenario=self.config.scenario, timeout=timeout)

    async def _local_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """A script's request on the local socket (``clients/daemon/localsocket.py``), forwarded to the hub.

        What a script writes is signed here with the machine's key; what it reads is given to it only once
        verified (``protocol.signed_values``). ``wait`` fails at once on a value that does not verify rather than
        keep waiting: a hub serving forged values is not one to wait on, and the script should say so.
        """
        op, key = request.get("op"), str(request.get("key", ""))
        try:
            if op == "set":
                value = str(request.get("value", "")).encode()
                ttl = float(request.get("ttl") or 0)
                statement = self._signed(ValueKind.KV, key, value)
                await self.request(KvSet(self.config.scenario, key, value, ttl, statement), 30)
                return {"ok": True}
            if op == "get":
                data = await self.request(KvGet(self.config.scenario, key), 30)
                return self._verified_kv(key, data)
            if op == "wait":
                timeout = float(request.get("timeout") or 60)
                data = await self.request(KvWait(self.config.scenario, key, timeout), timeout + 15)
                return self._verified_kv(key, data)
            if op == "send":
                payload = str(request.get("data", "")).encode()
                target, topic = str(request.get("target", "")), str(request.get("topic", ""))
                statement = self._signed(ValueKind.MESSAGE, topic, payload, target)
                sent = await self.request(MsgSend(self.config.scenario, target, topic, payload, statement), 30)
                return {"ok": True, "to": sent["to"]}
            if op == "recv":
                return await self._receive(str(request.get("topic") or ""), float(request.get("timeout") or 60))
        except RemoteError as exc:
            return {"ok": False, "code": exc.code, "error": exc.message}
        except (LinkClosed, ProtocolError, TimeoutError, ValueError) as exc:
            return {"ok": False, "code": "unavailable", "error": f"cannot ask the hub now: {exc}"}
        return {"ok": False, "code": "invalid_request", "error": f"unknown op {op!r} (set, get, wait, send, recv)"}

    # signed futures and messages (protocol.signed_values)
    def _signed(self, kind: ValueKind, name: str, value: bytes, target: str = "") -> dict[str, Any]:
        statement = SignedValue(
            kind, self.config.scenario, name, value, self.config.machine_id, WriterKind.MACHINE, time.time(),
            secrets.token_hex(16), target,
        ).signed(self.config.identity)  # fmt: skip
        return statement.to_wire()

    def _verify(self, kind: ValueKind, name: str, answer: dict[str, Any]) -> VerifiedValue:
        """Raises ProtocolError: the hub's answer is not a value a writer of this scenario signed."""
        return verify_value(
            answer.get("statement"), answer.get("writer"), kind=kind, scenario=self.config.scenario, name=name,
            master_key=self.config.master_key, reader_name=self.config.machine_name,
        )  # fmt: skip

    def _verified_kv(self, key: str, answer: dict[str, Any]) -> dict[str, Any]:
        try:
            verified = self._verify(ValueKind.KV, key, answer)
        except ProtocolError as exc:
            log.warning("refusing the hub's value for %s: %s", key, exc.message)
            return {"ok": False, "code": "untrusted_value", "error": untrusted_message(key, exc)}
        return {"ok": True, "value": verified.value.decode("utf-8", "replace"), "writer": verified.writer_name}

    async def _receive(self, topic: str, timeout: float) -> dict[str, Any]:
        """The next scenario message (of ``topic``, or any); each topic filter keeps its own read position.

        A message that does not verify, or that this machine had already (a replay), is refused with an error
        and read past, so the next ``recv`` gets the message after it.
        """
        cursors_file = self.options.state_dir / "mail-cursors.json"
        try:
            cursors: dict[str, int] = json.loads(cursors_file.read_text())
        except (FileNotFoundError, ValueError):
            cursors = {}
        asked = MsgRecv(self.config.scenario, topic, cursors.get(topic, 0), timeout)
        message = await self.request(asked, timeout + 15)
        cursors[topic] = int(message["seq"])
        _write_json(cursors_file, cursors)
        what = f"message {message.get('topic')!r}"
        try:
            verified = self._verify(ValueKind.MESSAGE, topic, message)
        except ProtocolError as exc:
            log.warning("refusing the hub's %s: %s", what, exc.message)
            return {"ok": False, "code": "untrusted_value", "error": untrusted_message(what, exc)}
        if not self._first_sight(verified.statement):
            log.warning("refusing the hub's %s: this machine had it already", what)
            error = f"the hub's value for {what} is a replay of one this machine had: refused"
            return {"ok": False, "code": "untrusted_value", "error": error}
        data = verified.value.decode("utf-8", "replace")
        sender, seq = verified.writer_name, message["seq"]
        return {"ok": True, "topic": verified.statement.name, "sender": sender, "data": data, "seq": seq}

    def _first_sight(self, statement: SignedValue) -> bool:
        """Remember the message's write id; False if it was seen before (among the last ``SEEN_MESSAGES``)."""
        seen_file = self.options.state_dir / "mail-seen.json"
        try:
            seen: list[str] = json.loads(seen_file.read_text())
        except (FileNotFoundError, ValueError):
            seen = []
        mark = f"{statement.writer}:{statement.write_id}"
        if mark in seen:
            return False
        _write_json(seen_file, [*seen, mark][-SEEN_MESSAGES:])
        return True

    async def _on_error(self, envelope: Envelope) -> None:
        body = envelope.body
        assert isinstance(body, Error)
        # Errors answering a request() went to it; this one answers a plain send (a result, an ack) or nothing.
        log.warning("hub reported %s: %s", body.code, body.message)

    # running orders
    async def _worker(self) -> None:
        while True:
            order_id = await self._queue.get()
            entry = self.journal.get(order_id)
            if entry is None or entry.state is not JournalState.RECEIVED:
                continue
            order = Order.from_wire(entry.order)
            cancel = self._cancels.setdefault(order.id, asyncio.Event())
            started = self._now()
            if cancel.is_set():
                await self._finish(order, OrderState.CANCELLED, None, started, error="cancelled before it started")
                continue
            self.journal.mark_running(order.id)
            await self._send(OrderStarted(order.id))
            try:
                await self._execute(order, started, cancel)
            finally:
                self._cancels.pop(order.id, None)

    async def _execute(self, order: Order, started: float, cancel: asyncio.Event) -> None:
        try:  # checked at delivery; an order journaled by an older daemon is checked here first
            body = parse_body(order.kind, self._plain_body(order))  # journaled sealed: opened only to run
        except ProtocolError as exc:
            await self._finish(order, OrderState.REJECTED, None, started, error=f"refused by the daemon: {exc}")
            return
        if isinstance(body, ExecBody):
            await self._run_command(order, body, started, cancel)
        elif isinstance(body, PutFileBody):
            await self._write_file(order, body, started)
        elif isinstance(body, HostsBody):
            await self._write_hosts(order, body, started)
        elif isinstance(body, UpdateBody):
            await self._update(order, body, started)
        elif isinstance(body, TrustMasterBody):
            await self._report_master_rotation(order, body, started)
        elif order.kind is OrderKind.ROTATE_KEY:
            await self._rotate_key(order, started)

    async def _report_master_rotation(self, order: Order, body: TrustMasterBody, started: float) -> None:
        """Its turn: it was applied at delivery (or by _recover), so it is never applied again here; the result
        names the key obeyed now and that key's rotation, which is later than this one's if it was superseded. (One
        journaled by a daemon from before epochs was never applied, and _execute refused it.)"""
        extra = {
            "master": self.config.master_key.id,
            "epoch": keys.master_epoch(self.config, self.options.state_dir),
            "rotation": body.epoch,
        }
        await self._finish(order, OrderState.SUCCEEDED, 0, started, extra=extra)

    def _shell_for(self, wanted: object) -> tuple[str, ...] | str:
        """The shell an order asks for (a stored job names one), or why this machine has none such."""
        windows = self.options.platform.name == "windows"
        if wanted in (None, ""):
            return self.options.platform.shell
        if wanted == "powershell":
            return self.options.platform.shell if windows else POWERSHELL_ON_POSIX
        if wanted == "sh":
            return "this machine runs Windows: it has no sh for this job" if windows else ("/bin/sh", "-c")
        return f"unknown shell {wanted!r} (sh or powershell)"

    def _plain_body(self, order: Order) -> dict[str, Any]:
        """The order's body as the master wrote it: opened with this machine's sealing key if it is sealed
        (``protocol.sealed_orders``).

        Raises:
            ProtocolError: a sealed body that does not open here, or a plain command or hosts order in a sealed
                scenario (the hub could read it: the master never sends one).
        """
        if is_sealed_body(order.body):
            return open_body(
                order.body, keys.opening_keys(self.config, self.options.state_dir), kind=order.kind,
                scenario=order.scenario, machine=self.config.machine_id, order_id=order.id,
            ).body  # fmt: skip
        if self.config.sealed and order.kind in SEALED_KINDS:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"this machine's scenario is sealed: a plain {order.kind.value} order is refused (the hub could read "
                "it)",
            )
        return order.body

    def _open_secrets(self, order: Order, body: OrderBody) -> dict[str, bytes]:
        """The order's secret parameters, opened with this machine's key for exactly this order.

        Raises:
            ProtocolError: one does not open (sealed for another machine, order or name, or altered), or is
                shorter than a value can be and still be redacted.
        """
        if not isinstance(body, ExecBody) or not body.secrets:
            return {}
        values = {}
        opening = keys.opening_keys(self.config, self.options.state_dir)
        for name, sealed in body.secrets.items():
            value = unseal_any(opening, sealed, secret_context(order.scenario, self.config.machine_id, order.id, name))
            if len(value) < MIN_SECRET_BYTES:
                raise ProtocolError(
                    ErrorCode.BAD_FIELD, f"secret {name} is shorter than {MIN_SECRET_BYTES} bytes: it could not be "
                    "redacted from the output", field="secrets",
                )  # fmt: skip
            self._env_text(name, value)  # refused now if the command could not be given it
            values[name] = value
        return values

    def _open_file_key(self, order: Order, body: OrderBody) -> ContentKey | None:
        """A sealed file's content key, opened with this machine's key for exactly this order and path (None for
        any other order).

        Raises:
            ProtocolError: it does not open (sealed for another machine, order or path, or altered).
        """
        if not isinstance(body, PutFileBody) or body.sealed is None:
            return None
        context = file_context(order.scenario, self.config.machine_id, order.id, body.path)
        opened = unseal_any(keys.opening_keys(self.config, self.options.state_dir), body.sealed.key, context)
        return ContentKey.from_bytes(opened)

    def _env_text(self, name: str, value: bytes) -> str:
        """A secret as an environment variable's value: on POSIX any bytes but NUL (surrogate escapes, which the
        child's environment gets back byte for byte); Windows keeps its environment in UTF-16, so UTF-8 text.

        Raises:
            ProtocolError: a value no environment variable of this system can hold.
        """
        if b"\x00" in value:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"secret {name} holds a NUL byte", field="secrets")
        if self.options.platform.name != "windows":
            return value.decode("utf-8", "surrogateescape")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"secret {name} is not UTF-8 text, which a Windows environment needs",
                field="secrets",
            ) from None

    async def _run_command(self, order: Order, body: ExecBody, started: float, cancel: asyncio.Event) -> None:
        shell = self._shell_for(body.shell)
        if isinstance(shell, str):
            await self._finish(order, OrderState.FAILED, None, started, error=shell)
            return
        try:
            # Opened again here (they were at delivery): a value is kept nowhere but in this call, never journaled.
            secrets = self._open_secrets(order, body)
        except ProtocolError as exc:
            await self._finish(order, OrderState.REJECTED, None, started, error=f"refused by the daemon: {exc.message}")
            return
        request = ExecRequest(
            command=body.command,
            shell=shell,
            cwd=body.cwd,
            env={
                # Who and what this is, for scripts (like Salt's grains): then the order's own variables.
                "CRC_SCENARIO": self.config.scenario,
                "CRC_MACHINE": self.config.machine_name,
                "CRC_MACHINE_ID": self.config.machine_id,
                "CRC_ORDER_ID": order.id,
                # `crc-daemon kv ...` in a command reaches this daemon, whatever the PATH of the service.
                "CRC_DAEMON_SOCKET": str(self.socket_path),
                "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", os.defpath),
                **body.env,
                # In the environment only: never on a command line or in a process title.
                **{name: self._env_text(name, value) for name, value in secrets.items()},
            },
            timeout=body.timeout,
            redact=tuple(secrets.values()),
        )

        reply_key = reply_key_of(order.body)

        async def stream(name: str, chunk: bytes) -> None:
            if reply_key is None:
                await self._send(Output(order.id, name, chunk))
                return
            sealed = seal_output(chunk, to=reply_key, scenario=order.scenario, order_id=order.id, stream=name)
            await self._send(Output(order.id, name, sealed, sealed=True))

        outcome = await self.executor.run(request, stream, cancel)
        await self._finish(
            order, _EXEC_STATES[outcome.status], outcome.exit_code, started, error=outcome.error,
            stdout=outcome.stdout, stderr=outcome.stderr,
            stdout_truncated=outcome.stdout_truncated, stderr_truncated=outcome.stderr_truncated,
            extra={"redacted": outcome.redacted} if secrets else {},
        )  # fmt: skip

    async def _write_file(self, order: Order, body: PutFileBody, started: float) -> None:
        if body.sealed is not None:
            await self._write_sealed_file(order, body, started)
            return
        spool = self.spool_dir / order.id
        try:
            sha = await asyncio.to_thread(_install_file, spool, body)
        except (FileIntegrityError, OSError, ValueError, KeyError) as exc:
            await self._finish(order, OrderState.FAILED, None, started, error=f"cannot write {body.path}: {exc}")
        else:
            await self._finish(order, OrderState.SUCCEEDED, 0, started, extra={"sha256": sha, "path": body.path})
        finally:
            spool.unlink(missing_ok=True)

    async def _write_sealed_file(self, order: Order, body: PutFileBody, started: float) -> None:
        """Open and install a sealed file. What is not what the master sealed is refused (REJECTED), as an order
        that does not verify is; the result names the path only (no digest of the content: the hub reads it)."""
        spool = self.spool_dir / order.id
        try:
            # Opened again here (it was at delivery): the content key is kept nowhere but in this call.
            key = self._open_file_key(order, body)
            assert key is not None
            await asyncio.to_thread(install_sealed_file, spool, body, key)
        except ProtocolError as exc:
            error = f"refused by the daemon: {exc.message}; nothing was written to {body.path}"
            await self._finish(order, OrderState.REJECTED, None, started, error=error)
        except (OSError, ValueError) as exc:
            await self._finish(order, OrderState.FAILED, None, started, error=f"cannot write {body.path}: {exc}")
        else:
            await self._finish(order, OrderState.SUCCEEDED, 0, started, extra={"path": body.path, "sealed": True})
        finally:
            spool.unlink(missing_ok=True)

    async def _write_hosts(self, order: Order, body: HostsBody, started: float) -> None:
        path = self.options.hosts_file
        try:
            entries = parse_entries(body.entries)
            changed = await asyncio.to_thread(apply_hosts_file, path, entries, self.options.platform.newline)
        except (ValueError, OSError) as exc:
            await self._finish(order, OrderState.FAILED, None, started, error=f"cannot update {path}: {exc}")
        else:
            await self._finish(
                order,
                OrderState.SUCCEEDED,
                0,
                started,
                extra={"path": str(path), "changed": changed, "entries": len(entries)},
            )

    async def _update(self, order: Order, body: UpdateBody, started: float) -> None:
        """Install the build the master named beside this one, then restart into it (``clients/daemon/update``)."""
        wheel, sha256, lock, lock_sha256 = body.wheel, body.sha256, body.lock, body.lock_sha256
        if not update.can_restart_into_a_new_build():
            error = "this daemon was not started by the crc-daemon service (or crc-daemon supervise): nothing would "
            error += "start the new build; not installing it"
            await self._finish(order, OrderState.FAILED, None, started, error=error)
            return
        await report_step(self.config, "update-installing", BootStatus.RUNNING, f"{wheel} ({sha256})")
        try:
            build = await update.install(
                self.config, self.options.state_dir, wheel, sha256, order.id, lock=lock, lock_sha256=lock_sha256
            )
        except (update.UpdateError, OSError) as exc:
            await report_step(self.config, "update-installing", BootStatus.FAILED, str(exc))
            await self._finish(order, OrderState.FAILED, None, started, error=f"update not installed: {exc}")
            return
        await report_step(self.config, "update-installing", BootStatus.OK, f"{build.version} in {build.venv}")
        await self._finish(
            order, OrderState.SUCCEEDED, 0, started,
            extra={"version": build.version, "venv": build.venv, "restarting": True},
        )  # fmt: skip
        await self._wait_acked(order.id, timeout=10.0)
        await report_step(self.config, "update-restarting", BootStatus.RUNNING, f"from {DAEMON_VERSION}")
        self.exit_code = update.EXIT_RESTART
        self._stop_self.set()

    async def _rotate_key(self, order: Order, started: float) -> None:
        """Make a new key pair here (the private half never leaves the machine) and report its public half; the
        hub registers it and asks for a reconnect, which uses it (``_connect``)."""
        try:
            new = keys.make_pending(self.config, self.options.state_dir)
        except OSError as exc:
            await self._finish(order, OrderState.FAILED, None, started, error=f"cannot save a new key: {exc}")
            return
        # The new sealing key goes with the new key, signed (as the result is) by the key it replaces: masters seal
        # secrets to it from then on (``protocol.certificates.key_chain``).
        extra = {
            "public_key": new.public.to_text(), "report_key": report_key(new).hex(),
            "sealing_key": sealing_key(new).to_text(),
        }  # fmt: skip
        await self._finish(order, OrderState.SUCCEEDED, 0, started, extra=extra)

    async def _wait_acked(self, order_id: str, timeout: float) -> None:
        """Until the hub has the result (or ``timeout``): the next build would resend it anyway."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(r["order_id"] != order_id for r in self.journal.unacked_results()):
                return
            await asyncio.sleep(0.1)

    def _record(
        self, order: Order, status: OrderState, exit_code: int | None, started: float | None, **fields: Any
    ) -> dict[str, Any]:
        reply_key = reply_key_of(order.body)
        if reply_key is not None:  # a sealed order's output and error go back sealed to its master, under the signature
            hidden = {name: fields.pop(name) for name in SEALED_RESULT_FIELDS if name in fields}
            sealed = seal_result(hidden, to=reply_key, scenario=order.scenario, machine=self.config.machine_id,
                                 order_id=order.id)  # fmt: skip
            fields["extra"] = {**(fields.get("extra") or {}), "sealed": sealed}
        result = SignedResult(
            order_id=order.id, scenario=order.scenario, machine=self.config.machine_id, status=status,
            exit_code=exit_code, started=started, finished=self._now(), **fields,
        ).signed(self.config.identity)  # fmt: skip
        wire = result.to_wire()
        # An order refused unrecorded keeps its id until it expires: a later copy could verify otherwise.
        self.journal.record_result(order.id, wire, now=self._now(), expires=order.expires)
        return wire

    async def _finish(
        self, order: Order, status: OrderState, exit_code: int | None, started: float | None, **fields: Any
    ) -> None:
        """Journal the signed result first (it survives a crash), then try to send it."""
        await self._send(Result(self._record(order, status, exit_code, started, **fields)))


def _write_json(path: Path, value: Any) -> None:
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(value))
    os.replace(temp, path)


def _install_file(spool: Path, body: PutFileBody) -> str:
    """Copy a received file from the spool into place atomically, checking size and SHA-256."""
    if not Path(body.path).is_absolute():
        raise ValueError(f"remote path {body.path!r} must be absolute")
    with StagedFile(body.path) as staged, spool.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            staged.write(chunk)
        return staged.commit(body.mode, body.sha256, body.size)


__all__ = ["DAEMON_VERSION", "Daemon", "DaemonOptions", "Revoked"]
