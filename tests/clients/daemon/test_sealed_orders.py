"""A daemon of a sealed scenario: it opens a sealed order and seals its result to the master's reply key, and it
refuses a plain command or hosts order and any order under an access token's delegation (an operator's requests
pass through the hub in the clear). Real ``Daemon`` and journal; hub link, executor and clock are stand-ins."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import DaemonConfig
from protocol import Identity, Order, OrderKind
from protocol.delegation import Delegation
from protocol.sealed_orders import open_result, seal_body
from protocol.sealing import SealingPrivateKey, sealing_key
from tests.clients.daemon.test_order_memory import MACHINE, SCENARIO, T0, A, Clock, CountingExecutor, HubSide, ran
from tests.clients.daemon.test_order_memory import deliver as deliver_order

DELEGATE = Identity.from_seed(b"\x0b" * 32)


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    config = DaemonConfig("ws://127.0.0.1:1", SCENARIO, "db", MACHINE, A.public, sealed=True)
    made = Daemon(config, DaemonOptions(tmp_path / "state", tmp_path / "hosts", clock=Clock()), CountingExecutor())
    made.link = HubSide(made)  # type: ignore[assignment]
    worker = asyncio.create_task(made._worker())
    yield made
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    made.journal.close()


def order(order_id: str, body: dict[str, Any], kind: OrderKind = OrderKind.EXEC) -> Order:
    return Order(order_id, SCENARIO, MACHINE.id, kind, body, T0 + 600, A.id)


def error_of(result: dict[str, Any]) -> str:
    """The result's error, opened with the master's key when the daemon sealed it (it does for sealed orders)."""
    if "sealed" not in result["extra"]:
        return str(result["error"])
    opened = open_result(result["extra"]["sealed"], [SealingPrivateKey.of(A)], scenario=SCENARIO, machine=MACHINE.id,
                         order_id=result["order_id"])  # fmt: skip
    return str(opened["error"])


def sealed(order_id: str, command: str) -> dict[str, Any]:
    return seal_body({"command": command, "env": {}}, kind=OrderKind.EXEC, to=sealing_key(MACHINE),
                     reply_key=sealing_key(A), scenario=SCENARIO, machine=MACHINE.id, order_id=order_id)  # fmt: skip


async def test_a_sealed_order_runs_and_its_result_is_sealed_to_the_master(daemon: Daemon) -> None:
    result = await deliver_order(daemon, order("s1", sealed("s1", "deploy")).signed(A))
    assert result["status"] == "succeeded" and ran(daemon) == ["deploy"]
    assert result["stdout"] == b"" and result["error"] == "" and isinstance(result["extra"]["sealed"], bytes)
    opened = open_result(result["extra"]["sealed"], [SealingPrivateKey.of(A)], scenario=SCENARIO, machine=MACHINE.id,
                         order_id="s1")  # fmt: skip
    assert opened["stdout"] == b""  # the stand-in executor prints nothing; the fields are there, sealed


@pytest.mark.parametrize(
    ("made", "refusal"),
    [
        (order("p1", {"command": "deploy", "env": {}}), "a plain exec order is refused"),
        (order("p2", {"entries": []}, OrderKind.HOSTS), "a plain hosts order is refused"),
        (order("p3", sealed("other-order", "deploy")), "does not open"),  # sealed for another order id
    ],
)
async def test_a_plain_or_misplaced_order_runs_nothing(daemon: Daemon, made: Order, refusal: str) -> None:
    result = await deliver_order(daemon, made.signed(A))
    assert result["status"] == "rejected" and refusal in error_of(result), error_of(result)
    assert ran(daemon) == []


async def test_an_order_under_an_access_tokens_delegation_is_refused(daemon: Daemon) -> None:
    delegation = Delegation.issue(A, "tok1", DELEGATE.public.to_text(), SCENARIO, 0.0, T0)
    delegated = order("d1", sealed("d1", "deploy")).signed_by_delegate(DELEGATE, delegation)
    result = await deliver_order(daemon, delegated)
    assert result["status"] == "rejected" and "access token" in error_of(result)
    assert ran(daemon) == []
