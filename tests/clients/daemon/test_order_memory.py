"""A daemon never runs a signed order twice, however a hostile hub re-queues it and however far the daemon's
clock has moved since (``Daemon.forget_old_orders``, the journal's expiry-aware memory of ids); and it follows a
master rotation once, never backwards. Real ``Daemon`` and journal; only the hub link, the executor and the
clock are stand-ins, and nothing here holds more than what a hub holds: the signed orders it was given."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import keys
from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import DaemonConfig
from clients.daemon.executor import ExecOutcome, ExecRequest, ExecStatus, Executor, OutputSink
from protocol import Envelope, Identity, Order, OrderKind
from protocol.messages import Deliver, Result
from protocol.order_bodies import TrustMasterBody
from protocol.orders import MAX_ORDER_TTL

DAY = 86400.0
T0 = 1_800_000_000.0
A, B, C = (Identity.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
MACHINE = Identity.from_seed(b"\x09" * 32)
SCENARIO = "shop"
_ids = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class CountingExecutor(Executor):
    def __init__(self) -> None:
        self.commands: list[str] = []

    async def run(self, request: ExecRequest, on_output: OutputSink, cancel: asyncio.Event) -> ExecOutcome:
        self.commands.append(request.command)
        return ExecOutcome(ExecStatus.SUCCEEDED, 0, b"", b"", False, False, "", 0.0)


class HubSide:
    """What the daemon sends to the hub; every result is acknowledged, as a hub does."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.results: list[dict[str, Any]] = []

    async def send(self, body: Any, *, scenario: str = "") -> None:
        if isinstance(body, Result):
            self.results.append(body.result)
            self.daemon.journal.mark_acked(body.result["order_id"])

    def result_of(self, order: Order) -> dict[str, Any]:
        return [r for r in self.results if r["order_id"] == order.id][-1]


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    clock = Clock()
    config = DaemonConfig("ws://127.0.0.1:1", SCENARIO, "db", MACHINE, A.public)
    options = DaemonOptions(tmp_path / "state", tmp_path / "hosts", clock=clock)
    made = Daemon(config, options, CountingExecutor())
    made.link = HubSide(made)  # type: ignore[assignment]
    worker = asyncio.create_task(made._worker())
    yield made
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    made.journal.close()


def clock_of(daemon: Daemon) -> Clock:
    clock = daemon.options.clock
    assert isinstance(clock, Clock)
    return clock


def hub_of(daemon: Daemon) -> HubSide:
    assert isinstance(daemon.link, HubSide)
    return daemon.link


def ran(daemon: Daemon) -> list[str]:
    assert isinstance(daemon.executor, CountingExecutor)
    return daemon.executor.commands


def signed(kind: OrderKind, body: dict[str, Any], expires: float, master: Identity = A) -> Order:
    order = Order(f"order-{next(_ids)}", SCENARIO, MACHINE.id, kind, body, expires, master.id)
    return order.signed(master)


def exec_order(command: str, expires: float) -> Order:
    return signed(OrderKind.EXEC, {"command": command, "env": {}, "timeout": None}, expires)


async def deliver(daemon: Daemon, order: Order) -> dict[str, Any]:
    """Hand the daemon the signed order as a hub would, and wait (bounded) for its result."""
    envelope = Envelope(f"env-{next(_ids)}", "hub", MACHINE.id, SCENARIO, clock_of(daemon)(), Deliver(order.to_wire()))
    answered = len(hub_of(daemon).results)
    await daemon._on_deliver(envelope)
    for _ in range(500):
        if any(r["order_id"] == order.id for r in hub_of(daemon).results[answered:]):
            return hub_of(daemon).result_of(order)
        await asyncio.sleep(0.01)
    raise AssertionError(f"no result for {order.id}")


async def test_an_order_re_queued_after_the_daemon_clock_moved_29_days_does_not_run_again(daemon: Daemon) -> None:
    order = exec_order("deploy", T0 + MAX_ORDER_TTL)
    assert (await deliver(daemon, order))["status"] == "succeeded"

    clock_of(daemon).now = T0 + 29 * DAY
    daemon.forget_old_orders()  # what every new session does: the entry and, by now, the id are gone
    again = await deliver(daemon, order)

    assert again["status"] == "rejected" and "expired" in again["error"]
    assert ran(daemon) == ["deploy"]


async def test_an_order_valid_too_long_is_refused_and_never_runs_later_in_its_validity(daemon: Daemon) -> None:
    # Signed for 60 days (by a master before the cap): refused on receipt, since the daemon could not remember
    # its id that long. Re-queued on day 53 it would verify; its id is kept until it expires, so it stays refused.
    order = exec_order("migrate", T0 + 60 * DAY)
    first = await deliver(daemon, order)
    assert first["status"] == "rejected" and "more than 7 days" in first["error"]

    clock_of(daemon).now = T0 + 53 * DAY
    daemon.forget_old_orders()
    later = await deliver(daemon, order)

    assert later["status"] == "rejected" and "received here before" in later["error"]
    assert ran(daemon) == []


async def test_a_clock_set_back_after_ids_were_forgotten_cannot_revive_them(daemon: Daemon) -> None:
    order = exec_order("restart", T0 + DAY)
    await deliver(daemon, order)
    clock_of(daemon).now = T0 + 40 * DAY  # a wrong clock: its ids are forgotten...
    daemon.forget_old_orders()
    clock_of(daemon).now = T0 + 3600  # ...then set right: the order is valid again by the clock

    again = await deliver(daemon, order)

    assert again["status"] == "rejected" and "clock is behind" in again["error"]
    assert ran(daemon) == ["restart"]


async def test_a_redelivered_order_gets_its_first_result_back_and_does_not_run(daemon: Daemon) -> None:
    order = exec_order("once", T0 + DAY)
    first = await deliver(daemon, order)

    again = await deliver(daemon, order)  # the hub lost the (acknowledged) result, or its store was edited

    assert again == first and ran(daemon) == ["once"]


async def test_two_rotations_delivered_together_are_applied_once_and_never_backwards(daemon: Daemon) -> None:
    to_b = signed(OrderKind.TRUST_MASTER, TrustMasterBody(B.public, 100).to_wire(), T0 + DAY, A)
    to_c = signed(OrderKind.TRUST_MASTER, TrustMasterBody(C.public, 200).to_wire(), T0 + DAY, B)
    # A rotation the master abandoned (retried with another key): A signed it, the hub kept it back.
    held_back = signed(OrderKind.TRUST_MASTER, TrustMasterBody(B.public, 150).to_wire(), T0 + DAY, A)
    b_result, c_result = await asyncio.gather(deliver(daemon, to_b), deliver(daemon, to_c))

    assert daemon.config.master_key == C.public
    assert b_result["status"] == c_result["status"] == "succeeded"
    assert b_result["extra"] == {"master": C.public.id, "epoch": 200, "rotation": 100}, "its turn moved nothing"
    assert await deliver(daemon, to_b) == b_result, "re-queued by the hub: answered, not applied again"
    assert daemon.config.master_key == C.public

    back_to_a = signed(OrderKind.TRUST_MASTER, TrustMasterBody(A.public, 300).to_wire(), T0 + DAY, C)
    assert (await deliver(daemon, back_to_a))["status"] == "succeeded"
    refused = await deliver(daemon, held_back)  # signed by the key obeyed again, but older than rotation 300

    assert refused["status"] == "rejected" and "not newer than rotation 300" in refused["error"]
    assert "nothing changed" in refused["error"] and daemon.config.master_key == A.public
    stored = json.loads((daemon.options.state_dir / keys.MASTER).read_text())
    assert (stored["master_public_key"], stored["epoch"]) == (A.public.to_text(), 300)


async def test_a_rotation_journaled_but_not_applied_before_a_crash_is_applied_on_restart(tmp_path: Path) -> None:
    config = DaemonConfig("ws://127.0.0.1:1", SCENARIO, "db", MACHINE, A.public)
    options = DaemonOptions(tmp_path / "state", tmp_path / "hosts")
    crashed = Daemon(config, options, CountingExecutor())
    to_b = signed(OrderKind.TRUST_MASTER, TrustMasterBody(B.public, 100).to_wire(), T0 + DAY, A)
    crashed.journal.record_received(to_b.id, to_b.to_wire(), T0, expires=to_b.expires)
    crashed.journal.close()  # died before applying it

    restarted = Daemon(config, options, CountingExecutor())
    restarted._recover()

    assert restarted.config.master_key == B.public and keys.master_epoch(restarted.config, options.state_dir) == 100
    restarted.journal.close()
