"""Vultr as a provider: one startup script (or cloud-init user-data) and one instance per machine.

Everything made for a scenario carries its name: instances are tagged ``crc-scenario:NAME`` (and labelled
``crc:NAME/MACHINE``), startup scripts are named ``crc:NAME/MACHINE`` (``/`` cannot be in a name, so one scenario's
prefix never matches another's). ``destroy`` finds them by those marks,
so ``crc down`` works even when the master that ran ``crc up`` crashed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from provisioning.providers.base import ProvidedMachine, Provider, ProviderError, Teardown
from provisioning.scenario_file import MachinePlan, ProviderSettings
from provisioning.vultr import VultrClient, VultrError, VultrNotFound, VultrServerError

SCENARIO_TAG = "crc-scenario:"


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
    ) -> None:
        self.client = client
        self.settings = settings
        self.poll_interval = poll_interval
        self.boot_timeout = boot_timeout

    async def follow(self, machine: ProvidedMachine, say: Callable[[str], None]) -> str:
        try:
            instance = await self.client.wait_active(
                machine.provider_id, timeout=self.boot_timeout, poll_interval=self.poll_interval
            )
        except VultrError as exc:
            say(f"Vultr instance {machine.provider_id} did not become active: {exc}")
            return ""
        say(f"instance active at {instance.main_ip} ({instance.os or instance.os_id}, {instance.plan})")
        return _ip(instance.main_ip)

    async def create(self, scenario: str, machine: MachinePlan, script: str) -> ProvidedMachine:
        name = resource_name(scenario, machine.name)
        image = machine.image
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
                image if isinstance(image, int) else None,
                image_id=image if isinstance(image, str) else None,
                label=name,
                hostname=machine.hostname,
                tags=[scenario_tag(scenario), f"crc-machine:{machine.name}", *self.settings.tags],
                script_id=script_id,
                user_data=user_data,
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

    async def machines(self, scenario: str) -> list[ProvidedMachine]:
        prefix = resource_name(scenario, "")
        found = []
        try:
            async for instance in self.client.list_instances(tag=scenario_tag(scenario)):
                name = instance.label.removeprefix(prefix) if instance.label.startswith(prefix) else instance.label
                state = "/".join(s for s in (instance.status, instance.power_status, instance.server_status) if s)
                found.append(ProvidedMachine(name, instance.id, state, _ip(instance.main_ip)))
        except VultrError as exc:
            raise ProviderError(f"cannot list the Vultr instances of scenario {scenario!r}: {exc}") from exc
        return sorted(found, key=lambda m: m.name)

    async def destroy(self, scenario: str) -> Teardown:
        teardown = Teardown()
        try:
            instances = [i async for i in self.client.list_instances(tag=scenario_tag(scenario))]
            await asyncio.gather(*(self.client.delete_instance(i.id) for i in instances))
            teardown.machines = sorted(i.label or i.id for i in instances)
            prefix = resource_name(scenario, "")
            scripts = [s async for s in self.client.list_startup_scripts() if s.name.startswith(prefix)]
            for script in scripts:
                with contextlib.suppress(VultrNotFound):
                    await self.client.delete_startup_script(script.id)
            teardown.scripts = sorted(s.name for s in scripts)
        except VultrError as exc:
            raise ProviderError(f"Vultr teardown of scenario {scenario!r} stopped: {exc}; run it again") from exc
        return teardown

    async def close(self) -> None:
        await self.client.close()


def _ip(address: str) -> str:
    return "" if address in ("", "0.0.0.0") else address
