"""Futures: per-scenario keys masters and machines set, read and wait on. A wait returns the moment the key is
set (pushed, not polled); keys with a TTL expire; a machine may set only keys under its own name."""

from __future__ import annotations

import asyncio
import time

import pytest

from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import wait_results


async def test_masters_set_get_and_wait_and_keys_expire(master: Master, deploy) -> None:
    await deploy("fut", "box", start=False)
    assert await master.kv_get("fut", "config/port") is None
    await master.kv_set("fut", "config/port", "8080")
    assert await master.kv_get("fut", "config/port") == b"8080"

    waiter = asyncio.create_task(master.kv_wait("fut", "db/ready", timeout=20))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    set_at = time.monotonic()
    await master.kv_set("fut", "db/ready", b"yes")
    assert await asyncio.wait_for(waiter, 10) == b"yes"
    assert time.monotonic() - set_at < 2.0  # pushed, not found by a later poll

    await master.kv_set("fut", "lease", "mine", ttl=1.0)
    assert await master.kv_get("fut", "lease") == b"mine"
    await asyncio.sleep(1.5)
    assert await master.kv_get("fut", "lease") is None  # the TTL ran out

    with pytest.raises(RemoteError, match="timeout"):
        await master.kv_wait("fut", "never/set", timeout=0.5)
    with pytest.raises(RemoteError, match="invalid_request"):
        await master.kv_set("fut", "../escape", "x")
    with pytest.raises(RemoteError, match="not_found"):
        await master.kv_set("someone-elses", "k", "x")


async def test_two_machines_coordinate_through_a_future(master: Master, deploy) -> None:
    await deploy("coord", "db", "web")
    [waiting] = await master.run(
        "coord", "web", "crc-daemon kv wait db/ready --timeout 30 && echo web saw it", wait=False
    )
    await asyncio.sleep(1.0)
    [setter] = await master.run("coord", "db", "sleep 0.5; crc-daemon kv set db/ready up && crc-daemon kv get db/ready")
    assert setter.ok and setter.stdout == b"up\n", setter
    [waited] = await wait_results(master, "coord", [waiting.order_id], timeout=30)
    assert waited.ok and waited.stdout == b"up\nweb saw it\n", waited

    [intruder] = await master.run("coord", "web", "crc-daemon kv set db/ready hijacked")
    assert intruder.exit_code == 1 and b"forbidden" in intruder.stderr and b"web/" in intruder.stderr
    assert await master.kv_get("coord", "db/ready") == b"up"
    [timed_out] = await master.run("coord", "web", "crc-daemon kv wait nobody/sets-this --timeout 0.5")
    assert timed_out.exit_code == 124 and b"timeout" in timed_out.stderr
