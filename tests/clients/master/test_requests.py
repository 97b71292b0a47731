"""``Master.request`` on top of ``HubLink.request``: what it does when the connection drops mid-request.

Requests safe to repeat are sent again on the next connection, within their timeout; the others fail with
``LinkClosed``; an order submit whose first copy got through is not reported as a duplicate. Real sockets on
127.0.0.1 against a scripted hub end (``tests/clients/scripted_hub.py``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from clients.link import LinkClosed
from clients.master.sdk import Master
from protocol import ErrorCode, Identity, RemoteError
from protocol.messages import Error, OrderSubmit, Response, ScenarioList, TokenRevoke
from tests.clients.scripted_hub import TIMEOUT, ScriptedHub


@dataclass
class Connected:
    master: Master
    hub: ScriptedHub


@pytest.fixture
async def connected() -> AsyncIterator[Connected]:
    identity = Identity.generate(secrets.token_bytes)
    async with ScriptedHub(identity).running() as hub:
        master = await Master.connect(hub.url, identity, timeout=TIMEOUT)
        try:
            yield Connected(master, hub)
        finally:
            await master.close()


async def test_a_read_cut_off_by_a_dropped_connection_is_sent_again_once_reconnected(connected: Connected) -> None:
    first = await connected.hub.accepted()
    asked = asyncio.create_task(connected.master.request(ScenarioList(), timeout=2 * TIMEOUT))
    lost = await first.next_request()
    await first.drop()
    second = await connected.hub.accepted()
    again = await second.next_request()
    assert again.body == lost.body and again.id != lost.id
    await second.answer(again, Response({"scenarios": ["sc"]}))
    assert await asyncio.wait_for(asked, TIMEOUT) == {"scenarios": ["sc"]}


async def test_a_request_not_safe_to_repeat_fails_with_link_closed_when_the_connection_drops(
    connected: Connected,
) -> None:
    first = await connected.hub.accepted()
    asked = asyncio.create_task(connected.master.request(TokenRevoke("t1"), timeout=2 * TIMEOUT))
    await first.next_request()
    await first.drop()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(asked, TIMEOUT)
    second = await connected.hub.accepted()  # the master reconnects all the same, and is usable
    listed = asyncio.create_task(connected.master.request(ScenarioList(), timeout=TIMEOUT))
    request = await second.next_request()
    assert isinstance(request.body, ScenarioList)  # the revoke was not sent again
    await second.answer(request, Response({"scenarios": []}))
    assert await asyncio.wait_for(listed, TIMEOUT) == {"scenarios": []}


async def test_an_order_submit_sent_again_and_refused_as_a_duplicate_counts_as_queued(connected: Connected) -> None:
    first = await connected.hub.accepted()
    submit = OrderSubmit({"id": "order-1"})
    asked = asyncio.create_task(connected.master.request(submit, timeout=2 * TIMEOUT))
    await first.next_request()
    await first.drop()  # the hub queued it, but its answer was lost with the connection
    second = await connected.hub.accepted()
    again = await second.next_request()
    await second.answer(again, Error(ErrorCode.ALREADY_EXISTS.value, "order order-1 exists"))
    assert await asyncio.wait_for(asked, TIMEOUT) == {"order_id": "order-1", "state": "queued"}


async def test_a_first_order_submit_refused_as_a_duplicate_is_an_error(connected: Connected) -> None:
    first = await connected.hub.accepted()
    asked = asyncio.create_task(connected.master.request(OrderSubmit({"id": "order-1"}), timeout=TIMEOUT))
    request = await first.next_request()
    await first.answer(request, Error(ErrorCode.ALREADY_EXISTS.value, "order order-1 exists"))
    with pytest.raises(RemoteError, match="already_exists: order order-1 exists"):
        await asyncio.wait_for(asked, TIMEOUT)
