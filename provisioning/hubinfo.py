"""What a master learns from the hub before rendering startup scripts: its certificate, fetched over the same trust
as the master's own session (with a pin, the certificate must match it). Never the daemon build: that is the
master's own choice (``provisioning.release``)."""

from __future__ import annotations

import json
import ssl

import aiohttp

from clients.link import PinMismatch, hub_http_url, pinned_self_signed_pem


class HubInfoError(RuntimeError):
    """The hub cannot give what provisioning needs (no daemon wheel, unreachable, wrong certificate)."""


def _client_ssl(url: str, pin: str, ca_file: str | None) -> ssl.SSLContext | aiohttp.Fingerprint | bool:
    if not url.startswith("https://"):
        if pin:
            raise PinMismatch(f"a hub certificate pin is given but {url} does not use TLS")
        return True
    if pin:
        return aiohttp.Fingerprint(bytes.fromhex(pin.removeprefix("sha256:")))
    return ssl.create_default_context(cafile=ca_file)


async def served_hashes(hub_url: str, *, pin: str = "", ca_file: str | None = None) -> set[str]:
    """The SHA-256s of the files the hub's ``/v1/dist/`` lists: only to tell a user early that machines will not
    find what they need there (machines check every file against the master's hashes themselves).

    Raises:
        HubInfoError: unreachable or unreadable. PinMismatch: the hub's certificate is not the pinned one.
    """
    base = hub_http_url(hub_url)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(f"{base}/v1/dist/index.json", ssl=_client_ssl(base, pin, ca_file)) as answer,
        ):
            if answer.status != 200:
                raise HubInfoError(f"{base}/v1/dist/index.json answered {answer.status}")
            index = json.loads(await answer.read())
    except aiohttp.ServerFingerprintMismatch as exc:
        raise PinMismatch(f"the hub's certificate is not the pinned {pin}") from exc
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HubInfoError(f"cannot read the hub's dist index at {base}: {exc}") from exc
    files = index.get("files") if isinstance(index, dict) else None
    return {str(f.get("sha256")) for f in files if isinstance(f, dict)} if isinstance(files, list) else set()


async def self_signed_certificate(hub_url: str, pin: str) -> str:
    """The hub's certificate as PEM when it is self-signed and matches ``pin``; '' for plain HTTP or no pin.

    Machines then verify downloads and reports against exactly this certificate. A CA-signed hub needs
    nothing: machines trust it through their system's CAs.

    Raises:
        PinMismatch: the certificate is not the pinned one.
    """
    return await pinned_self_signed_pem(hub_url, pin)
