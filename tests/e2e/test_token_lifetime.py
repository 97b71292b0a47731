"""Operator tokens stop signing within a bounded time of their revocation, whatever the hub kept.

A hub sees an operator token's delegate key whenever the token is used (it opens the sealed key to sign). A hostile
hub keeps it, and after the master revokes the token it un-revokes it in its own store. What bounds the damage is
the delegation: daemons obey one only for ``DELEGATION_LIFETIME`` after its master signed it, and the master renews
only tokens it did not revoke (it remembers its revocations on its own computer, not on the hub). Every attack here
edits the running hub's SQLite file, as someone holding the hub's data dir would; none uses the master's key except
to make what the master itself would have signed in the past.
"""

from __future__ import annotations

import secrets
import sqlite3
import time
import uuid
from pathlib import Path

import aiohttp
import msgpack
import pytest

from clients.master.sdk import Master
from protocol import Identity, Order, OrderKind
from protocol.delegation import DELEGATION_LIFETIME, Delegation
from tests.e2e.support import HubProcess, run_crc, wait_results
from tests.e2e.test_rest_api import wait_for_result
from tests.e2e.test_rest_tasks import Api

pytestmark = pytest.mark.asyncio


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


def _stored_delegation(hub: HubProcess, token_id: str) -> Delegation:
    with _db(hub) as db:
        (raw,) = db.execute("SELECT delegation FROM tokens WHERE id = ?", (token_id,)).fetchone()
    return Delegation.from_wire(msgpack.unpackb(raw, raw=False))


async def test_a_revoked_token_is_never_renewed_even_when_the_hub_lists_it_as_live(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("ops", "web")
    revoked_text, revoked = await master.create_token("operator", scenario="ops", label="leaked")
    _, kept = await master.create_token("operator", scenario="ops", label="kept")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
        api = Api(http, hub, revoked_text)
        status, queued = await api.call("POST", "/v1/scenarios/ops/commands", {"target": "web", "command": "true"})
        assert status == 202, queued  # the hub has now opened the delegate key once: it could have kept it
        await wait_for_result(api, "ops", queued["orders"][0]["order_id"])
    with _db(hub) as db:
        (sealed,) = db.execute("SELECT sealed_key FROM tokens WHERE id = ?", (revoked["id"],)).fetchone()
    await master.revoke_token(revoked["id"])
    # The hostile hub undoes the revocation in its store and lists the token as live.
    with _db(hub) as db:
        db.execute("UPDATE tokens SET revoked = 0, sealed_key = ? WHERE id = ?", (sealed, revoked["id"]))
    before = _stored_delegation(hub, revoked["id"])
    kept_before = _stored_delegation(hub, kept["id"])
    assert {t["id"]: t["revoked"] for t in await master.tokens()}[revoked["id"]] is False

    renewal = await master.renew_tokens()

    assert renewal.renewed == [kept["id"]]
    assert _stored_delegation(hub, revoked["id"]) == before  # not renewed: it ends within its lifetime
    assert before.expires <= before.issued + DELEGATION_LIFETIME
    renewed = _stored_delegation(hub, kept["id"])
    assert (renewed.key, renewed.scenario, renewed.token) == (kept_before.key, "ops", kept["id"])
    assert renewed.issued >= kept_before.issued and renewed.expires >= kept_before.expires
    # the memory of the revocation is the master's own file, beside its key
    assert revoked["id"] in (hub.key_path.parent / (hub.key_path.name + ".revoked-tokens")).read_text()


async def test_a_daemon_refuses_an_order_under_a_delegation_past_its_lifetime(
    master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("aged", "box")
    machine = (await master.scenario("aged")).machine("box")
    marker = tmp_path / "stale-delegation-ran"
    # A delegation the master signed a lifetime and an hour ago, for a token that has not ended (never ends): what
    # a hub that kept a revoked token's delegate key would still hold once the master stopped renewing it.
    delegate = Identity.generate(secrets.token_bytes)
    then = time.time() - DELEGATION_LIFETIME - 3600
    stale = Delegation.issue(master.identity, "0123456789abcdef", delegate.public.to_text(), "aged", 0.0, then)
    body = {"command": f"touch {marker}", "cwd": None, "env": {}, "timeout": None}
    order = Order(uuid.uuid4().hex, "aged", machine.id, OrderKind.EXEC, body, time.time() + 60, "")
    forged = order.signed_by_delegate(delegate, stale)

    assert await master.submit(forged) == forged.id
    (result,) = await wait_results(master, "aged", [forged.id])
    assert (result.status, result.verified) == ("rejected", True)
    assert "expired" in result.error and "delegation" in result.error
    assert not marker.exists()


async def test_crc_token_renew_renews_live_operator_tokens_and_says_so(hub: HubProcess, master: Master) -> None:
    _, operator = await master.create_token("operator")
    await master.create_token("viewer")  # viewers have nothing to renew
    before = _stored_delegation(hub, operator["id"])

    done = run_crc(hub, "token", "renew")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [f"renewed token {operator['id']} for 12 h"]
    assert _stored_delegation(hub, operator["id"]).issued >= before.issued
