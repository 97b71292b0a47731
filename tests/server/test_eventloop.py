"""Choosing the hub's event loop: asyncio by default, uvloop when asked (and installed), ``auto`` = uvloop if
installed; a hub really serves on uvloop."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from clients.master.sdk import Master
from server import eventloop
from tests.e2e.support import HubProcess

HAS_UVLOOP = importlib.util.find_spec("uvloop") is not None


def test_the_default_is_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRC_EVENT_LOOP", raising=False)
    assert eventloop.chosen() == "asyncio"
    assert eventloop.chosen("auto") == ("uvloop" if HAS_UVLOOP else "asyncio")
    monkeypatch.setenv("CRC_EVENT_LOOP", "asyncio")
    assert eventloop.chosen() == "asyncio"
    with pytest.raises(eventloop.EventLoopError, match="one of"):
        eventloop.chosen("trio")


def test_run_returns_the_coroutines_result() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__.startswith("uvloop")

    assert eventloop.run(answer(), "asyncio") is False
    if HAS_UVLOOP:
        assert eventloop.run(answer(), "uvloop") is True


@pytest.mark.skipif(not HAS_UVLOOP, reason="uvloop is not installed (the 'fast' extra; not on Windows)")
async def test_a_hub_serves_on_uvloop(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path, extra_args=["--event-loop", "uvloop"])
    hub.start()
    try:
        async with await Master.connect(hub.url, hub.key_path) as master:
            await master.create_scenario("loop", [("box", "linux")])
            assert [s["name"] for s in await master.scenarios()] == ["loop"]
    finally:
        hub.cleanup()
