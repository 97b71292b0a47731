"""An order can never outlive the daemon's memory of its id: the master signs none valid for longer than
``MAX_ORDER_TTL``, the hub queues none (directly or in a plan), and a daemon refuses one a hub put into its own
store anyway, so a signed order re-queued after the daemon forgot its id (its clock moved on) cannot run again."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import msgpack
import pytest

from clients.master.sdk import Master, MasterError
from protocol import Order, OrderKind, RemoteError
from protocol.messages import PlanSubmit
from protocol.orders import MAX_ORDER_TTL
from protocol.plans import parse_plan, plan_to_wire
from tests.e2e.support import HubProcess, file_lines, wait_results

pytestmark = pytest.mark.asyncio


def _exec(master: Master, machine_id: str, scenario: str, command: str, expires: float) -> Order:
    body = {"command": command, "cwd": None, "env": {}, "timeout": None}
    return Order(uuid.uuid4().hex, scenario, machine_id, OrderKind.EXEC, body, expires,
                 master.identity.id).signed(master.identity)  # fmt: skip


async def test_the_master_and_the_hub_refuse_orders_valid_for_longer_than_a_week(master: Master, deploy) -> None:
    await deploy("ttl", "box")
    box = (await master.scenario("ttl")).machine("box")
    with pytest.raises(MasterError, match="nothing was sent"):
        await master.dispatch("ttl", "box", OrderKind.EXEC, {"command": "true"}, ttl=MAX_ORDER_TTL + 60)
    with pytest.raises(MasterError, match="nothing was sent"):
        await master.run_plan(
            "ttl", {"name": "p", "steps": [{"id": "a", "target": "all", "command": "true"}]}, ttl=60 * 86400
        )
    # signed by hand (as an older master would have), the hub still refuses to queue it, alone or in a plan
    with pytest.raises(RemoteError, match="too far in the future: orders may be valid for at most 7 days"):
        await master.submit(_exec(master, box.id, "ttl", "true", time.time() + 60 * 86400))
    spec = plan_to_wire(parse_plan({"name": "p", "steps": [{"id": "a", "target": "all", "command": "true"}]}))
    long_lived = _exec(master, box.id, "ttl", "true", time.time() + 60 * 86400).to_wire()
    with pytest.raises(RemoteError, match="step 'a': order expiry is too far"):
        await master.request(PlanSubmit("ttl", uuid.uuid4().hex, spec, {"a": [long_lived]}), scenario="ttl")
    assert await master.plans("ttl") == []


async def test_a_long_lived_order_planted_in_the_store_is_refused_by_the_daemon(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    shop = await deploy("planted", "box")
    box = (await master.scenario("planted")).machine("box")
    marker = tmp_path / "ran"
    shop.daemon("box").kill()
    # A 60-day order the master signed once (before the cap): the hub puts it back into its queue.
    order = _exec(master, box.id, "planted", f"touch {marker}", time.time() + 60 * 86400)
    with sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None) as db:
        (scenario_id,) = db.execute("SELECT id FROM scenarios WHERE name = 'planted'").fetchone()
        now = time.time()
        db.execute(
            "INSERT INTO orders (id, scenario_id, machine_id, kind, body, state, created, updated) "
            "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
            (order.id, scenario_id, box.id, "exec", msgpack.packb(order.to_wire(), use_bin_type=True), now, now),
        )
    shop.start("box")

    (result,) = await wait_results(master, "planted", [order.id], timeout=30)
    assert (result.status, result.verified) == ("rejected", True)
    assert "more than 7 days" in result.error
    assert not marker.exists()


def _requeue(hub: HubProcess, order_id: str) -> None:
    """What a hostile hub does with a signed order that already ran: put it back in the machine's queue."""
    with sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None) as db:
        changed = db.execute("UPDATE orders SET state = 'queued', result = NULL WHERE id = ?", (order_id,)).rowcount
    assert changed == 1


async def test_a_signed_order_re_queued_in_the_store_does_not_run_again(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    shop = await deploy("requeue", "box")
    marker = tmp_path / "runs"
    [first] = await master.run("requeue", "box", f"echo ran >> {marker}", wait_timeout=15)
    assert first.ok and file_lines(marker) == ["ran"]

    shop.daemon("box").kill()
    _requeue(hub, first.order_id)
    shop.start("box")  # the hub delivers it again on reconnect

    (again,) = await wait_results(master, "requeue", [first.order_id], timeout=30)
    # The daemon answers with the result it signed the first time: the hub cannot make it look new.
    assert (again.status, again.verified, again.started) == ("succeeded", True, first.started)
    [after] = await master.run("requeue", "box", f"echo after >> {marker}", wait_timeout=15)
    assert after.ok and file_lines(marker) == ["ran", "after"], "the re-queued order ran only once"
