"""``crc update``: move a scenario's daemons to a daemon build the master vouches for, and report how each fared.

The build is the wheel given (``--wheel FILE``) or this installation's own, with the master's dependency lock
(``provisioning.release``), never what the hub advertises. Each target machine gets a master-signed UPDATE
order naming the wheel, the lock and their SHA-256s; the daemon installs it
beside the running build, restarts into it, and the new build confirms itself by reconnecting, or is rolled
back (``clients/daemon/update.py``). The machines' ``boot_step`` events (``update-installing``,
``update-restarting``, ``update-confirmed`` / ``update-rolled-back``) tell the outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from clients.master.models import EventInfo
from clients.master.sdk import Master
from protocol import OrderKind
from protocol.events import BootStep
from protocol.order_bodies import UpdateBody
from provisioning.release import publish_release


class UpdateOutcome(StrEnum):
    UPDATED = "updated"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # not installed: the running build is untouched
    TIMED_OUT = "timed_out"


@dataclass
class MachineUpdate:
    machine: str
    outcome: UpdateOutcome = UpdateOutcome.TIMED_OUT
    detail: str = ""
    version: str = ""


async def update_daemons(
    master: Master,
    scenario: str,
    target: str = "all",
    *,
    wheel: Path | None = None,
    timeout: float = 600.0,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, MachineUpdate]:
    """Update the daemons of ``target`` to the wheel file ``wheel`` (default: this installation's own build).

    Raises:
        ReleaseError: no build to vouch for, or the hub would not take it.
    """
    say = progress or (lambda machine, text: None)
    started = time.monotonic()
    _, machines = await master.targets(scenario, target)
    release = await publish_release(master, wheel)
    body = UpdateBody(release.wheel.name, release.wheel.sha256, release.lock.name, release.lock.sha256).to_wire()
    outcomes = {m.name: MachineUpdate(m.name) for m in machines}
    if not outcomes:
        return outcomes
    cursor = (await master.scenario(scenario)).cursor
    settled = asyncio.Event()

    def settle(name: str, outcome: UpdateOutcome, detail: str, version: str = "") -> None:
        state = outcomes[name]
        if state.outcome is not UpdateOutcome.TIMED_OUT:
            return
        state.outcome, state.detail, state.version = outcome, detail, version
        say(name, f"{outcome.value}: {detail}" if detail else outcome.value)
        if all(o.outcome is not UpdateOutcome.TIMED_OUT for o in outcomes.values()):
            settled.set()

    async def follow() -> None:
        async for item in master.events(scenario, cursor):
            if not isinstance(item, EventInfo) or item.machine not in outcomes:
                continue
            if not isinstance(boot := item.payload, BootStep):
                continue
            step, status, detail = boot.step, boot.status, boot.detail
            if step == "update-confirmed":
                settle(item.machine, UpdateOutcome.UPDATED, detail, detail.removeprefix("now running "))
            elif step == "update-rolled-back":
                settle(item.machine, UpdateOutcome.ROLLED_BACK, detail)
            elif step.startswith("update-"):
                say(item.machine, f"{step} {status}" + (f": {detail.splitlines()[0]}" if detail else ""))

    follower = asyncio.create_task(follow())
    try:
        results = await master.dispatch(scenario, target, OrderKind.UPDATE, body, timeout=timeout)
        for result in results:
            if not result.ok:
                settle(result.machine, UpdateOutcome.FAILED, result.error or result.status)
        remaining = max(0.0, timeout - (time.monotonic() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled.wait(), remaining)
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    return outcomes
