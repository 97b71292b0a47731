"""A captured boot report is accepted once by the whole hub: replayed after the hub restarts, or to another
replica sharing its Redis, it is refused and adds nothing to the event log (issue 15, item 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from clients.master.sdk import Master
from protocol.boot import BootStatus
from tests.e2e.support import HubProcess
from tests.e2e.test_boot_reports import accepted, declare, refused, signed
from tests.nginx_server import free_port
from tests.redis_server import RedisServer


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def boot_steps(hub: HubProcess, scenario: str) -> list[dict[str, object]]:
    async with await Master.connect(hub.url, hub.key_path, timeout=10) as master:
        return [e.data async for e in master.events(scenario, 0, follow=False) if getattr(e, "kind", "") == "boot_step"]


async def test_a_report_replayed_after_the_hub_restarts_is_refused(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    headers, body = signed(machines["web"], "daemon-started", BootStatus.OK, b"captured on the wire")
    await accepted(http, hub, headers, body)

    await hub.arestart()  # SIGKILL and start again on the same data dir: nothing kept in the old process

    await refused(http, hub, headers, body, 409, "bad_sequence")
    steps = await boot_steps(hub, scenario)
    assert [step["detail"] for step in steps] == ["captured on the wire"]
    headers, body = signed(machines["web"], "after-restart", BootStatus.OK)  # fresh reports still get through
    await accepted(http, hub, headers, body)


@pytest.fixture
def replicas(tmp_path: Path, redis_server: RedisServer, redis_url: str) -> Iterator[list[HubProcess]]:
    started: list[HubProcess] = []
    try:
        for index in range(2):
            replica = HubProcess(
                tmp_path / f"replica{index}",
                extra_args=["--redis", redis_url, "--replica-id", f"r{index}"],
                key_path=tmp_path / "master.key",
                name=f"replica{index}",
            )
            replica.port = free_port()
            started.append(replica)
            replica.start()
        yield started
    finally:
        for replica in started:
            replica.cleanup()


async def test_a_report_replayed_to_another_replica_or_after_a_replica_restarts_is_refused(
    replicas: list[HubProcess], http: aiohttp.ClientSession
) -> None:
    first, second = replicas
    async with await Master.connect(first.url, first.key_path, timeout=10) as master:
        scenario, machines = await declare(master, "web")
    headers, body = signed(machines["web"], "installing-python", BootStatus.RUNNING, b"sent to replica 0")
    await accepted(http, first, headers, body)

    await refused(http, second, headers, body, 409, "bad_sequence")  # the other replica knows it too
    await first.arestart()
    await refused(http, first, headers, body, 409, "bad_sequence")  # and the restarted one still does

    for replica in replicas:
        steps = await boot_steps(replica, scenario)
        assert [step["detail"] for step in steps] == ["sent to replica 0"]
    headers, body = signed(machines["web"], "daemon-started", BootStatus.OK)
    await accepted(http, second, headers, body)
