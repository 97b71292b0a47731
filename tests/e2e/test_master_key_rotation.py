"""Rotating the master key (``crc rotate-key``): every machine is told, in an order signed with the old key, to
obey the new one; the hub moves the master (name, scenarios) to the new key; the old key is refused by the hub,
and a machine that was offline switches as soon as it reconnects."""

from __future__ import annotations

import asyncio
import stat

import pytest

from clients.master.keys import load_master_key
from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import HubProcess, run_crc


async def test_the_master_moves_to_a_new_key_and_its_machines_follow(hub: HubProcess, master: Master, deploy) -> None:
    shop = await deploy("shop", "web", "db")
    await master.close()
    old = load_master_key(hub.key_path)
    shop.daemon("db").kill()  # offline during the rotation

    rotated = await asyncio.to_thread(run_crc, hub, "rotate-key", "--timeout", "8", timeout=60)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    assert "1 machines switched" in rotated.stdout and "will switch when they reconnect: db" in rotated.stderr
    new = load_master_key(hub.key_path)
    assert new.id != old.id and stat.S_IMODE(hub.key_path.stat().st_mode) == 0o600
    assert not hub.key_path.with_name(hub.key_path.name + ".new").exists()

    with pytest.raises(RemoteError, match="unknown_identity"):
        await Master.connect(hub.url, old)
    async with await Master.connect(hub.url, new) as renewed:
        assert [s["name"] for s in await renewed.scenarios()] == ["shop"]
        [web] = await renewed.run("shop", "web", "echo obeys the new key")
        assert web.ok and web.verified, web
        shop.start("db")  # back online: the queued order switches it first, then it runs what the new key signed
        [db] = await renewed.run("shop", "db", "echo caught up", wait_timeout=30)
        assert db.ok and db.verified, db
        kinds = [r.kind for r in await renewed.results("shop")]
        assert kinds.count("trust_master") == 2
