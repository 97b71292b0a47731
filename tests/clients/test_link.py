"""``HubLink.request``: answers matched to their requests by id, over real WebSocket connections on 127.0.0.1.

Against a scripted hub end (``tests/clients/scripted_hub.py``: the real handshake, then the test decides what
is answered, when and in what order), and against the real hub for its own answers and error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from clients.link import HubLink, LinkClosed
from protocol import Envelope, ErrorCode, Identity, RemoteError, Role
from protocol.messages import Error, KvGet, Response, ScenarioList, ScenarioShow
from server.settings import HubSettings
from tests.clients.scripted_hub import MAX_FRAMES, TIMEOUT, HubEnd, ScriptedHub
from tests.live_hub import live_hub


@dataclass
class Linked:
    """A client's link to the scripted hub, read by a task as the SDK's and daemon's read loops do."""

    link: HubLink
    end: HubEnd
    returned: asyncio.Queue[Envelope]  # what recv() gave the reader (answers nobody waited for, among others)


async def _read(link: HubLink, returned: asyncio.Queue[Envelope]) -> None:
    with contextlib.suppress(LinkClosed):
        for _ in range(MAX_FRAMES):  # the link ends (or the test cancels this) long before
            returned.put_nowait(await link.recv())


@contextlib.asynccontextmanager
async def _linked(hub: ScriptedHub, identity: Identity) -> AsyncIterator[Linked]:
    link = await HubLink.connect(hub.url, identity, Role.MASTER, open_timeout=TIMEOUT)
    returned: asyncio.Queue[Envelope] = asyncio.Queue()
    reader = asyncio.create_task(_read(link, returned))
    try:
        yield Linked(link, await hub.accepted(), returned)
    finally:
        reader.cancel()
        await link.close()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


@pytest.fixture
async def linked() -> AsyncIterator[Linked]:
    identity = Identity.generate(secrets.token_bytes)
    async with ScriptedHub(identity).running() as hub, _linked(hub, identity) as linked:
        yield linked


async def test_a_request_gets_the_data_of_the_response_that_replies_to_it(linked: Linked) -> None:
    asked = asyncio.create_task(linked.link.request(ScenarioList(), timeout=TIMEOUT))
    request = await linked.end.next_request()
    assert isinstance(request.body, ScenarioList)
    await linked.end.send(Response({"scenarios": ["not this one"]}), reply_to="someone-else")
    await linked.end.answer(request, Response({"scenarios": ["sc"]}))
    assert await asyncio.wait_for(asked, TIMEOUT) == {"scenarios": ["sc"]}
    assert linked.link.waiting == 0


async def test_concurrent_requests_answered_out_of_order_each_get_their_own_answer(linked: Linked) -> None:
    keys = ["a", "b", "c", "d"]
    asked = [asyncio.create_task(linked.link.request(KvGet("sc", key), timeout=TIMEOUT)) for key in keys]
    requests = await linked.end.requests(len(keys))
    assert linked.link.waiting == len(keys)
    for request in reversed(requests):
        assert isinstance(request.body, KvGet)
        await linked.end.answer(request, Response({"key": request.body.key}))
    answers = await asyncio.wait_for(asyncio.gather(*asked), TIMEOUT)
    assert [answer["key"] for answer in answers] == keys
    assert linked.link.waiting == 0


async def test_an_error_answer_raises_remote_error_with_the_hubs_code_message_and_details(linked: Linked) -> None:
    asked = asyncio.create_task(linked.link.request(ScenarioShow("nope"), timeout=TIMEOUT))
    request = await linked.end.next_request()
    await linked.end.answer(request, Error(ErrorCode.NOT_FOUND.value, "no scenario 'nope'", {"scenario": "nope"}))
    with pytest.raises(RemoteError) as raised:
        await asyncio.wait_for(asked, TIMEOUT)
    assert (raised.value.code, raised.value.message) == ("not_found", "no scenario 'nope'")
    assert raised.value.details == {"scenario": "nope"}
    assert str(raised.value) == "not_found: no scenario 'nope'"
    assert linked.link.waiting == 0


async def test_a_timed_out_request_leaves_nothing_pending_and_its_late_answer_goes_to_the_reader(
    linked: Linked,
) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await linked.link.request(ScenarioList(), timeout=0.2)
    assert time.monotonic() - started < TIMEOUT
    assert linked.link.waiting == 0
    request = await linked.end.next_request()
    await linked.end.answer(request, Response({"late": True}))
    late = await asyncio.wait_for(linked.returned.get(), TIMEOUT)
    assert late.reply_to == request.id and isinstance(late.body, Response)


async def test_a_cancelled_request_leaves_nothing_pending(linked: Linked) -> None:
    asked = asyncio.create_task(linked.link.request(ScenarioList(), timeout=TIMEOUT))
    await linked.end.next_request()
    assert linked.link.waiting == 1
    asked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asked
    assert linked.link.waiting == 0


async def test_a_dropped_connection_fails_every_pending_request_at_once_with_link_closed(linked: Linked) -> None:
    asked = [asyncio.create_task(linked.link.request(KvGet("sc", key), timeout=60)) for key in "xy"]
    await linked.end.requests(2)
    started = time.monotonic()
    await linked.end.drop()
    results = await asyncio.wait_for(asyncio.gather(*asked, return_exceptions=True), TIMEOUT)
    assert all(isinstance(result, LinkClosed) for result in results), results
    assert time.monotonic() - started < TIMEOUT  # not left to their 60 s timeouts
    assert linked.link.waiting == 0
    with pytest.raises(LinkClosed):
        await linked.link.request(ScenarioList(), timeout=TIMEOUT)
    assert linked.link.waiting == 0


async def test_closing_the_link_fails_pending_requests_with_the_reason_given(linked: Linked) -> None:
    asked = asyncio.create_task(linked.link.request(ScenarioList(), timeout=60))
    await linked.end.next_request()
    await linked.link.close("master closed")
    with pytest.raises(LinkClosed) as raised:
        await asyncio.wait_for(asked, TIMEOUT)
    assert raised.value.reason == "master closed"
    assert linked.link.waiting == 0


@pytest.fixture
async def real_hub(tmp_path: Path) -> AsyncIterator[tuple[str, Identity]]:
    async with live_hub(HubSettings(data_dir=tmp_path / "hub")) as hub:
        yield hub


async def test_the_real_hubs_answers_and_errors_reach_their_requests(real_hub: tuple[str, Identity]) -> None:
    url, master = real_hub
    link = await HubLink.connect(url, master, Role.MASTER, open_timeout=TIMEOUT)
    returned: asyncio.Queue[Envelope] = asyncio.Queue()
    reader = asyncio.create_task(_read(link, returned))
    try:
        listed = asyncio.create_task(link.request(ScenarioList(), timeout=TIMEOUT))
        missing = asyncio.create_task(link.request(ScenarioShow("nope"), timeout=TIMEOUT))
        assert await listed == {"scenarios": []}
        with pytest.raises(RemoteError) as raised:
            await missing
        assert raised.value.code == ErrorCode.NOT_FOUND.value
        assert link.waiting == 0
    finally:
        reader.cancel()
        await link.close()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
