"""The daemon's own boot reports (``protocol.boot``): steps it takes outside any order, such as updating itself.

They go over plain HTTP(S) to ``/v1/boot`` like the startup script's, so they work even while the daemon has no
session (a new build that has not connected yet, a launcher rolling back). Best effort: never raises.
"""

from __future__ import annotations

import logging
import time

import aiohttp

from clients.daemon.config import DaemonConfig
from clients.link import hub_http_url
from protocol.boot import BootReport, BootStatus, report_key

log = logging.getLogger(__name__)


def client_ssl(config: DaemonConfig) -> aiohttp.Fingerprint | bool:
    """The daemon's trust for HTTP calls to its hub: the pinned certificate, else the system's CAs."""
    if config.hub_pin:
        return aiohttp.Fingerprint(bytes.fromhex(config.hub_pin.removeprefix("sha256:")))
    return True


async def report_step(config: DaemonConfig, step: str, status: BootStatus, detail: str = "") -> bool:
    """Tell the hub about a step (a ``boot_step`` event of this machine); False when it did not arrive."""
    report = BootReport(config.machine_id, int(time.time()), step, status, detail.encode("utf-8")[-8192:])
    headers = report.headers(report_key(config.identity))
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
            session.post(
                f"{hub_http_url(config.hub)}/v1/boot", data=report.detail, headers=headers, ssl=client_ssl(config)
            ) as answer,
        ):
            if answer.status == 202:
                return True
            log.info("boot report %s/%s refused: %s %s", step, status.value, answer.status, await answer.text())
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.info("boot report %s/%s not delivered: %s", step, status.value, exc)
    return False
