"""``crc-daemon enroll``: this machine joins a scenario's ensemble with an enrollment token (``protocol.enrollment``).

The key pair is made here and its private half never leaves the machine; the hub is sent the token's signed
claims and this machine's registration, MAC'd under the token's secret (which the hub never sees). The master's
key comes from the token, so the daemon obeys that master from its first connection, whatever the hub says.
"""

from __future__ import annotations

import base64
import re
import secrets
import socket
from typing import Any

import aiohttp

from clients.daemon.config import DaemonConfig, Ensemble
from clients.link import hub_http_url
from protocol import CrcError, Identity
from protocol.boot import report_key
from protocol.enrollment import EnrollmentToken

NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,62}$")


class EnrollError(CrcError):
    """The machine did not join (the hub refused, or could not be reached); nothing was written."""


def default_name() -> str:
    """This machine's host name, as a machine name: lower case, up to the first dot, other characters as '-'."""
    host = socket.gethostname().split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_.\-]", "-", host).strip("-.")[:63]
    return name if NAME.match(name) else "machine"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def enroll(
    hub: str, token: EnrollmentToken, name: str, os_name: str, *, hub_pin: str = "", timeout: float = 30.0
) -> DaemonConfig:
    """Register this machine with ``token`` and return its daemon config (not written yet).

    Raises:
        EnrollError: the hub refused (with its reason) or could not be reached.
    """
    identity = Identity.generate(secrets.token_bytes)
    registration = token.register(name, os_name, identity, report_key(identity).hex())
    body: dict[str, Any] = {
        "claims": token.claims.to_wire(),
        "signature": _b64(token.signature),
        "registration": {**registration.to_wire(), "proof": _b64(registration.proof)},
    }
    ssl: aiohttp.Fingerprint | bool = (
        aiohttp.Fingerprint(bytes.fromhex(hub_pin.removeprefix("sha256:"))) if hub_pin else True
    )
    url = f"{hub_http_url(hub)}/v1/enroll"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, json=body, ssl=ssl) as answer,
        ):
            data = await answer.json(content_type=None) if answer.content_length != 0 else {}
            if answer.status != 201:
                error = data.get("error", {}) if isinstance(data, dict) else {}
                raise EnrollError(f"the hub refused: {error.get('message') or f'HTTP {answer.status}'}")
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        raise EnrollError(f"cannot reach the hub at {url}: {exc or type(exc).__name__}") from None
    # A joiner that needs no approval knows its role from the token itself, so it plays its ensemble's
    # compositions before its master has looked at it; one that waits for approval needs its certificate.
    claims = token.claims
    ensemble = None if claims.approve else Ensemble(claims.role, dict(claims.labels))
    return DaemonConfig(hub, claims.scenario, name, identity, claims.master_key, hub_pin=hub_pin, ensemble=ensemble,
                        sealed=claims.sealed)  # fmt: skip
