"""A hub whose store was tampered with cannot redirect orders, swap scenarios, forge results or plant addresses.

Every attack here edits the running hub's SQLite file directly, as someone holding the hub's data dir would; none
uses the master's private key. The master's own truth is its certificates (``protocol.certificates``).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest

from clients.master.sdk import Master, MasterError
from protocol import Identity, OrderState, SignedResult
from protocol.certificates import MachineCertificate
from tests.e2e.support import Deployment, HubProcess

pytestmark = pytest.mark.asyncio


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


async def _fresh(master: Master, name: str) -> None:
    master._scenarios.pop(name, None)  # forget the cached view: the next answer comes from the tampered store


async def test_swapped_machine_names_in_the_store_do_not_redirect_an_order(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    ids = {m.name: m.id for m in (await master.scenario("shop")).machines}
    with _db(hub) as db:
        db.execute("UPDATE machines SET name = 'tmp' WHERE id = ?", (ids["db"],))
        db.execute("UPDATE machines SET name = 'db' WHERE id = ?", (ids["web"],))
        db.execute("UPDATE machines SET name = 'web' WHERE id = ?", (ids["db"],))
    await _fresh(master, "shop")

    [result] = await master.run("shop", "web", "echo ran", wait_timeout=20)

    assert result.machine == "web" and result.ok and result.verified
    with _db(hub) as db:
        [(machine_id,)] = db.execute("SELECT machine_id FROM orders WHERE id = ?", (result.order_id,)).fetchall()
    assert machine_id == ids["web"]  # signed for web's key, whatever name the hub gave it


async def test_swapped_certificates_make_the_target_unknown_instead_of_the_wrong_machine(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    ids = {m.name: m.id for m in (await master.scenario("shop")).machines}
    with _db(hub) as db:
        [(db_cert,)] = db.execute("SELECT certificate FROM machines WHERE id = ?", (ids["db"],)).fetchall()
        db.execute("UPDATE machines SET name = 'tmp' WHERE id = ?", (ids["db"],))
        db.execute("UPDATE machines SET certificate = ?, name = 'db' WHERE id = ?", (db_cert, ids["web"]))
        db.execute("UPDATE machines SET name = 'web' WHERE id = ?", (ids["db"],))
        before = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    await _fresh(master, "shop")

    with pytest.raises(MasterError):
        await master.run("shop", "web", "echo ran", wait_timeout=5)
    with _db(hub) as db:
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == before  # nothing was sent


async def test_a_hub_answering_with_another_scenario_is_refused(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "web", start=False)
    await deploy("prod", "web", start=False)
    with _db(hub) as db:
        db.execute("UPDATE scenarios SET name = 'old-shop' WHERE name = 'shop'")
        db.execute("UPDATE scenarios SET name = 'shop' WHERE name = 'prod'")
        before = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    await _fresh(master, "shop")

    with pytest.raises(MasterError, match=r"nothing was sent.*scenario 'prod', not 'shop'"):
        await master.run("shop", "all", "echo ran", wait=False)
    with _db(hub) as db:
        assert db.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == before


async def test_a_machine_without_this_masters_certificate_is_never_targeted(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    """The hub plants a machine of its own (its key, a certificate signed by a key that is not the master's)."""
    await deploy("shop", "web", start=False)
    impostor = Identity.generate(secrets.token_bytes)
    other_master = Identity.generate(secrets.token_bytes)
    cert = MachineCertificate("shop", "db", impostor.id, impostor.public.to_text(), "linux", "db").endorsed(
        other_master
    )
    with _db(hub) as db:
        [(scenario_id,)] = db.execute("SELECT id FROM scenarios WHERE name = 'shop'").fetchall()
        db.execute(
            "INSERT INTO machines (id, scenario_id, name, os, role, public_key, status, certificate) "
            "VALUES (?, ?, 'db', 'linux', 'db', ?, 'ready', ?)",
            (impostor.id, scenario_id, impostor.public.to_text(), _pack(cert.to_wire())),
        )
    await _fresh(master, "shop")

    shown = {m.name: m for m in (await master.scenario("shop")).machines}
    assert shown["web"].trusted and not shown["db"].trusted
    with pytest.raises(MasterError, match=r"nothing was sent: machine 'db'.*not this master's"):
        await master.run("shop", "db", "echo ran", wait=False)
    with pytest.raises(MasterError, match="nothing was sent"):
        await master.run("shop", "all", "echo ran", wait=False)


async def test_a_result_forged_with_a_key_the_hub_planted_is_not_verified(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "web")
    [real] = await master.run("shop", "web", "echo real", wait_timeout=20)
    assert real.verified
    web = (await master.scenario("shop")).machine("web")
    forger = Identity.generate(secrets.token_bytes)
    forged = SignedResult(real.order_id, "shop", web.id, OrderState.SUCCEEDED, 0, time.time(), time.time(),
                          stdout=b"forged\n").signed(forger)  # fmt: skip
    # The hub also claims the machine rotated to the forger's key, with a "proof" the forger signed itself.
    claim = SignedResult("x", "shop", web.id, OrderState.SUCCEEDED, 0, 0.0, time.time(),
                         extra={"public_key": forger.public.to_text()}).signed(forger)  # fmt: skip
    with _db(hub) as db:
        db.execute("UPDATE orders SET result = ? WHERE id = ?", (_pack(forged.to_wire()), real.order_id))
        db.execute(
            "UPDATE machines SET public_key = ?, former_keys = ?, key_proofs = ? WHERE id = ?",
            (forger.public.to_text(), _pack([web.public_key]), _pack([claim.to_wire()]), web.id),
        )
    await _fresh(master, "shop")

    [shown] = await master.results("shop", [real.order_id])
    assert shown.stdout == b"forged\n" and not shown.verified
    assert (await master.scenario("shop")).machine("web").public_key == web.public_key


async def test_addresses_the_machine_did_not_sign_never_reach_a_hosts_file(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    shop = await deploy("shop", "db", "web")
    db_id = (await master.scenario("shop")).machine("db").id
    with _db(hub) as db:
        [(packed,)] = db.execute("SELECT facts FROM machines WHERE id = ?", (db_id,)).fetchall()
        facts = msgpack.unpackb(packed, raw=False)
        facts["ips"] = ["203.0.113.66"]
        db.execute(
            "UPDATE machines SET facts = ?, ips = ? WHERE id = ?", (_pack(facts), _pack(["203.0.113.66"]), db_id)
        )
    await _fresh(master, "shop")

    assert (await master.scenario("shop")).machine("db").ips == []
    results = await master.distribute_hosts("shop", "web", wait_timeout=20)
    assert all(r.ok for r in results)
    assert "203.0.113.66" not in Path(shop.daemon("web").hosts_file).read_text()


async def test_a_second_computer_with_the_same_master_key_trusts_the_same_machines(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "web")
    async with await Master.connect(hub.url, hub.key_path, timeout=10) as elsewhere:
        [result] = await elsewhere.run("shop", "web", "echo from elsewhere", wait_timeout=20)
    assert result.ok and result.verified


async def test_a_scenario_made_without_certificates_is_refused_until_adopted(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    with _db(hub) as db:
        db.execute("UPDATE machines SET certificate = NULL")  # as an older SDK left them
    await _fresh(master, "shop")
    with pytest.raises(MasterError, match="nothing was sent"):
        await master.run("shop", "all", "echo ran", wait=False)

    assert sorted(await master.adopt_scenario("shop")) == ["db", "web"]
    results = await master.run("shop", "all", "echo ran", wait_timeout=20)
    assert [r.ok and r.verified for r in results] == [True, True]
    assert await master.adopt_scenario("shop") == []
