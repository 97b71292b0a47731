"""A daemon plays a composition only if its master signed it and it selects this very machine, and plays it once:
what a hostile hub can do with the compositions and certificates it holds (swap, alter, replay, re-address)
runs nothing. Real ``Daemon`` and journal; the hub link, the executor and the clock are stand-ins
(``test_order_memory``), and the hub here holds only what a hub holds."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import DaemonConfig, Ensemble
from protocol import Envelope, Identity
from protocol.certificates import MachineCertificate
from protocol.compositions import Composition, MemberOrder
from protocol.messages import Deliver
from tests.clients.daemon.test_order_memory import (
    MACHINE,
    SCENARIO,
    T0,
    A,
    B,
    Clock,
    CountingExecutor,
    HubSide,
    hub_of,
    ran,
)

OTHER = Identity.from_seed(b"\x0a" * 32)


def certificate(machine: Identity, role: str, master: Identity = A, name: str = "db") -> dict[str, Any]:
    made = MachineCertificate(SCENARIO, name, machine.id, machine.public.to_text(), "linux", role, {"tier": "back"})
    return made.endorsed(master).to_wire()


def composition(target: str = "role:artist", *, master: Identity = A, expires: float = 0.0) -> Composition:
    body = {"command": "tune", "env": {}, "job": "tune", "job_version": 1}
    return Composition("c1", master.id, SCENARIO, target, body, T0, expires).signed(master)


async def make_daemon(tmp_path: Path, ensemble: Ensemble | None = None) -> Daemon:
    config = DaemonConfig("ws://127.0.0.1:1", SCENARIO, "db", MACHINE, A.public, ensemble=ensemble)
    made = Daemon(config, DaemonOptions(tmp_path / "state", tmp_path / "hosts", clock=Clock()), CountingExecutor())
    made.link = HubSide(made)  # type: ignore[assignment]
    return made


@pytest.fixture
async def daemon(tmp_path: Path) -> Any:
    made = await make_daemon(tmp_path)
    worker = asyncio.create_task(made._worker())
    yield made
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    made.journal.close()


async def deliver(daemon: Daemon, wire: dict[str, Any]) -> dict[str, Any]:
    """Hand the daemon a member order as a hub would; its result (bounded wait)."""
    order_id = str(wire.get("id"))
    envelope = Envelope("env", "hub", MACHINE.id, SCENARIO, T0, Deliver(wire))
    answered = len(hub_of(daemon).results)
    await daemon._on_deliver(envelope)
    for _ in range(500):
        found = [r for r in hub_of(daemon).results[answered:] if r["order_id"] == order_id]
        if found:
            return found[-1]
        await asyncio.sleep(0.01)
    raise AssertionError(f"no result for {order_id}")


def play(made: Composition, cert: dict[str, Any] | None, machine: str = MACHINE.id) -> dict[str, Any]:
    return MemberOrder(made, machine, cert).to_wire()


async def test_a_certified_member_plays_once_however_often_it_is_delivered(daemon: Daemon) -> None:
    wire = play(composition(), certificate(MACHINE, "artist"))
    first = await deliver(daemon, wire)
    again = await deliver(daemon, wire)
    assert first["status"] == again["status"] == "succeeded"
    assert first["order_id"] == f"c1.{MACHINE.id}" and again == first  # the same signed result, sent again
    assert ran(daemon) == ["tune"]


@pytest.mark.parametrize(
    ("made", "cert", "refusal"),
    [
        (composition("role:web"), certificate(MACHINE, "artist"), "does not select this machine"),
        (composition("label:tier=front"), certificate(MACHINE, "artist"), "does not select this machine"),
        (composition("other-name"), certificate(MACHINE, "artist"), "does not select this machine"),
        (composition(master=B), certificate(MACHINE, "artist"), "not signed by this master"),
        (replace(composition(), body={"command": "rm -rf /", "env": {}}), certificate(MACHINE, "artist"), "signature"),
        (replace(composition(), target="all"), certificate(MACHINE, "web"), "signature"),
        (composition(), certificate(OTHER, "artist"), "no certificate"),  # another machine's certificate
        (composition(), certificate(MACHINE, "artist", master=B), "no certificate"),  # not the master's word
        (composition(), None, "no certificate"),
        (composition(expires=T0 - 1), certificate(MACHINE, "artist"), "expired"),
    ],
    ids=[
        "other-role",
        "other-label",
        "other-name",
        "other-master",
        "altered-body",
        "widened-target",
        "swapped-certificate",
        "forged-certificate",
        "no-certificate",
        "expired",
    ],
)
async def test_a_composition_the_hub_cannot_show_is_for_this_machine_runs_nothing(
    daemon: Daemon, made: Composition, cert: dict[str, Any] | None, refusal: str
) -> None:
    result = await deliver(daemon, play(made, cert))
    assert result["status"] == "rejected" and refusal in result["error"], result["error"]
    assert ran(daemon) == []


async def test_a_play_re_addressed_to_this_machine_from_another_is_refused(daemon: Daemon) -> None:
    """The hub copies another member's play (its id names that machine) with this machine's certificate."""
    wire = {**play(composition(), certificate(MACHINE, "artist"), machine=OTHER.id), "machine": OTHER.id}
    envelope = Envelope("env", "hub", MACHINE.id, SCENARIO, T0, Deliver(wire))
    await daemon._on_deliver(envelope)
    await asyncio.sleep(0.2)
    [result] = hub_of(daemon).results
    assert result["status"] == "rejected" and "another machine" in result["error"]
    assert ran(daemon) == []


async def test_the_orders_own_fields_are_ignored_so_a_hub_cannot_swap_the_command_beside_the_composition(
    daemon: Daemon,
) -> None:
    wire = {**play(composition(), certificate(MACHINE, "artist")), "body": {"command": "evil", "env": {}}}
    assert (await deliver(daemon, wire))["status"] == "succeeded"
    assert ran(daemon) == ["tune"]


async def test_a_joiner_without_a_certificate_plays_by_the_role_its_token_gave_it(tmp_path: Path) -> None:
    made = await make_daemon(tmp_path, Ensemble("artist", {"tier": "back"}))
    worker = asyncio.create_task(made._worker())
    try:
        assert (await deliver(made, play(composition("label:tier=back"), None)))["status"] == "succeeded"
        other = replace(composition("role:web"), id="c2").signed(A)
        refused = await deliver(made, play(other, None))
        assert refused["status"] == "rejected" and "does not select" in refused["error"]
        assert ran(made) == ["tune"]
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        made.journal.close()
