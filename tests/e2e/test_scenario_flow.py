"""The whole flow through the SDK: a scenario of two machines, commands, files, hosts, the event log."""

from __future__ import annotations

import stat
from collections import defaultdict
from pathlib import Path
from typing import Any

from clients.daemon.hosts import BEGIN_MARKER, END_MARKER
from clients.master.models import EventInfo, OutputChunk
from clients.master.sdk import Master
from tests.e2e.support import wait_results, wait_state


async def test_a_scenario_runs_commands_writes_files_and_hosts_and_logs_every_step(
    master: Master, deploy, tmp_path: Path
) -> None:
    shop = await deploy("shop", "mysql", "web")

    chunks: dict[str, list[bytes]] = defaultdict(list)

    def collect(chunk: OutputChunk) -> None:
        assert chunk.scenario == "shop"
        assert chunk.stream == "stdout"
        chunks[chunk.machine].append(chunk.data)

    results = await master.run(
        "shop", "all", "printf 'one\\n'; printf 'two\\n'; echo \"$CRC_TEST_VAR\"",
        env={"CRC_TEST_VAR": "from-env"}, wait_timeout=15, on_output=collect,
    )  # fmt: skip
    assert sorted(r.machine for r in results) == ["mysql", "web"]
    for r in results:
        assert (r.status, r.exit_code, r.verified) == ("succeeded", 0, True), r
        assert r.stdout == b"one\ntwo\nfrom-env\n"
        assert r.kind == "exec"
        assert r.started is not None and r.finished is not None and r.started <= r.finished
        assert b"".join(chunks[r.machine]) == r.stdout, "live output differs from the stored result"

    # put_file: content and mode on disk
    target = tmp_path / "remote" / "app.conf"
    target.parent.mkdir()
    content = b"listen = 8080\n" + bytes(range(256)) * 1200  # > one 256 KiB chunk
    results = await master.put_file("shop", "mysql", content, str(target), mode=0o640, wait_timeout=15)
    assert [(r.machine, r.status, r.verified) for r in results] == [("mysql", "succeeded", True)]
    assert target.read_bytes() == content
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    # distribute_hosts: every machine's hosts file lists both machines
    sc = await master.scenario("shop")
    assert all(m.ips for m in sc.machines), f"daemons reported no routable address: {sc.machines}"
    results = await master.distribute_hosts("shop", extra={"gateway": "10.9.8.7"}, wait_timeout=15)
    assert {(r.machine, r.status) for r in results} == {("mysql", "succeeded"), ("web", "succeeded")}
    for machine in ("mysql", "web"):
        text = shop.daemon(machine).hosts_file.read_text()
        block = text[text.index(BEGIN_MARKER) : text.index(END_MARKER)]
        for m in sc.machines:
            assert f"{m.ips[0]}\t{m.name} {m.name}.shop\n" in block, text
        assert "10.9.8.7\tgateway\n" in block

    # the event log: replay from 0 is numbered 1..N without gaps, and resuming in the middle gives the rest
    events = [e async for e in master.events("shop", 0, follow=False)]
    assert all(isinstance(e, EventInfo) for e in events)
    assert [e.cursor for e in events] == list(range(1, len(events) + 1))
    assert events[0].kind == "scenario_created"
    kinds = [e.kind for e in events]
    for kind in ("machine_connected", "machine_ready", "command_queued", "command_delivered", "command_started"):
        assert kind in kinds
    assert kinds.count("command_finished") == 2 + 1 + 2
    for cursor in range(len(events) + 1):
        rest = [e async for e in master.events("shop", cursor, follow=False)]
        assert rest == events[cursor:], f"resuming after {cursor}"


async def test_a_failing_command_reports_its_exit_code_and_stderr(master: Master, deploy) -> None:
    await deploy("exits", "box")
    (result,) = await master.run("exits", "box", "echo oops >&2; exit 3", wait_timeout=15)
    assert (result.status, result.exit_code, result.verified) == ("failed", 3, True)
    assert result.stderr == b"oops\n"
    assert not result.ok


async def test_a_command_over_its_time_limit_is_killed_and_reported_timed_out(master: Master, deploy) -> None:
    await deploy("slow", "box")
    (result,) = await master.run("slow", "box", "echo begun; exec sleep 30", timeout=1, wait_timeout=15)
    assert result.status == "timed_out"
    assert result.exit_code is None
    assert result.stdout == b"begun\n"
    assert result.finished is not None and result.started is not None
    assert result.finished - result.started < 10


async def test_cancelling_a_running_command_stops_it_and_reports_cancelled(
    master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("stop", "box")
    marker = tmp_path / "finished"
    (queued,) = await master.run("stop", "box", f"sleep 30; touch {marker}", wait=False)
    await wait_state(master, "stop", queued.order_id, "running")
    state = await master.cancel("stop", queued.order_id)
    assert state in ("delivered", "running", "cancelled")
    (result,) = await wait_results(master, "stop", [queued.order_id])
    assert (result.status, result.verified) == ("cancelled", True)
    assert not marker.exists()
    # the machine is free again
    (after,) = await master.run("stop", "box", "echo free", wait_timeout=15)
    assert after.stdout == b"free\n"


async def test_cancelling_a_command_queued_for_an_offline_machine_is_final_at_once(
    master: Master, deploy, tmp_path: Path
) -> None:
    shop = await deploy("later", "box", start=False)
    marker = tmp_path / "ran"
    (queued,) = await master.run("later", "box", f"touch {marker}", wait=False)
    assert queued.status == "queued"
    assert await master.cancel("later", queued.order_id) == "cancelled"
    shop.start("box")
    await master.wait_ready("later", timeout=15)
    (probe,) = await master.run("later", "box", "true", wait_timeout=15)
    assert probe.ok
    (result,) = await master.results("later", [queued.order_id])
    assert result.status == "cancelled"
    assert not marker.exists()  # the probe ran after it, in order: had it run, the marker would be there


async def test_a_scenario_of_many_machines_is_read_a_page_at_a_time(master: Master) -> None:
    from protocol.messages import ScenarioShow

    names = [f"n{i:04d}" for i in range(600)]
    created = await master.create_scenario("big", [(n, "linux") for n in reversed(names)])
    assert len(created) == 600
    scenario = await master.scenario("big")
    assert [m.name for m in scenario.machines] == names  # every page, in name order, none twice
    page = await master.request(ScenarioShow("big", after="n0100", limit=10), scenario="big")
    assert [m["name"] for m in page["machines"]] == names[101:111] and page["more"] is True
    last = await master.request(ScenarioShow("big", after="n0590"), scenario="big")
    assert [m["name"] for m in last["machines"]] == names[591:] and last["more"] is False


async def test_results_larger_than_a_frame_arrive_a_page_at_a_time(master: Master, deploy: Any) -> None:
    await deploy("loud", "box")
    command = "head -c 250000 /dev/zero | tr '\\\\0' a; head -c 200000 /dev/zero | tr '\\\\0' b >&2"
    for _ in range(5):  # 5 x 450 kB of output: well over one 1 MiB frame
        [result] = await master.run("loud", "box", command)
        assert result.ok and len(result.stdout) == 250000 and len(result.stderr) == 200000
    results = await master.results("loud")
    assert len(results) == 5 and all(r.verified and len(r.stdout) == 250000 for r in results)


async def test_machine_labels_are_stored_and_checked(master: Master) -> None:
    from protocol import RemoteError

    await master.create_scenario("labelled", [("web", "linux", "web", {"tier": "front", "team/owner": "ops"})])
    assert (await master.scenario("labelled")).machine("web").labels == {"tier": "front", "team/owner": "ops"}
    for bad in ({"": "x"}, {"tier": "a,b"}, {"ti er": "x"}, {f"k{i}": "v" for i in range(33)}):
        try:
            await master.create_scenario("bad-labels", [("web", "linux", "web", bad)])
        except RemoteError as exc:
            assert exc.code == "invalid_request" and "label" in exc.message
        else:
            raise AssertionError(f"labels {bad!r} were accepted")
