"""``crc up`` and ``crc down`` as SDK calls: a scenario file becomes running machines, and back to nothing.

``up`` creates the scenario and its keys on the hub, renders each machine's startup script, has the provider
create the machines, and follows the scenario's events until every machine reported SystemReady, or its
startup script reported a failed step, or time ran out. Run again on a scenario that exists, it adds the machines
the file gained (as Terraform applies a grown configuration) and names those the file lost, removing them only
when told to prune. ``down`` deletes the scenario (which revokes every
machine key), then has the provider delete the machines and scripts; both halves tolerate being already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from clients.daemon.config import DaemonConfig
from clients.master.models import EventInfo, NewMachine
from clients.master.sdk import Master
from protocol import ErrorCode, RemoteError
from protocol.boot import BootStatus
from protocol.events import BootStep, EventKind
from provisioning.hubinfo import self_signed_certificate
from provisioning.providers.base import ProvidedMachine, Provider, ProviderError, Teardown
from provisioning.release import ReleaseError, publish_release
from provisioning.scenario_file import ScenarioFile
from provisioning.startup import StartupParams, render


class UpError(RuntimeError):
    """``up`` could not start at all (the scenario exists, the hub has no daemon wheel...)."""


class Outcome(StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"  # the startup script reported a failed step
    NOT_CREATED = "not_created"  # the provider refused to create it
    TIMED_OUT = "timed_out"


@dataclass
class MachineProgress:
    name: str
    outcome: Outcome = Outcome.PENDING
    step: str = ""  # the startup script's last reported step
    step_status: str = ""
    detail: str = ""  # the failed step's output, or the provider's error
    provider_id: str = ""
    address: str = ""

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.PENDING


@dataclass(frozen=True)
class UpPlan:
    """What ``up`` is about to do, once the hub has the scenario: ``creating`` machines (all of the file's for a
    new scenario); ``present``: the file's machines the scenario has already (left as they are); ``extra``: the
    scenario's machines the file does not name; ``pruned``: those of them removed (``prune``)."""

    scenario: str
    creating: list[str]
    present: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


@dataclass
class UpReport:
    scenario: str
    machines: dict[str, MachineProgress]
    seconds: float = 0.0
    plan: UpPlan | None = None

    @property
    def ok(self) -> bool:
        return all(m.outcome is Outcome.READY for m in self.machines.values())

    @property
    def failed(self) -> list[MachineProgress]:
        return [m for m in self.machines.values() if m.outcome is not Outcome.READY]


@dataclass
class DownReport:
    scenario: str
    teardown: Teardown = field(default_factory=Teardown)
    scenario_deleted: bool = False


Progress = Callable[[MachineProgress, str], None]
Notice = Callable[[str], None]
DEFAULT_QUIET_WARNING = 60.0
# Any of these shows a machine reached the hub (so the quiet-machines notice is not needed).
_SIGNS_OF_LIFE = frozenset({EventKind.BOOT_STEP, EventKind.MACHINE_CONNECTED, EventKind.MACHINE_READY})


def quiet_machines_notice(seconds: float, machines_hub: str) -> str:
    """What to tell a user when no machine has reported even a first boot step: they cannot reach the hub."""
    return (
        f"no machine has reported a first boot step after {seconds:.0f} s; they were told to reach the hub at "
        f"{machines_hub}. Usual cause: the hub listens on 127.0.0.1 while the machines are in network namespaces "
        "or on VMs (start it with `crc hub --host` on an address they can reach), or a firewall in between"
    )


async def up(
    master: Master,
    spec: ScenarioFile,
    provider: Provider,
    *,
    timeout: float = 900.0,
    progress: Progress | None = None,
    wheel: Path | None = None,
    notice: Notice | None = None,
    quiet_warning: float = DEFAULT_QUIET_WARNING,
    prune: bool = False,
    planned: Callable[[UpPlan], None] | None = None,
) -> UpReport:
    """Create the scenario's machines (or those the file gained) and wait for them; see the module doc.

    Args:
        progress: called with a machine and a line of text whenever something happens to it.
        wheel: the daemon wheel file to install (default: this installation's own build), published to the hub
            with this master's dependency lock; machines check both against the hashes in their scripts.
        notice: called with a line for the whole scenario, such as `quiet_machines_notice`.
        quiet_warning: seconds after which, if no machine has reported a boot step, ``notice`` says so (0: never).
        prune: remove the scenario's machines the file does not name (their keys revoked, then the provider's
            machines deleted); without it they are only named in the plan.
        planned: called with the plan once the hub has the scenario, before any machine is created.

    Raises:
        UpError: nothing was created (a scenario of that name exists, the hub has no daemon wheel...).
    """
    started = time.monotonic()
    say = progress or (lambda machine, text: None)
    hub_url = master.url
    try:
        release = await publish_release(master, wheel)
    except ReleaseError as exc:
        raise UpError(str(exc)) from None
    hub_ca_pem = await self_signed_certificate(hub_url, master.pin)
    minted, plan = await _declare(master, spec, provider, prune, notice)
    if planned is not None:
        planned(plan)
    machines = {name: MachineProgress(name) for name in plan.creating}
    report = UpReport(spec.name, machines, plan=plan)
    if not machines:
        report.seconds = time.monotonic() - started
        return report
    machines_hub = hub_url
    all_done = asyncio.Event()
    first_step = asyncio.Event()

    def settle(progress_: MachineProgress, outcome: Outcome, text: str) -> None:
        if progress_.done:
            return
        progress_.outcome = outcome
        say(progress_, text)
        if all(m.done for m in machines.values()):
            all_done.set()

    async def follow() -> None:
        async for item in master.events(spec.name, 0):
            if not isinstance(item, EventInfo) or item.machine not in machines:
                continue
            state = machines[item.machine]
            if item.kind in _SIGNS_OF_LIFE:
                first_step.set()
            if isinstance(step := item.payload, BootStep):
                state.step, state.step_status = step.step, step.status
                if state.step_status == BootStatus.FAILED:
                    state.detail = step.detail
                    settle(state, Outcome.FAILED, f"startup step {state.step!r} failed")
                elif not state.done:
                    say(state, f"{state.step} {state.step_status}")
            elif item.kind == EventKind.MACHINE_CONNECTED and not state.done:
                say(state, "daemon connected")
            elif item.kind == EventKind.MACHINE_READY:
                settle(state, Outcome.READY, "SystemReady")

    async def create(name: str) -> None:
        plan = spec.machine(name)
        new = next(m for m in minted if m.name == name)
        config = DaemonConfig(machines_hub, spec.name, name, new.identity, master.identity.public, hub_pin=master.pin,
                              sealed=spec.sealed)  # fmt: skip
        script = render(StartupParams(config, release.wheel, hub_ca_pem, release.lock), plan.os)
        try:
            made = await provider.create(spec.name, plan, script)
        except ProviderError as exc:
            machines[name].detail = str(exc)
            settle(machines[name], Outcome.NOT_CREATED, f"not created: {exc}")
            return
        machines[name].provider_id, machines[name].address = made.provider_id, made.address
        where = f"{made.provider_id}, {made.address}" if made.address else made.provider_id
        say(machines[name], f"created by {provider.kind} ({where}; hostname {plan.hostname})")
        watchers.append(asyncio.create_task(watch(machines[name], made)))

    async def watch(state: MachineProgress, made: ProvidedMachine) -> None:
        address = await provider.follow(made, lambda text: None if state.done else say(state, text))
        state.address = address or state.address

    async def warn_if_quiet() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_step.wait(), quiet_warning)
            return
        if not all_done.is_set() and notice is not None:
            notice(quiet_machines_notice(quiet_warning, machines_hub))

    watchers: list[asyncio.Task[None]] = []
    follower = asyncio.create_task(follow(), name="crc-up-events")
    try:
        machines_hub = await provider.prepare(spec.name, hub_url)
        await asyncio.gather(*(create(name) for name in machines))
        if quiet_warning > 0:
            watchers.append(asyncio.create_task(warn_if_quiet(), name="crc-up-quiet"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_done.wait(), max(0.0, timeout - (time.monotonic() - started)))
        for state in machines.values():
            if not state.done:
                last = f"; last step {state.step!r} {state.step_status}" if state.step else "; no step reported"
                settle(state, Outcome.TIMED_OUT, f"not ready after {timeout:.0f} s{last}")
    finally:
        for task in (follower, *watchers):
            task.cancel()
        await asyncio.gather(follower, *watchers, return_exceptions=True)
    report.seconds = time.monotonic() - started
    return report


async def _declare(
    master: Master, spec: ScenarioFile, provider: Provider, prune: bool, notice: Notice | None
) -> tuple[list[NewMachine], UpPlan]:
    """The scenario on the hub with every machine of the file: created, or grown by the ones it lacks."""
    declared = {m.name: (m.name, m.os, m.role, dict(m.labels)) for m in spec.machines}
    try:
        created = await master.create_scenario(spec.name, declared.values(), sealed=spec.sealed)
        return created, UpPlan(spec.name, list(declared))
    except RemoteError as exc:
        if exc.code != ErrorCode.ALREADY_EXISTS.value:
            raise
    try:
        existing = [m.name for m in (await master.scenario(spec.name)).machines]
    except RemoteError as exc:  # a scenario of that name that is not this master's cannot be: names are per master
        raise UpError(f"scenario {spec.name!r} exists but cannot be read: {exc}") from None
    plan = UpPlan(
        spec.name,
        creating=[name for name in declared if name not in existing],
        present=[name for name in declared if name in existing],
        extra=[name for name in existing if name not in declared],
    )
    if prune and plan.extra:
        for name in plan.extra:  # keys first: a machine being deleted can no longer act
            with contextlib.suppress(RemoteError):
                await master.revoke_machine(spec.name, name)
        await provider.destroy(spec.name, notice, only=plan.extra)
        plan = dataclasses.replace(plan, pruned=list(plan.extra))
    minted = (await master.add_machines(spec.name, [declared[name] for name in plan.creating], sealed=spec.sealed)
              if plan.creating else [])  # fmt: skip
    return minted, plan


async def down(master: Master, scenario: str, provider: Provider, notice: Notice | None = None) -> DownReport:
    """Delete the scenario and its keys, then its machines and scripts. Safe to run twice.

    Keys go first: every daemon is disconnected and refused at once, even if deleting a machine fails.
    ``notice`` hears what the provider waits for (Vultr refuses to delete an instance still installing).
    """
    report = DownReport(scenario)
    try:
        await master.delete_scenario(scenario)
        report.scenario_deleted = True
    except RemoteError as exc:
        if exc.code != ErrorCode.NOT_FOUND.value:
            raise
    report.teardown = await provider.destroy(scenario, notice)
    return report
