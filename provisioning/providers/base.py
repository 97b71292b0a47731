"""The provider interface: where a scenario's machines come from (Vultr, or this computer for demos and tests).

A provider creates a machine that runs a given startup script at first boot, lists a scenario's machines, and
destroys all of them (and anything else it made for the scenario, such as uploaded scripts). ``destroy`` finds
what to delete from the provider's own records (Vultr tags, the local state folder), not from the master's
memory, so it works after a crash and is safe to run twice.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from provisioning.scenario_file import MachinePlan


class ProviderError(RuntimeError):
    """The provider could not do what was asked; the message says what and why."""


@dataclass(frozen=True)
class ProvidedMachine:
    """A machine as the provider sees it.

    Attributes:
        name: the machine's name in the scenario.
        provider_id: the provider's own id (a Vultr instance id, a local folder name).
        state: the provider's status words (``pending``, ``active``, ``booting``, ``running``, ``stopped``...).
        address: the machine's main IP address, once it has one.
    """

    name: str
    provider_id: str
    state: str
    address: str = ""


@dataclass
class Teardown:
    """What ``destroy`` removed."""

    machines: list[str] = field(default_factory=list)
    scripts: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.machines or self.scripts or self.other)


class Provider(ABC):
    kind: str = ""

    async def prepare(self, scenario: str, hub_url: str) -> str:
        """Make what the scenario's machines need before the first one is created (a network, say).

        Returns:
            the hub URL as the machines must see it (the master's, unless they live elsewhere).
        """
        return hub_url

    @abstractmethod
    async def create(self, scenario: str, machine: MachinePlan, script: str) -> ProvidedMachine:
        """Create one machine that runs ``script`` at its first boot."""

    async def follow(self, machine: ProvidedMachine, say: Callable[[str], None]) -> str:
        """Watch a just-created machine until the provider says it is running; its address ('' if none).

        ``say`` reports what the provider sees (e.g. "instance active at 192.0.2.7"). The default has nothing
        to watch: the startup script's own reports tell the rest.
        """
        return machine.address

    @abstractmethod
    async def machines(self, scenario: str) -> list[ProvidedMachine]:
        """The scenario's machines that exist now."""

    @abstractmethod
    async def destroy(
        self, scenario: str, say: Callable[[str], None] | None = None, *, only: Collection[str] = ()
    ) -> Teardown:
        """Delete every machine and script of the scenario; nothing left is not an error.

        ``say`` hears what the provider waits for (e.g. Vultr's install lock), when it waits. ``only``: just
        these machines (and their scripts), leaving the scenario's other machines and shared parts alone.
        """

    async def close(self) -> None:
        """Release connections (the provider is not used afterwards)."""
        return None
