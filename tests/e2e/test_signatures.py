"""The daemon, not the hub, decides what runs: orders the master did not sign, or that expired, are refused.

The hub routes such orders like any other (it checks tenancy, not signatures), so these go all the way to the
daemon, which reports them ``rejected`` in a result it signs itself; the command never runs.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from pathlib import Path

from clients.master.sdk import Master
from protocol import Identity, Order, OrderKind
from tests.e2e.support import wait_results


def exec_order(master: Master, machine_id: str, scenario: str, command: str, *, expires_in: float = 60) -> Order:
    """An unsigned EXEC order from ``master`` (sign it with ``.signed``)."""
    body = {"command": command, "cwd": None, "env": {}, "timeout": None}
    return Order(uuid.uuid4().hex, scenario, machine_id, OrderKind.EXEC, body, time.time() + expires_in,
                 master.identity.id)  # fmt: skip


async def submit_and_wait(master: Master, scenario: str, order: Order):
    order_id = await master.submit(order)
    assert order_id == order.id
    (result,) = await wait_results(master, scenario, [order_id])
    return result


async def test_an_order_signed_by_another_key_is_refused_by_the_daemon(master: Master, deploy, tmp_path: Path) -> None:
    await deploy("signed", "box")
    machine = (await master.scenario("signed")).machine("box")
    marker = tmp_path / "forged-ran"
    impostor = Identity.generate(secrets.token_bytes)
    unsigned = exec_order(master, machine.id, "signed", f"touch {marker}")
    # The right master id (so the hub routes it), but a signature by another key.
    forged = dataclasses.replace(unsigned, signature=impostor.sign(unsigned.signing_payload()))

    result = await submit_and_wait(master, "signed", forged)
    assert (result.status, result.verified) == ("rejected", True)
    assert "bad_signature" in result.error
    assert result.exit_code is None

    # the daemon is fine and obeys its real master
    (good,) = await master.run("signed", "box", "echo obeyed", wait_timeout=15)
    assert good.stdout == b"obeyed\n"
    assert not marker.exists()


async def test_an_order_altered_after_signing_is_refused_by_the_daemon(master: Master, deploy, tmp_path: Path) -> None:
    await deploy("altered", "box")
    machine = (await master.scenario("altered")).machine("box")
    marker = tmp_path / "altered-ran"
    signed = exec_order(master, machine.id, "altered", "true").signed(master.identity)
    altered = dataclasses.replace(signed, body={**signed.body, "command": f"touch {marker}"})

    result = await submit_and_wait(master, "altered", altered)
    assert (result.status, result.verified) == ("rejected", True)
    assert "bad_signature" in result.error
    assert not marker.exists()


async def test_an_expired_order_is_refused_by_the_daemon(master: Master, deploy, tmp_path: Path) -> None:
    await deploy("expired", "box")
    machine = (await master.scenario("expired")).machine("box")
    marker = tmp_path / "expired-ran"
    stale = exec_order(master, machine.id, "expired", f"touch {marker}", expires_in=-1).signed(master.identity)

    result = await submit_and_wait(master, "expired", stale)
    assert (result.status, result.verified) == ("rejected", True)
    assert "expired" in result.error
    assert not marker.exists()


async def test_an_order_for_another_machine_is_refused_by_the_daemon_it_reaches(
    master: Master, deploy, tmp_path: Path
) -> None:
    """Signed for machine A, queued (by a lying hub, here: by id swap) for machine B: B refuses it."""
    await deploy("target", "a", "b")
    sc = await master.scenario("target")
    marker = tmp_path / "misrouted-ran"
    for_a = exec_order(master, sc.machine("a").id, "target", f"touch {marker}").signed(master.identity)
    # Re-addressed to b after signing: the hub queues it for b, whose daemon sees the signature does not match.
    to_b = dataclasses.replace(for_a, machine=sc.machine("b").id)

    result = await submit_and_wait(master, "target", to_b)
    assert result.machine == "b"
    assert result.status == "rejected"
    assert not marker.exists()
