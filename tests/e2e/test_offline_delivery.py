"""Orders sent to a machine whose daemon is down wait on the hub and run exactly once when it comes."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import HubProcess, file_lines, run_crc, wait_results


async def test_a_command_queued_while_the_daemon_is_down_runs_once_when_it_starts(
    master: Master, deploy, tmp_path: Path
) -> None:
    box = await deploy("offline", "box", start=False)
    log = tmp_path / "ran.log"
    (queued,) = await master.run("offline", "box", f"echo ran >> {log}", wait=False)
    assert queued.status == "queued"

    box.start("box")
    (result,) = await wait_results(master, "offline", [queued.order_id])
    assert (result.status, result.verified) == ("succeeded", True)
    assert file_lines(log) == ["ran"]

    # A restart (crash or not) must not bring it back: neither the hub nor the daemon's journal resends it.
    box.daemon("box").restart()
    await master.wait_ready("offline", timeout=15)
    (probe,) = await master.run("offline", "box", "true", wait_timeout=15)
    assert probe.ok
    assert file_lines(log) == ["ran"]
    (again,) = await master.results("offline", [queued.order_id])
    assert again.status == "succeeded"


async def test_several_queued_commands_run_in_submission_order(master: Master, deploy, tmp_path: Path) -> None:
    box = await deploy("queue", "box", start=False)
    log = tmp_path / "order.log"
    ids = []
    for i in range(6):
        (queued,) = await master.run("queue", "box", f"echo {i} >> {log}", wait=False)
        ids.append(queued.order_id)

    box.start("box")
    results = await wait_results(master, "queue", ids)
    assert [r.order_id for r in results] == ids
    assert all(r.ok for r in results), results
    assert file_lines(log) == [str(i) for i in range(6)]
    finished = [r.finished for r in results]
    assert finished == sorted(finished)


async def test_a_file_queued_while_the_daemon_is_down_is_written_when_it_starts(
    master: Master, deploy, tmp_path: Path
) -> None:
    box = await deploy("files", "box", start=False)
    target = tmp_path / "late.bin"
    content = bytes(range(256)) * 2000  # two chunks
    put = await master.put_file("files", "box", content, str(target), mode=0o600, wait_timeout=0.5)
    assert [r.status for r in put] == ["queued"]

    box.start("box")
    (result,) = await wait_results(master, "files", [put[0].order_id])
    assert (result.status, result.verified) == ("succeeded", True)
    assert target.read_bytes() == content


async def test_a_machine_queue_has_a_bound_and_a_full_one_refuses_clearly(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    hub.env["CRC_MAX_QUEUED"] = "3"
    hub.start()
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            await master.create_scenario("q", [("idle", "linux")])  # its daemon never starts: orders wait
            for i in range(3):
                await master.run("q", "idle", f"echo {i}", wait=False)
            with pytest.raises(RemoteError) as refused:
                await master.run("q", "idle", "echo one too many", wait=False)
            assert refused.value.code == "queue_full" and "3 orders waiting" in refused.value.message
        cli = run_crc(hub, "run", "q", "idle", "--no-wait", "--", "true")
        assert cli.returncode == 1 and "queue_full" in cli.stderr
    finally:
        hub.cleanup()
