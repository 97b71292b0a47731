"""Admission limits for unauthenticated connections: the pure guard, and a real hub applying it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from clients.link import HubLink, LinkClosed
from protocol import Identity, RemoteError, Role
from protocol.messages import Error, Response, ScenarioList
from server.app import create_app
from server.guard import AdmissionGuard, TokenBucket
from server.settings import HubSettings
from tests.live_hub import live_hub


def test_a_source_is_refused_after_too_many_failures_within_the_window_and_admitted_after_it() -> None:
    guard = AdmissionGuard(failure_limit=3, window=60.0)
    for t in (0.0, 1.0, 2.0):
        assert guard.refusal("10.0.0.9", t) is None
        guard.failed("10.0.0.9", t)
    assert "too many failed handshakes from 10.0.0.9" in (guard.refusal("10.0.0.9", 3.0) or "")
    assert guard.refusal("10.0.0.8", 3.0) is None  # other sources are not affected
    assert guard.refusal("10.0.0.9", 62.5) is None  # the oldest failures left the window


def test_too_many_connections_in_their_handshake_are_refused() -> None:
    guard = AdmissionGuard(max_pending=2)
    guard.pending = 2
    assert "too many connections are authenticating" in (guard.refusal("a", 0.0) or "")


def test_the_failure_history_of_one_source_stays_bounded() -> None:
    guard = AdmissionGuard(failure_limit=5)
    for t in range(10_000):
        guard.failed("flood", float(t) / 1000)
    assert guard._recent("flood", 10.0) == 5


@pytest.fixture
async def hub_url(tmp_path: Path) -> AsyncIterator[str]:
    settings = HubSettings(data_dir=tmp_path / "hub", handshake_failure_limit=3)
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_an_address_that_keeps_failing_handshakes_gets_http_429(hub_url: str) -> None:
    stranger = Identity.generate(secrets.token_bytes)
    for _ in range(3):
        with pytest.raises(RemoteError) as refused:
            await HubLink.connect(hub_url, stranger, Role.MASTER)
        assert refused.value.code == "unknown_identity"
    with pytest.raises(LinkClosed, match="HTTP 429"):
        await HubLink.connect(hub_url, stranger, Role.MASTER)


def test_a_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) is True  # one token back after 1/rate seconds
    assert bucket.take(0.1) is False


@pytest.fixture
async def limited_hub(tmp_path: Path) -> AsyncIterator[tuple[str, Identity]]:
    async with live_hub(HubSettings(data_dir=tmp_path / "hub", session_rate=20.0, session_burst=10.0)) as hub:
        yield hub


async def test_a_session_over_its_message_rate_gets_rate_limited_errors_and_stays_usable(
    limited_hub: tuple[str, Identity],
) -> None:
    url, master = limited_hub
    link = await HubLink.connect(url, master, Role.MASTER)
    try:
        for _ in range(40):
            await link.send(ScenarioList())
        codes = set()
        with contextlib.suppress(TimeoutError):
            while True:
                envelope = await asyncio.wait_for(link.recv(), 1.0)
                if isinstance(envelope.body, Error):
                    codes.add(envelope.body.code)
        assert "rate_limited" in codes
        await asyncio.sleep(0.6)
        request_id = await link.send(ScenarioList())
        answer = await asyncio.wait_for(link.recv(), 5)
        assert answer.reply_to == request_id and isinstance(answer.body, Response)
    finally:
        await link.close()
