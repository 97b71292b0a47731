"""Crashes (SIGKILL) of a daemon or of the hub lose nothing and never run a command twice."""

from __future__ import annotations

from pathlib import Path

from clients.master.sdk import Master
from tests.e2e.support import HubProcess, eventually, file_lines, wait_results, wait_state


async def test_a_daemon_killed_mid_command_reports_it_interrupted_and_never_reruns_it(
    master: Master, deploy, tmp_path: Path
) -> None:
    box = await deploy("crash", "box")
    log = tmp_path / "steps.log"
    (queued,) = await master.run("crash", "box", f"echo start >> {log}; sleep 5; echo end >> {log}", wait=False)
    await eventually(lambda: file_lines(log) == ["start"], timeout=15, what="the command to start")

    box.daemon("box").kill()  # the daemon and the command it runs, as when the machine or the unit dies
    box.daemon("box").start()
    (result,) = await wait_results(master, "crash", [queued.order_id])
    assert (result.status, result.verified) == ("interrupted", True)
    assert "not rerun" in result.error
    assert result.exit_code is None

    (probe,) = await master.run("crash", "box", "true", wait_timeout=15)
    assert probe.ok
    assert file_lines(log) == ["start"]


async def test_a_hub_killed_and_restarted_keeps_scenarios_queued_commands_and_results(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    box = await deploy("durable", "box")
    (past,) = await master.run("durable", "box", "echo before-crash", wait_timeout=15)
    assert past.ok
    assert box.daemon("box").terminate() == 0

    log = tmp_path / "queued.log"
    (queued,) = await master.run("durable", "box", f"echo once >> {log}", wait=False)
    await wait_state(master, "durable", queued.order_id, "queued")

    await hub.arestart()  # SIGKILL, then the same port and data dir

    # The SDK reconnects by itself; everything it asks for now comes from the restarted hub's store.
    assert [s["name"] for s in await master.scenarios()] == ["durable"]
    sc = await master.scenario("durable")
    assert [(m.name, m.status) for m in sc.machines] == [("box", "offline")]
    old, pending = await master.results("durable", [past.order_id, queued.order_id])
    assert (old.status, old.stdout, old.verified) == ("succeeded", b"before-crash\n", True)
    assert pending.status == "queued"
    events = [e async for e in master.events("durable", 0, follow=False)]
    assert [e.cursor for e in events] == list(range(1, len(events) + 1))

    box.start("box")
    (done,) = await wait_results(master, "durable", [queued.order_id])
    assert (done.status, done.verified) == ("succeeded", True)
    assert file_lines(log) == ["once"]

    # and the hub keeps working as before
    (after,) = await master.run("durable", "box", "echo after-restart", wait_timeout=15)
    assert after.stdout == b"after-restart\n"
    assert file_lines(log) == ["once"]


async def test_a_result_finished_while_the_hub_is_down_is_delivered_when_it_returns(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("spool", "box")
    marker = tmp_path / "finished"
    (queued,) = await master.run("spool", "box", f"sleep 1.5; echo done; touch {marker}", wait=False)
    await wait_state(master, "spool", queued.order_id, "running")

    hub.kill()
    await eventually(marker.exists, timeout=15, what="the command to finish while the hub is down")
    await hub.astart()

    (result,) = await wait_results(master, "spool", [queued.order_id], timeout=20)
    assert (result.status, result.exit_code, result.stdout, result.verified) == ("succeeded", 0, b"done\n", True)
    events = [e async for e in master.events("spool", 0, follow=False)]
    finished = [e for e in events if e.kind == "command_finished" and e.data["order_id"] == queued.order_id]
    assert len(finished) == 1
