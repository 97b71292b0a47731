"""The event pump (server/core/pump.py) on a real SQLite store: replay, then live, pages, keep-alives, close."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import Identity
from server.core.pump import EventPump, Page
from server.store import MachineSpec, SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "hub.sqlite3")
    yield store
    await store.close()


async def scenario_with_events(store: SqliteStore, count: int) -> str:
    master = await store.enroll_master("ana", Identity.generate(os.urandom).public.to_text(), time.time())
    box = MachineSpec("box", "linux", "web", Identity.generate(os.urandom).public.to_text())
    scenario = await store.create_scenario(master.id, "shop", [box], time.time())
    for n in range(count):
        await store.append_event(scenario.id, "note", "box", {"n": n}, time.time())
    return scenario.id


async def next_page(pages: AsyncIterator[Page]) -> Page:
    return await asyncio.wait_for(anext(pages), 5)


async def test_it_replays_in_pages_from_the_cursor_then_streams_what_comes(store: SqliteStore) -> None:
    scenario = await scenario_with_events(store, 5)
    pump = EventPump(store, scenario, 1, page=2, idle=30)
    pages = pump.pages()
    assert [e.cursor for e in (await next_page(pages)).events] == [2, 3]
    assert [e.cursor for e in (await next_page(pages)).events] == [4, 5]  # a full page: read on at once
    assert (await next_page(pages)).events == []  # caught up
    waiting = asyncio.ensure_future(next_page(pages))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing new: it waits for a wake-up
    await store.append_event(scenario, "note", "box", {"n": 5}, time.time())
    pump.notify()
    page = await waiting
    assert ([e.cursor for e in page.events], page.quiet, pump.cursor) == ([6], False, 6)
    pump.close()
    with pytest.raises(StopAsyncIteration):
        await next_page(pages)


async def test_without_a_wake_up_it_reads_again_after_idle_seconds_and_says_it_was_quiet(store: SqliteStore) -> None:
    scenario = await scenario_with_events(store, 0)
    pump = EventPump(store, scenario, 0, page=10, idle=0.05)
    pages = pump.pages()
    assert (await next_page(pages)).quiet is False
    await store.append_event(scenario, "note", "box", {}, time.time())  # a lost notification: found by the poll
    page = await next_page(pages)
    assert (page.quiet, [e.cursor for e in page.events]) == (True, [1])
    pump.close()
