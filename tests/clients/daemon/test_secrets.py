"""A daemon opens secret parameters only when they were sealed to it, for this very order and name; a ciphertext
a hub moves between machines, orders or names runs nothing; values reach the command's environment only and
leave the machine redacted. Real ``Daemon``, journal and ``ProcessExecutor`` (real shell processes); only the hub
link is a stand-in, and it holds only what a hub holds: signed orders and ciphertexts."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import keys
from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import DaemonConfig
from clients.daemon.executor import ProcessExecutor
from protocol import Envelope, Identity, Order, OrderKind
from protocol.messages import Deliver, Output, Result
from protocol.order_bodies import ExecBody, secret_context
from protocol.sealing import seal, sealing_key

MASTER = Identity.from_seed(b"\x01" * 32)
WEB, DB = Identity.from_seed(b"\x07" * 32), Identity.from_seed(b"\x08" * 32)
SCENARIO = "shop"
PASSWORD = b"hunter2-correct-horse"
_ids = itertools.count()


class HubSide:
    """What the daemon sends to the hub; every result is acknowledged, as a hub does."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.sent: list[Any] = []

    async def send(self, body: Any, *, scenario: str = "") -> None:
        self.sent.append(body)
        if isinstance(body, Result):
            self.daemon.journal.mark_acked(body.result["order_id"])

    def result_of(self, order: Order) -> dict[str, Any] | None:
        found = [b.result for b in self.sent if isinstance(b, Result) and b.result["order_id"] == order.id]
        return found[-1] if found else None

    def output_of(self, order: Order, stream: str) -> bytes:
        sent = self.sent
        return b"".join(b.data for b in sent if isinstance(b, Output) and b.order_id == order.id and b.stream == stream)


async def _daemon(tmp_path: Path, identity: Identity) -> tuple[Daemon, asyncio.Task[None]]:
    config = DaemonConfig("ws://127.0.0.1:1", SCENARIO, "web", identity, MASTER.public)
    made = Daemon(config, DaemonOptions(tmp_path / identity.id, tmp_path / "hosts"), ProcessExecutor(kill_grace=0.3))
    made.link = HubSide(made)  # type: ignore[assignment]
    return made, asyncio.create_task(made._worker())


@pytest.fixture
async def web(tmp_path: Path) -> Any:
    daemon, worker = await _daemon(tmp_path, WEB)
    yield daemon
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    daemon.journal.close()


def hub_of(daemon: Daemon) -> HubSide:
    assert isinstance(daemon.link, HubSide)
    return daemon.link


def order_for(machine: Identity, command: str, sealed_for: dict[str, tuple[Identity, str, str]] | None = None,
              order_id: str | None = None) -> Order:  # fmt: skip
    """A signed order for ``machine``; each secret sealed to (identity, order id, name) as given, by default
    to ``machine`` for this order under its own name: what the master does."""
    order_id = order_id or f"order-{next(_ids)}"
    sealed = {
        name: seal(sealing_key(to), PASSWORD, secret_context(SCENARIO, to.id, for_order or order_id, as_name))
        for name, (to, for_order, as_name) in (sealed_for or {}).items()
    }
    body = ExecBody(command, secrets=sealed).to_wire()
    return Order(order_id, SCENARIO, machine.id, OrderKind.EXEC, body, time.time() + 3600, MASTER.id).signed(MASTER)


async def deliver(daemon: Daemon, order: Order | dict[str, Any]) -> dict[str, Any]:
    wire = order.to_wire() if isinstance(order, Order) else order
    envelope = Envelope(f"env-{next(_ids)}", "hub", daemon.config.machine_id, SCENARIO, time.time(), Deliver(wire))
    await daemon._on_deliver(envelope)
    for _ in range(1000):
        result = hub_of(daemon).result_of(Order.from_wire(wire))
        if result is not None:
            return result
        await asyncio.sleep(0.01)
    raise AssertionError(f"no result for {wire['id']}")


ECHO = (
    'printf "%s\\n" "$DB_PASSWORD"; printf "%s" "$DB_PASSWORD" | base64 -w0; echo; echo "$DB_PASSWORD" >&2; touch ran'
)


async def test_a_secret_sealed_for_this_order_reaches_only_the_commands_environment_and_is_redacted(
    web: Daemon, tmp_path: Path
) -> None:
    order = order_for(WEB, f"cd {tmp_path} && {ECHO}", {"DB_PASSWORD": (WEB, "", "DB_PASSWORD")})
    result = await deliver(web, order)
    assert result["status"] == "succeeded", result["error"]
    assert (tmp_path / "ran").exists()
    assert result["stdout"] == b"***\n***\n" and result["stderr"] == b"***\n"
    assert result["extra"] == {"redacted": 3}
    assert (
        hub_of(web).output_of(order, "stdout") == b"***\n***\n" and hub_of(web).output_of(order, "stderr") == b"***\n"
    )
    everything_sent = repr(hub_of(web).sent).encode()
    assert PASSWORD not in everything_sent and base64.b64encode(PASSWORD) not in everything_sent
    # The journal keeps the order (ciphertext) and the redacted result; the value is nowhere in the state dir.
    for path in web.options.state_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_bytes(), path


@pytest.mark.parametrize(
    "sealed_for",
    [
        {"DB_PASSWORD": (DB, "", "DB_PASSWORD")},  # sealed to the other machine (its order's ciphertext)
        {"DB_PASSWORD": (WEB, "order-elsewhere", "DB_PASSWORD")},  # to this machine, for another order
        {"DB_PASSWORD": (WEB, "", "API_TOKEN")},  # for this order, under another name
    ],
    ids=["another-machine", "another-order", "another-name"],
)
async def test_a_secret_sealed_for_another_machine_order_or_name_is_refused_and_nothing_runs(
    web: Daemon, tmp_path: Path, sealed_for: dict[str, tuple[Identity, str, str]]
) -> None:
    # Signed by the master as it stands (as if its signature had not caught the move): sealing refuses it alone.
    order = order_for(WEB, f"touch {tmp_path}/ran", sealed_for)
    result = await deliver(web, order)
    assert result["status"] == "rejected"
    assert "secret 'DB_PASSWORD' does not open on this machine" in result["error"]
    assert not (tmp_path / "ran").exists()
    assert not any(isinstance(sent, Output) for sent in hub_of(web).sent)


async def test_ciphertexts_a_hub_swaps_between_two_machines_orders_or_names_run_nothing(
    web: Daemon, tmp_path: Path
) -> None:
    mine = order_for(WEB, f"touch {tmp_path}/ran", {"DB_PASSWORD": (WEB, "", "DB_PASSWORD")})
    theirs = order_for(DB, f"touch {tmp_path}/ran", {"DB_PASSWORD": (DB, "", "DB_PASSWORD")})
    two = order_for(
        WEB, f"touch {tmp_path}/ran", {"A_SECRET": (WEB, "", "A_SECRET"), "B_SECRET": (WEB, "", "B_SECRET")}
    )
    swapped = mine.to_wire()
    swapped["body"] = {**swapped["body"], "secrets": theirs.to_wire()["body"]["secrets"]}
    crossed = two.to_wire()
    a, b = crossed["body"]["secrets"]["A_SECRET"], crossed["body"]["secrets"]["B_SECRET"]
    crossed["body"] = {**crossed["body"], "secrets": {"A_SECRET": b, "B_SECRET": a}}
    for tampered in (swapped, crossed):
        result = await deliver(web, tampered)
        assert result["status"] == "rejected" and "signature does not verify" in result["error"]
    assert not (tmp_path / "ran").exists()


async def test_a_secret_sealed_before_a_key_rotation_still_opens_after_it(web: Daemon, tmp_path: Path) -> None:
    # Queued before the rotation (sealed to the old key), run after the daemon switched to its new key.
    order = order_for(
        WEB, 'printf "%s" "$DB_PASSWORD" > ' + f"{tmp_path}/got", {"DB_PASSWORD": (WEB, "", "DB_PASSWORD")}
    )
    new = keys.make_pending(web.config, web.options.state_dir)  # what ROTATE_KEY does, then the reconnect:
    rotated = keys.pending_config(web.config, web.options.state_dir)
    assert rotated is not None and rotated.identity.id == new.id
    keys.promote_pending(rotated, web.options.state_dir, previous=web.config.identity)
    web.config = rotated
    # Only the old key's sealing key stays, to open such secrets: not the old key itself.
    assert WEB.private_text() not in (web.options.state_dir / keys.CURRENT).read_text()
    result = await deliver(web, order)
    assert result["status"] == "succeeded", result["error"]
    assert (tmp_path / "got").read_bytes() == PASSWORD
