"""Heartbeats find half-open sessions: a daemon that stops answering is marked offline, and comes back."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import pytest

from clients.master.sdk import Master
from tests.e2e.support import HubProcess, next_event

HEARTBEAT = 0.5
DEAD_AFTER = 2.0


@pytest.fixture
def hub(make_hub: Callable[..., HubProcess]) -> HubProcess:
    return make_hub(heartbeat_interval=HEARTBEAT, dead_after=DEAD_AFTER)


async def test_a_frozen_daemon_is_marked_offline_then_reconnects_when_it_resumes(master: Master, deploy) -> None:
    shop = await deploy("beat", "box", "other")
    daemon = shop.daemon("box")
    head = (await master.scenario("beat")).cursor

    # SIGSTOP: the socket stays open but nothing answers, as with a VM paused or a network path gone dead.
    daemon.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        offline = await next_event(master, "beat", after=head, kind="machine_offline", timeout=DEAD_AFTER + 8)
        noticed = time.monotonic() - frozen
        assert offline.machine == "box"
        # dropped after dead_after of silence (counted from its last PING or PONG, at most a heartbeat before
        # the freeze), checked every heartbeat interval, plus scheduling slack on a busy machine
        assert DEAD_AFTER - 2 * HEARTBEAT <= noticed <= DEAD_AFTER + HEARTBEAT + 2.5, noticed
        statuses = {m.name: m.status for m in (await master.scenario("beat")).machines}
        assert statuses == {"box": "offline", "other": "ready"}
    finally:
        daemon.send_signal(signal.SIGCONT)

    ready = await next_event(master, "beat", after=offline.cursor, kind="machine_ready", machine="box", timeout=15)
    assert ready.machine == "box"
    (result,) = await master.run("beat", "box", "echo back", wait_timeout=15)
    assert result.stdout == b"back\n"
    assert daemon.running
    # the machine that kept answering PINGs was never dropped, short as the heartbeat settings are
    events = [e async for e in master.events("beat", 0, follow=False)]
    assert [e.kind for e in events if e.machine == "other"] == ["machine_connected", "machine_ready"]
