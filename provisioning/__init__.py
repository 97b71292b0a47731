"""Provisioning machines for scenarios.

``provisioning.vultr``: an async client for the Vultr API v2 (startup scripts and instances; retries with jittered
backoff, a client-side throttle under the API's 30 requests/s, cursor pagination, waiting until an instance is
active with an IP). A local emulator of that API lives in ``tests/provisioning/vultr_emulator.py``.
Still to come: booting instances by running their startup script locally, and a local provider.
"""

from provisioning.vultr import (
    Instance,
    StartupScript,
    VultrAuthError,
    VultrBadRequest,
    VultrClient,
    VultrConnectionError,
    VultrError,
    VultrNotFound,
    VultrRateLimited,
    VultrServerError,
    VultrTimeout,
)

__all__ = [
    "Instance",
    "StartupScript",
    "VultrAuthError",
    "VultrBadRequest",
    "VultrClient",
    "VultrConnectionError",
    "VultrError",
    "VultrNotFound",
    "VultrRateLimited",
    "VultrServerError",
    "VultrTimeout",
]
