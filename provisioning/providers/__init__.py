"""Where machines come from: ``Provider`` (base), ``VultrProvider``, ``LocalProvider``."""

from provisioning.providers.base import ProvidedMachine, Provider, ProviderError, Teardown
from provisioning.providers.local import LocalProvider
from provisioning.providers.vultr import VultrProvider

__all__ = ["LocalProvider", "ProvidedMachine", "Provider", "ProviderError", "Teardown", "VultrProvider"]
