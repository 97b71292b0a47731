"""Targeting and fan-out controls on 24 real daemons (one swarm process): roles, labels, globs and lists pick the
right machines; concurrency is never exceeded; a failure threshold stops dispatch; slow targets time out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.master.fanout import FanOut, Summary
from clients.master.sdk import Master, MasterError
from tests.e2e.support import PYTHON, HubProcess, Process, child_env

COUNT = 24
pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def fleet(hub: HubProcess, master: Master, tmp_path: Path) -> AsyncIterator[Master]:
    """Scenario "fleet": m00..m23, even ones role web / odd ones role db, labels zone=a (first half) or b."""
    declared = [
        (f"m{i:02d}", "linux", "web" if i % 2 == 0 else "db", {"zone": "a" if i < COUNT // 2 else "b"})
        for i in range(COUNT)
    ]
    configs = tmp_path / "fleet-configs"
    for m in await master.create_scenario("fleet", declared):
        write_config(configs / f"{m.name}.toml", DaemonConfig(hub.url, "fleet", m.name, m.identity,
                                                              master.identity.public))  # fmt: skip
    swarm = Process("swarm", [PYTHON, "-m", "bench.swarm", str(configs), str(tmp_path / "fleet-state")], child_env(),
                    tmp_path / "swarm.log")  # fmt: skip
    swarm.start()
    try:
        await master.wait_ready("fleet", timeout=60)
        yield master
    finally:
        swarm.cleanup()


async def test_targets_select_by_role_label_glob_and_list(fleet: Master) -> None:
    async def picked(target: str) -> list[str]:
        return [m.name for m in (await fleet.targets("fleet", target))[1]]

    assert len(await picked("all")) == COUNT
    assert await picked("role:db") == [f"m{i:02d}" for i in range(1, COUNT, 2)]
    assert await picked("label:zone=b") == [f"m{i:02d}" for i in range(COUNT // 2, COUNT)]
    assert await picked("m1*") == [f"m{i:02d}" for i in range(10, 20)]
    assert await picked("m03,role:web,label:zone=b") == [
        m for m in (f"m{i:02d}" for i in range(COUNT)) if m == "m03" or int(m[1:]) % 2 == 0 or int(m[1:]) >= 12
    ]
    results = await fleet.run("fleet", "role:db,label:zone=a", 'echo "$CRC_MACHINE"')
    assert sorted(r.stdout.decode().strip() for r in results) == sorted(
        {f"m{i:02d}" for i in range(1, COUNT, 2)} | {f"m{i:02d}" for i in range(COUNT // 2)}
    )
    with pytest.raises(MasterError, match="matches no machine"):
        await fleet.run("fleet", "role:nobody", "true")
    with pytest.raises(MasterError, match="no machine 'm99'"):
        await fleet.run("fleet", "m99", "true")


async def test_concurrency_is_never_exceeded(fleet: Master, tmp_path: Path) -> None:
    log = tmp_path / "overlap.log"
    command = f'echo "+ $(date +%s%N)" >> {log}; sleep 0.3; echo "- $(date +%s%N)" >> {log}'
    results = await fleet.run("fleet", "all", command, fanout=FanOut(concurrency=5), wait_timeout=60)
    assert Summary.of(results).line() == f"{COUNT} succeeded, 0 failed, 0 timed out, 0 skipped"
    events = sorted((int(stamp), sign) for sign, stamp in (line.split() for line in log.read_text().splitlines()))
    running = peak = 0
    for _, sign in events:  # at equal stamps "-" sorts first: an end and a start at once do not overlap
        running += 1 if sign == "+" else -1
        peak = max(peak, running)
    assert 2 <= peak <= 5, peak


async def test_a_failure_threshold_stops_further_dispatch(fleet: Master, tmp_path: Path) -> None:
    ran = tmp_path / "ran.log"
    command = f'echo "$CRC_MACHINE" >> {ran}; case "$CRC_MACHINE" in m0[0-5]) exit 3;; esac; sleep 0.1'
    results = await fleet.run("fleet", "all", command, fanout=FanOut(concurrency=2, max_failures=1), wait_timeout=60)
    summary = Summary.of(results)
    assert len(summary.failed) >= 2 and summary.succeeded == []
    assert len(summary.skipped) >= COUNT - 4 and not summary.unfinished
    assert sorted(ran.read_text().split()) == sorted(summary.failed)  # skipped machines never ran anything
    skipped = next(r for r in results if r.status == "skipped")
    assert skipped.order_id == "" and "max_failures 1" in skipped.error


async def test_targets_without_a_result_in_time_are_cancelled_and_counted(fleet: Master) -> None:
    started = asyncio.get_running_loop().time()
    results = await fleet.run("fleet", "m00,m01,m02", "sleep 30", fanout=FanOut(target_timeout=1.0), wait_timeout=60)
    assert asyncio.get_running_loop().time() - started < 15
    assert Summary.of(results).timed_out == ["m00", "m01", "m02"]
    assert all("within 1 s" in r.error for r in results)
