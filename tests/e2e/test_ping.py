"""``crc ping`` / ``Master.ping``: a signed no-op each machine answers at once (nothing runs), so an operator sees
which machines are there and obeying this master; a machine that is down shows up as not answering."""

from __future__ import annotations

import asyncio

from clients.master.sdk import Master
from tests.e2e.support import HubProcess, run_crc


async def test_ping_tells_which_machines_answer(hub: HubProcess, master: Master, deploy) -> None:
    deployment = await deploy("pg", "db", "web")
    results = await master.ping("pg")
    assert sorted((r.machine, r.status, r.verified) for r in results) == [
        ("db", "succeeded", True), ("web", "succeeded", True)
    ]  # fmt: skip
    answered = await asyncio.to_thread(run_crc, hub, "ping", "pg")
    assert answered.returncode == 0 and "2/2 answered" in answered.stderr, answered.stderr
    assert sorted(answered.stdout.split("\n")[:2]) == ["db: pong", "web: pong"]

    deployment.daemon("web").kill()
    silent = await asyncio.to_thread(run_crc, hub, "ping", "pg", "--timeout", "2")
    assert silent.returncode != 0 and "1/2 answered" in silent.stderr, silent.stderr
    assert "web: queued" in silent.stdout or "web: delivered" in silent.stdout, silent.stdout
    unknown = await asyncio.to_thread(run_crc, hub, "ping", "pg", "ghost")
    assert unknown.returncode != 0 and "ghost" in unknown.stderr
