"""Strings from an unauthenticated AUTH frame never forge lines in the hub's log."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import websockets

from clients.link import hub_ws_url, new_id
from protocol import Identity, Role
from protocol.session import ClientSession
from server.transport.ws import log_safe
from tests.e2e.support import HubProcess, eventually


@dataclass(frozen=True)
class ForgedRole:
    """Stands in for a Role: a hostile client sends any string it likes as its role."""

    value: str


def test_log_safe_keeps_text_on_one_line_and_short() -> None:
    assert log_safe("master\n2026-12-07 INFO forged") == "master\\n2026-12-07 INFO forged"
    assert "\r" not in log_safe("a\rb\x1b[31m") and "\x1b" not in log_safe("a\rb\x1b[31m")
    assert log_safe("x" * 1000).endswith("...") and len(log_safe("x" * 1000)) == 303


async def test_a_role_with_a_newline_is_logged_as_peer_without_a_forged_line(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    await hub.astart()
    try:
        session = ClientSession(Identity.generate(secrets.token_bytes), Role.MASTER, secrets.token_bytes(32))
        session._role = ForgedRole("master\nFORGED hub line")  # type: ignore[assignment]
        async with websockets.connect(hub_ws_url(hub.url)) as ws:
            challenge = await asyncio.wait_for(ws.recv(decode=False), 5)
            await ws.send(session.answer(challenge, new_id(), time.time()))
            await asyncio.wait_for(ws.recv(decode=False), 5)  # the refusal
        await eventually(lambda: "refused a peer" in hub.log_text(), timeout=10, what="the refusal logged")
        assert not any(line.startswith("FORGED") for line in hub.log_text().splitlines()), hub.log_text()
    finally:
        hub.cleanup()
