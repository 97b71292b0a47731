"""Deleting a scenario revokes its machines: their sessions close at once and the daemons exit for good (the
revocation arrives sealed in their session; an unsealed refusal is only retried)."""

from __future__ import annotations

import time

import pytest

from clients.daemon.cli import EXIT_REVOKED
from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import eventually


async def test_deleting_a_scenario_closes_its_daemons_sessions_and_they_exit_with_code_3(
    master: Master, deploy
) -> None:
    shop = await deploy("doomed", "db", "web")
    begun = time.monotonic()
    answer = await master.delete_scenario("doomed")
    assert answer["deleted"] == "doomed"
    assert len(answer["revoked"]) == 2

    for machine in ("db", "web"):
        daemon = shop.daemon(machine)
        assert await daemon.wait_exit(10) == EXIT_REVOKED
        assert "revoked" in daemon.log_text()
    # "at once": the hub closes the sessions itself, it does not wait for a heartbeat to expire
    assert time.monotonic() - begun < 5

    with pytest.raises(RemoteError) as caught:
        await master.scenario("doomed")
    assert caught.value.code == "not_found"


async def test_a_revoked_daemon_started_again_is_refused_but_keeps_retrying(master: Master, deploy) -> None:
    """The refusal comes before any session, unsealed: anyone on the path could have sent it, so it is not final."""
    shop = await deploy("gone", "db", start=False)
    await master.delete_scenario("gone")
    daemon = shop.start("db")

    def refusals() -> int:
        return daemon.log_text().count("an unsealed refusal is not trusted as final")

    await eventually(lambda: refusals() >= 2, timeout=20, what="the daemon to be refused twice")
    assert daemon.running
    log = daemon.log_text()
    assert "says this machine's key is revoked or was never enrolled" in log, log
    assert "unknown_identity" in log


async def test_a_deleted_scenario_name_can_be_created_again_with_new_machines(master: Master, deploy) -> None:
    first = await deploy("reborn", "db", ready=False, start=False)
    await master.delete_scenario("reborn")
    second = await deploy("reborn", "db")
    assert first.configs["db"] == second.configs["db"]  # same path, rewritten with the new key
    (result,) = await master.run("reborn", "db", "echo again", wait_timeout=15)
    assert result.stdout == b"again\n"


async def test_revoking_one_machine_disconnects_only_it_and_keeps_the_scenario_working(master: Master, deploy) -> None:
    shop = await deploy("partial", "db", "web")
    (before,) = await master.run("partial", "web", "echo before", wait_timeout=20)

    await master.revoke_machine("partial", "web")

    assert await shop.daemon("web").wait_exit(10) == EXIT_REVOKED
    scenario = await master.scenario("partial")
    assert [m.name for m in scenario.machines] == ["db"]
    (still,) = await master.run("partial", "db", "echo still here", wait_timeout=20)
    assert still.stdout == b"still here\n"
    assert before.order_id in {r.order_id for r in await master.results("partial")}  # history stays
    events = [e.kind async for e in master.events("partial", 0, follow=False) if hasattr(e, "kind")]
    assert "machine_revoked" in events
    with pytest.raises(RemoteError) as caught:
        await master.revoke_machine("partial", "web")
    assert caught.value.code == "not_found"
