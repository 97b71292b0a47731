"""Scenario messages: masters and machines send named messages to a machine, a role or everyone; receivers get
them in order, and a machine that was offline gets them when it returns."""

from __future__ import annotations

import pytest

from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import wait_results


async def test_messages_arrive_in_order_and_wait_for_offline_machines(master: Master, deploy) -> None:
    shop = await deploy("msg", "db", "web", "late", start=False)
    shop.start("db")
    shop.start("web")
    await master.send_message("msg", "all", "deploy", "v1")  # "late" is offline: it waits in its mailbox
    await master.send_message("msg", "web,late", "deploy", "v2")
    await master.send_message("msg", "db", "config", "port=5432")

    [web] = await master.run("msg", "web", "crc-daemon recv deploy; crc-daemon recv deploy", wait_timeout=30)
    assert web.ok and web.stdout == b"v1\nv2\n", web
    [db] = await master.run("msg", "db", "crc-daemon recv --json; crc-daemon recv config", wait_timeout=30)
    assert db.ok, db
    first, second = db.stdout.decode().splitlines()
    assert '"topic": "deploy"' in first and '"data": "v1"' in first and second == "port=5432"

    # A machine sends to a role; the receiver was waiting already.
    [waiting] = await master.run("msg", "db", "crc-daemon recv hello --timeout 20", wait=False)
    [sent] = await master.run("msg", "web", "crc-daemon send db hello 'from web'")
    assert sent.ok and b"sent to db" in sent.stderr
    [got] = await wait_results(master, "msg", [waiting.order_id], timeout=20)
    assert got.stdout == b"from web\n"

    shop.start("late")
    [late] = await master.run("msg", "late", "crc-daemon recv; crc-daemon recv; crc-daemon recv --timeout 0.5",
                              wait_timeout=30)  # fmt: skip
    assert late.stdout == b"v1\nv2\n" and late.exit_code == 124  # in order, then nothing more

    with pytest.raises(RemoteError, match="not_found"):
        await master.send_message("msg", "nobody", "x", "y")
    with pytest.raises(RemoteError, match="invalid_request"):
        await master.send_message("msg", "role:none", "x", "y")
