"""An on-path relay cannot stop a daemon: unsealed "revoked" frames are retried with backoff, never final.

The relay is a real WebSocket server on 127.0.0.1 between a real daemon and a real hub, as anyone on a ws:// path
could run one. It answers the first connections with the plain (unsealed) ERROR frame the hub uses to refuse a
handshake, code ``revoked``, at each point an attacker could: instead of the challenge, instead of the WELCOME,
and in the middle of an established session. Then it forwards faithfully: the daemon must still be there.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from clients.daemon.config import DaemonConfig, write_config
from clients.link import hub_ws_url, new_id
from clients.master.sdk import Master
from protocol import ErrorCode, ProtocolError
from protocol.session import plain_error_frame
from tests.e2e.support import START_TIMEOUT, Daemons, HubProcess, eventually

UNTRUSTED_REFUSAL = "an unsealed refusal is not trusted as final"


class Injection(enum.Enum):
    INSTEAD_OF_CHALLENGE = "instead of the challenge"
    INSTEAD_OF_WELCOME = "instead of the welcome"
    MID_SESSION = "in an established session"


def forged_revocation() -> bytes:
    error = ProtocolError(ErrorCode.REVOKED, "this machine's key is no longer enrolled")
    return plain_error_frame(new_id(), "relay", time.time(), error)


class HostileRelay:
    """Forwards daemon <-> hub, except that connection n (0-based) gets ``plan[n]`` injected; later ones pass."""

    def __init__(self, hub_url: str, plan: list[Injection]) -> None:
        self.hub_ws = hub_ws_url(hub_url)
        self.plan = plan
        self.connections = 0
        self.injected: list[Injection] = []
        self.url = ""

    async def _handle(self, daemon: ServerConnection) -> None:
        turn = self.connections
        self.connections += 1
        injection = self.plan[turn] if turn < len(self.plan) else None
        if injection is Injection.INSTEAD_OF_CHALLENGE:
            await self._inject(daemon, injection)
            return
        async with connect(self.hub_ws, compression=None, max_size=None, open_timeout=10) as hub:
            if injection is Injection.INSTEAD_OF_WELCOME:
                await daemon.send(await hub.recv(decode=False))  # the hub's real challenge
                await daemon.recv(decode=False)  # the daemon's AUTH, never delivered
                await self._inject(daemon, injection)
                return
            if injection is Injection.MID_SESSION:
                await daemon.send(await hub.recv(decode=False))  # challenge
                await hub.send(await daemon.recv(decode=False))  # AUTH
                await daemon.send(await hub.recv(decode=False))  # sealed WELCOME: the session is established
                await hub.send(await daemon.recv(decode=False))  # the daemon's first sealed message
                await self._inject(daemon, injection)
                return
            await self._pipe(daemon, hub)

    async def _inject(self, daemon: ServerConnection, injection: Injection) -> None:
        self.injected.append(injection)
        with contextlib.suppress(websockets.ConnectionClosed):
            await daemon.send(forged_revocation())
            await daemon.close()

    @staticmethod
    async def _pipe(daemon: ServerConnection, hub: ClientConnection) -> None:
        async def copy(source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection) -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for frame in source:
                    await sink.send(frame)
            await sink.close()

        await asyncio.gather(copy(daemon, hub), copy(hub, daemon))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[HostileRelay]:
        async with serve(self._handle, "127.0.0.1", 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


async def _deploy_behind(relay: HostileRelay, master: Master, daemons: Daemons, tmp_path: Path, name: str):
    (machine,) = await master.create_scenario(name, [("box", "linux")])
    config = tmp_path / "configs" / f"{name}.toml"
    write_config(config, DaemonConfig(relay.url, name, "box", machine.identity, master.identity.public))
    return daemons.start(config, f"{name}-box")


@pytest.mark.parametrize("injection", list(Injection), ids=lambda i: i.name.lower())
async def test_a_forged_unsealed_revocation_is_retried_and_the_daemon_connects(
    injection: Injection, hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    async with HostileRelay(hub.url, [injection, injection]).running() as relay:
        daemon = await _deploy_behind(relay, master, daemons, tmp_path, "relayed")

        await master.wait_ready("relayed", timeout=START_TIMEOUT)
        (result,) = await master.run("relayed", "box", "echo still obeying", wait_timeout=20)

    assert relay.injected == [injection, injection]
    assert relay.connections >= 3  # both forged refusals were retried, then a faithful connection came
    assert result.ok and result.verified and result.stdout == b"still obeying\n"
    assert daemon.running
    log = daemon.log_text()
    if injection is Injection.MID_SESSION:
        assert log.count("(unsealed, so unauthenticated)") >= 2, log
    else:
        assert log.count(UNTRUSTED_REFUSAL) >= 2, log
        assert "says this machine's key is revoked (" in log, log
    assert "revoked" in log and "exiting" not in log


async def test_forged_revocations_of_every_kind_in_a_row_never_stop_the_daemon(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    plan = [Injection.INSTEAD_OF_CHALLENGE, Injection.MID_SESSION, Injection.INSTEAD_OF_WELCOME]
    async with HostileRelay(hub.url, plan).running() as relay:
        daemon = await _deploy_behind(relay, master, daemons, tmp_path, "hammered")
        await eventually(lambda: len(relay.injected) == len(plan), timeout=60, what="every forged refusal sent")
        await master.wait_ready("hammered", timeout=START_TIMEOUT)
        (result,) = await master.run("hammered", "box", "echo survived", wait_timeout=20)

    assert result.ok and result.stdout == b"survived\n"
    assert daemon.running
