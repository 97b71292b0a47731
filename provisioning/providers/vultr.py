"""Vultr as a provider: one startup script (or cloud-init user-data) and one instance per machine.

Everything made for a scenario carries its name: instances are tagged ``crc-scenario:NAME`` (and labelled
``crc:NAME/MACHINE``), startup scripts are named ``crc:NAME/MACHINE`` (``/`` cannot be in a name, so one scenario's
prefix never matches another's). ``destroy`` finds them by those marks,
so ``crc down`` works even when the master that ran ``crc up`` crashed.

Instances are found by listing them all and matching the tag *or* the label here: the API's ``tag`` list filter
is deprecated (govultr v2.16.0 deprecated ``tag``, v3.10.0 removed it) and may be honoured, ignored, or match only
the old singular ``tag`` field, so it is never relied on.

Image sources: an integer is an ``os_id``; ``"snapshot:ID"`` is a ``snapshot_id``; any other string is an
``image_id``, which Vultr defines as a Marketplace application id (not a custom image or a snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection
from typing import Any

from provisioning.providers.base import ProvidedMachine, Provider, ProviderError, Teardown
from provisioning.scenario_file import MachinePlan, ProviderSettings
from provisioning.vultr import Instance, VultrClient, VultrError, VultrNotFound, VultrServerError

SCENARIO_TAG = "crc-scenario:"
SNAPSHOT_PREFIX = "snapshot:"
DESTROY_ROUNDS = 3  # rounds of list-then-delete in one teardown: a lagging listing gets two more chances


def scenario_tag(scenario: str) -> str:
    return SCENARIO_TAG + scenario


def resource_name(scenario: str, machine: str) -> str:
    return f"crc:{scenario}/{machine}"


class VultrProvider(Provider):
    kind = "vultr"

    def __init__(
        self,
        client: VultrClient,
        settings: ProviderSettings,
        *,
        poll_interval: float = 5.0,
        boot_timeout: float = 900.0,
        first_poll_after: float | None = None,
        not_found_for: float = 120.0,
        lock_wait: float = 900.0,
        lock_poll: float = 10.0,
        relist_after: float = 5.0,
    ) -> None:
        self.client = client
        self.settings = settings
        self.poll_interval = poll_interval
        self.boot_timeout = boot_timeout
        self.first_poll_after = first_poll_after
        self.not_found_for = not_found_for
        self.lock_wait = lock_wait
        self.lock_poll = lock_poll
        self.relist_after = relist_after

    async def follow(self, machine: ProvidedMachine, say: Callable[[str], None]) -> str:
        try:
            instance = await self.client.wait_active(
                machine.provider_id,
                timeout=self.boot_timeout,
                poll_interval=self.poll_interval,
                first_poll_after=self.first_poll_after,
                not_found_for=self.not_found_for,
            )
        except VultrError as exc:
            say(f"Vultr instance {machine.provider_id} did not become active: {exc}")
            return ""
        say(f"instance active at {instance.main_ip} ({instance.os or instance.os_id}, {instance.plan})")
        return _ip(instance.main_ip)

    async def create(self, scenario: str, machine: MachinePlan, script: str) -> ProvidedMachine:
        name = resource_name(scenario, machine.name)
        try:
            script_id = None
            user_data = None
            if self.settings.boot == "script":
                script_id = await self._upload_script(name, script)
            else:
                user_data = script.encode("utf-8")
            instance = await self.client.create_instance(
                machine.region,
                machine.plan,
                label=name,
                hostname=machine.hostname,
                tags=[scenario_tag(scenario), f"crc-machine:{machine.name}", *self.settings.tags],
                script_id=script_id,
                user_data=user_data,
                backups=self.settings.backups == "enabled",  # always sent: Vultr's default is not documented
                **image_source(machine.image),
            )
        except VultrError as exc:
            raise ProviderError(f"Vultr could not create machine {machine.name!r}: {exc}") from exc
        return ProvidedMachine(machine.name, instance.id, instance.status or "pending", _ip(instance.main_ip))

    async def _upload_script(self, name: str, script: str, attempts: int = 3) -> str:
        """The client does not retry a POST that failed with 5xx (it may have been done); for a startup script
        a duplicate is harmless (``destroy`` deletes every script of the scenario by name), so retry here."""
        for attempt in range(1, attempts + 1):
            try:
                return (await self.client.create_startup_script(name, script)).id
            except VultrServerError:
                if attempt == attempts:
                    raise
                await asyncio.sleep(0.5 * attempt)
        raise AssertionError("unreachable")

    async def _instances(self, scenario: str, only: Collection[str] = ()) -> list[Instance]:
        """The scenario's instances (``only`` these machines), matched here by tag or label (no server-side
        filter: see the module doc)."""
        prefix = resource_name(scenario, "")
        tag = scenario_tag(scenario)
        found = [i async for i in self.client.list_instances() if tag in i.tags or i.label.startswith(prefix)]
        if not only:
            return found
        labels = {resource_name(scenario, machine) for machine in only}
        return [i for i in found if i.label in labels or any(f"crc-machine:{m}" in i.tags for m in only)]

    async def machines(self, scenario: str) -> list[ProvidedMachine]:
        prefix = resource_name(scenario, "")
        found = []
        try:
            for instance in await self._instances(scenario):
                name = instance.label.removeprefix(prefix) if instance.label.startswith(prefix) else instance.label
                state = "/".join(s for s in (instance.status, instance.power_status, instance.server_status) if s)
                found.append(ProvidedMachine(name, instance.id, state, _ip(instance.main_ip)))
        except VultrError as exc:
            raise ProviderError(f"cannot list the Vultr instances of scenario {scenario!r}: {exc}") from exc
        return sorted(found, key=lambda m: m.name)

    async def destroy(
        self, scenario: str, say: Callable[[str], None] | None = None, *, only: Collection[str] = ()
    ) -> Teardown:
        """Delete the scenario's instances (waiting out Vultr's install locks), then its startup scripts.

        Vultr's listings are eventually consistent (kubermatic/machine-controller PR #1706): a deleted instance
        may still be listed, a new one not yet. So the scenario is listed again ``relist_after`` seconds after
        the deletes (and after an empty first listing): an instance still listed is asked for by id (gone: the
        listing lags) or deleted in a further round, up to ``DESTROY_ROUNDS`` rounds and a last listing; one that
        outlives them fails the teardown, which never reports success while an instance of the scenario is known
        to exist.
        """
        teardown = Teardown()
        try:
            handled: set[str] = set()  # ids this call deleted or saw gone
            deleted: list[str] = []
            for round_no in range(DESTROY_ROUNDS):
                if round_no:
                    await asyncio.sleep(self.relist_after * self.client.time_scale)
                todo = [i for i in await self._instances(scenario, only) if not await self._gone(i, handled)]
                if not todo and round_no:  # an empty first listing may only be lagging: it is checked once more
                    break
                done = await asyncio.gather(
                    *(
                        self.client.delete_instance(i.id, lock_wait=self.lock_wait, lock_poll=self.lock_poll, say=say)
                        for i in todo
                    )
                )
                handled.update(i.id for i in todo)
                # only what this call deleted: one already gone (a stale listing) is not reported
                deleted += [i.label or i.id for i, ok in zip(todo, done, strict=True) if ok]
            else:
                left = [i for i in await self._instances(scenario, only) if not await self._gone(i, handled)]
                if left:
                    names = ", ".join(sorted(i.label or i.id for i in left))
                    raise ProviderError(
                        f"Vultr teardown of scenario {scenario!r}: still there after {DESTROY_ROUNDS} rounds of "
                        f"deletes: {names}; run it again"
                    )
            teardown.machines = sorted(deleted)
            prefix = resource_name(scenario, "")
            wanted = {resource_name(scenario, machine) for machine in only}
            scripts = [
                s async for s in self.client.list_startup_scripts()
                if (s.name in wanted if only else s.name.startswith(prefix))
            ]  # fmt: skip
            for script in scripts:
                with contextlib.suppress(VultrNotFound):
                    await self.client.delete_startup_script(script.id)
            teardown.scripts = sorted(s.name for s in scripts)
        except VultrError as exc:
            raise ProviderError(f"Vultr teardown of scenario {scenario!r} stopped: {exc}; run it again") from exc
        return teardown

    async def _gone(self, instance: Instance, handled: set[str]) -> bool:
        """Whether a listed instance this call already dealt with is really gone (else it is deleted again)."""
        if instance.id not in handled:
            return False
        try:
            await self.client.get_instance(instance.id)
        except VultrNotFound:
            return True  # listed, but gone by id: the listing lags behind the delete
        return False

    async def close(self) -> None:
        await self.client.close()


def image_source(image: int | str) -> dict[str, Any]:
    """The create field for a scenario image: ``os_id``, ``snapshot_id`` (``"snapshot:ID"``) or ``image_id``."""
    if isinstance(image, int):
        return {"os_id": image}
    if image.startswith(SNAPSHOT_PREFIX):
        return {"snapshot_id": image.removeprefix(SNAPSHOT_PREFIX)}
    return {"image_id": image}  # Vultr: a Marketplace application id


def _ip(address: str) -> str:
    return "" if address in ("", "0.0.0.0") else address
