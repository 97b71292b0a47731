"""Rotating the master key (``crc rotate-key``): every machine is told, in an order signed with the old key, to
obey the new one; the hub moves the master (name, scenarios) to the new key; the old key is refused by the hub,
and a machine that was offline switches as soon as it reconnects."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import stat
import time
import uuid

import pytest

from clients.master.keys import load_master_key
from clients.master.sdk import Master
from protocol import Identity, Order, OrderKind, RemoteError
from tests.e2e.support import HubProcess, run_crc, wait_results


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


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_two_rotations_while_a_machine_is_offline_never_roll_it_back(
    hub: HubProcess, master: Master, deploy
) -> None:
    # A->B->C with db offline: its queue holds "obey B" (signed by A) and then "obey C" (signed by B). Both are
    # applied at delivery; when "obey B" then takes its turn it must not move db back to B.
    shop = await deploy("shop", "web", "db")
    await master.close()
    shop.daemon("db").kill()
    keys_seen = [load_master_key(hub.key_path)]
    for _ in range(2):
        rotated = await asyncio.to_thread(run_crc, hub, "rotate-key", "--timeout", "8", timeout=60)
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        keys_seen.append(load_master_key(hub.key_path))
    _, middle, newest = keys_seen

    db = shop.start("db")
    async with await Master.connect(hub.url, newest) as current:
        [caught_up] = await current.run("shop", "db", "echo obeys the newest key", wait_timeout=30)
        assert caught_up.ok and caught_up.verified, caught_up
        trusts = [r for r in await current.results("shop") if r.kind == "trust_master" and r.machine == "db"]
        assert len(trusts) == 2 and all(r.ok and r.verified for r in trusts), trusts
        # after both took their turn, db still obeys only the newest key
        [again] = await current.run("shop", "db", "echo still", wait_timeout=30)
        assert again.ok and again.stdout == b"still\n"
    stored = json.loads((db.state_dir / "master-key.json").read_text())
    assert stored["master_public_key"] == newest.public.to_text() and stored["epoch"] > 0
    assert middle.public.to_text() != stored["master_public_key"]

    # The hub then puts both signed rotations back into db's queue (an edit of its store): replayed, they
    # are answered with their first results and move nothing.
    db.kill()
    with sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None) as store:
        for trust in trusts:
            store.execute("UPDATE orders SET state = 'queued', result = NULL WHERE id = ?", (trust.order_id,))
    db.start()
    async with await Master.connect(hub.url, newest) as current:
        replayed = await wait_results(current, "shop", [t.order_id for t in trusts], timeout=30)
        assert sorted((r.status, r.started) for r in replayed) == sorted((t.status, t.started) for t in trusts)
        [obeys] = await current.run("shop", "db", "echo newest still", wait_timeout=30)
        assert obeys.ok and obeys.verified and obeys.stdout == b"newest still\n"
    assert json.loads((db.state_dir / "master-key.json").read_text()) == stored


async def test_a_rotation_without_an_epoch_is_refused_and_changes_nothing(master: Master, deploy) -> None:
    # What a master from before epochs would send: it could undo a later rotation, so the daemon refuses it.
    await deploy("epochs", "box")
    box = (await master.scenario("epochs")).machine("box")
    stranger = Identity.generate(secrets.token_bytes)
    body = {"master_public_key": stranger.public.to_text()}
    order = Order(uuid.uuid4().hex, "epochs", box.id, OrderKind.TRUST_MASTER, body, time.time() + 60,
                  master.identity.id).signed(master.identity)  # fmt: skip
    await master.submit(order)
    (result,) = await wait_results(master, "epochs", [order.id])
    assert (result.status, result.verified) == ("rejected", True)
    assert "epoch" in result.error
    [still] = await master.run("epochs", "box", "echo same master", wait_timeout=15)
    assert still.ok and still.stdout == b"same master\n"


async def test_stored_jobs_follow_the_master_to_its_new_key(hub: HubProcess, master: Master, deploy) -> None:
    await deploy("jobs", "box")
    added = await master.put_job("report", "echo report from $CRC_MACHINE")
    await master.close()

    rotated = await asyncio.to_thread(run_crc, hub, "rotate-key", "--timeout", "8", timeout=60)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr

    async with await Master.connect(hub.url, hub.key_path) as renewed:
        job = await renewed.job("report")  # signed by the new key, or this raises
        assert job["script"] == "echo report from $CRC_MACHINE" and job["version"] > added["version"]
        [played] = await renewed.run_job("jobs", "box", "report", wait_timeout=30)
        assert played.ok and played.stdout == b"report from box\n", played
