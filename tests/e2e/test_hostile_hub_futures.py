"""A hub whose store was tampered with cannot fake a future or a scenario message that a script or the SDK acts on.

Every attack edits the running hub's SQLite file directly, as someone holding the hub's data dir would; none uses
the master's private key or a machine's. Values are their writer's signed statements (``protocol.signed_values``),
checked by the reader against its own master key.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest

from clients.master.sdk import Master, MasterError
from protocol import Identity, OrderState, SignedResult
from protocol.signed_values import SignedValue, ValueKind, WriterKind
from tests.e2e.support import Deployment, HubProcess, wait_results

pytestmark = pytest.mark.asyncio

REFUSED = "the hub's value for db/ready is not signed by a machine of this scenario or its master"


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def _scenario_id(hub: HubProcess, name: str) -> str:
    with _db(hub) as db:
        [(scenario_id,)] = db.execute("SELECT id FROM scenarios WHERE name = ?", (name,)).fetchall()
    return str(scenario_id)


def _plant_kv(hub: HubProcess, scenario: str, key: str, value: bytes) -> None:
    with _db(hub) as db:
        db.execute(
            "INSERT INTO kv (scenario_id, key, value, expires) VALUES (?, ?, ?, NULL) "
            "ON CONFLICT (scenario_id, key) DO UPDATE SET value = excluded.value",
            (_scenario_id(hub, scenario), key, value),
        )


def _stored_kv(hub: HubProcess, scenario: str, key: str) -> bytes:
    with _db(hub) as db:
        [(value,)] = db.execute(
            "SELECT value FROM kv WHERE scenario_id = ? AND key = ?", (_scenario_id(hub, scenario), key)
        ).fetchall()
    return bytes(value)


async def _script_refuses_db_ready(master: Master, scenario: str = "shop") -> None:
    """web's scripts, told to act once db/ready is set, refuse the hub's value and act on nothing."""
    [got, waited] = [
        (await master.run(scenario, "web", command, wait_timeout=30))[0]
        for command in (
            "crc-daemon kv get db/ready && echo acted",
            "crc-daemon kv wait db/ready --timeout 20 && echo acted",
        )
    ]
    for result in (got, waited):
        assert result.exit_code == 1 and b"acted" not in result.stdout, result
        [line] = result.stderr.decode().splitlines()
        assert REFUSED in line, line
    with pytest.raises(MasterError, match=REFUSED):
        await master.kv_get(scenario, "db/ready")
    with pytest.raises(MasterError, match=REFUSED):
        await master.kv_wait(scenario, "db/ready", timeout=5)


async def test_a_planted_kv_value_never_reaches_a_waiting_script(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    [waiting] = await master.run("shop", "web", "crc-daemon kv wait db/ready --timeout 30 && echo acted", wait=False)
    _plant_kv(hub, "shop", "db/ready", b"yes")  # what an older hub stored: no statement at all

    [waited] = await wait_results(master, "shop", [waiting.order_id], timeout=45)
    assert waited.exit_code == 1 and b"acted" not in waited.stdout, waited
    assert REFUSED in waited.stderr.decode() and "no writer's signature" in waited.stderr.decode()
    await _script_refuses_db_ready(master)


async def test_a_value_forged_with_the_hubs_own_key_or_changed_after_signing_is_refused(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    [setter] = await master.run("shop", "db", "crc-daemon kv set db/ready no")
    assert setter.ok, setter
    statement = _unpack(_stored_kv(hub, "shop", "db/ready"))
    _plant_kv(hub, "shop", "db/ready", _pack({**statement, "value": b"yes"}))
    await _script_refuses_db_ready(master)

    # The hub signs a statement with a key of its own under db's id, and claims db rotated to that key.
    db_id = (await master.scenario("shop")).machine("db").id
    forger = Identity.generate(secrets.token_bytes)
    forged = SignedValue(ValueKind.KV, "shop", "db/ready", b"yes", db_id, WriterKind.MACHINE, time.time(),
                         "forged").signed(forger)  # fmt: skip
    claim = SignedResult("x", "shop", db_id, OrderState.SUCCEEDED, 0, 0.0, time.time(),
                         extra={"public_key": forger.public.to_text()}).signed(forger)  # fmt: skip
    with _db(hub) as db:
        db.execute("UPDATE machines SET key_proofs = ? WHERE id = ?", (_pack([claim.to_wire()]), db_id))
    _plant_kv(hub, "shop", "db/ready", _pack(forged.to_wire()))
    await _script_refuses_db_ready(master)


@pytest.mark.slow  # over 15 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_a_signed_value_copied_from_another_key_or_scenario_is_refused(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    await deploy("prod", "db")
    [shop_db] = await master.run("shop", "db", "crc-daemon kv set db/ip 10.0.0.5")
    [prod_db] = await master.run("prod", "db", "crc-daemon kv set db/ready yes")
    [shop_web] = await master.run("shop", "web", "crc-daemon kv set web/ready yes")
    assert shop_db.ok and prod_db.ok and shop_web.ok
    prod_machine_signed = _stored_kv(hub, "prod", "db/ready")
    await master.kv_set("prod", "db/ready", "yes")  # the master's own signature, for its other scenario
    prod_master_signed = _stored_kv(hub, "prod", "db/ready")

    for copied, why in (
        (_stored_kv(hub, "shop", "db/ip"), "signed for 'db/ip'"),  # db's, for another key
        (_stored_kv(hub, "shop", "web/ready"), "signed for 'web/ready'"),  # another machine's
        (prod_machine_signed, "signed for scenario 'prod'"),  # the same name's machine, another scenario
        (prod_master_signed, "signed for scenario 'prod'"),
    ):
        _plant_kv(hub, "shop", "db/ready", copied)
        await _script_refuses_db_ready(master)
        [got] = await master.run("shop", "web", "crc-daemon kv get db/ready")
        assert why in got.stderr.decode(), got

    # A machine's value rewritten to name a key outside its own name, and re-signed by nobody, is refused too.
    web_value = _unpack(_stored_kv(hub, "shop", "web/ready"))
    _plant_kv(hub, "shop", "db/ready", _pack({**web_value, "name": "db/ready"}))
    await _script_refuses_db_ready(master)
    # The genuine values still read as before.
    assert await master.kv_get("shop", "db/ip") == b"10.0.0.5"
    [real] = await master.run("shop", "web", "crc-daemon kv get db/ip")
    assert real.ok and real.stdout == b"10.0.0.5\n", real


async def test_planted_copied_and_replayed_messages_are_refused_and_read_past(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    await deploy("prod", "web", start=False)  # offline: its message waits in its mailbox, for the hub to copy
    ids = {m.name: m.id for m in (await master.scenario("shop")).machines}
    prod_web = (await master.scenario("prod")).machine("web").id
    await master.send_message("shop", "web", "deploy", "v1")
    await master.send_message("shop", "db", "deploy", "for db only")
    await master.send_message("prod", "web", "deploy", "for prod")
    shop_id = _scenario_id(hub, "shop")
    with _db(hub) as db:
        rows = db.execute("SELECT machine_id, data FROM messages ORDER BY seq").fetchall()
        by_machine = {machine_id: bytes(data) for machine_id, data in rows}
        for data in (
            _pack({"value": b"rm -rf /"}),  # planted, unsigned
            by_machine[ids["db"]],  # the master's message to db, moved to web's mailbox
            by_machine[prod_web],  # the master's message in its other scenario
            by_machine[ids["web"]],  # web's own message, delivered again
        ):
            db.execute(
                "INSERT INTO messages (scenario_id, machine_id, topic, sender, data, ts) VALUES (?, ?, 'deploy', '', "
                "?, ?)",
                (shop_id, ids["web"], data, time.time()),
            )

    receive = "; ".join(f"crc-daemon recv deploy --timeout 10 && echo acted-{n}" for n in range(5))
    [web] = await master.run("shop", "web", receive, wait_timeout=90)
    assert web.stdout == b"v1\nacted-0\n", web
    refusals = web.stderr.decode().splitlines()
    assert len(refusals) == 4, refusals
    assert "no writer's signature" in refusals[0]
    assert "sent to 'db'" in refusals[1]
    assert "signed for scenario 'prod'" in refusals[2]
    assert "replay" in refusals[3]
    assert all("the hub's value for message 'deploy'" in line for line in refusals)

    await master.send_message("shop", "web", "deploy", "v2")  # refused messages were read past: v2 comes next
    [after] = await master.run("shop", "web", "crc-daemon recv deploy --timeout 10", wait_timeout=30)
    assert after.ok and after.stdout == b"v2\n", after


async def test_a_machine_message_names_its_certified_sender(
    master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await deploy("shop", "db", "web")
    [sent] = await master.run("shop", "web", "crc-daemon send db hello 'from web'")
    assert sent.ok, sent
    [got] = await master.run("shop", "db", "crc-daemon recv hello --json --timeout 10", wait_timeout=30)
    assert got.ok and b'"sender": "web"' in got.stdout and b'"data": "from web"' in got.stdout, got
