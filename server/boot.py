"""``POST /v1/boot``: startup scripts report their steps here before the machine's daemon exists.

Each report is authenticated with the machine's report key (``protocol.boot``) and becomes a ``boot_step``
event in the scenario's log, so ``crc watch`` and ``crc up`` show "installing python", "daemon started"... live.
A report is accepted once by the whole hub: a replayed one (same signature within the clock window) is refused,
also after a restart or by another replica, since the memory of reports seen is in the store.
"""

from __future__ import annotations

import time

from aiohttp import web

from protocol import ErrorCode, ProtocolError
from protocol.boot import MAX_DETAIL, MAX_SKEW, parse_report, verify_report
from protocol.events import BootStep
from server.core import stores
from server.core.appkeys import HUB_KEY
from server.guard import TokenBucket
from server.store import StoreError

REPORTS_PER_SECOND = 5.0
REPORT_BURST = 50.0
DETAIL_SHOWN = 4096


def json_error(status: int, code: ErrorCode | str, message: str) -> web.Response:
    """The hub's HTTP error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return web.json_response({"error": {"code": str(code), "message": message}}, status=status)


class BootReports:
    """Per-machine rate limits for boot reports (per hub process: a replica's own budget is enough). The replay
    memory is the store's (``Store.first_boot_report``), shared by every replica and kept across restarts."""

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def allow(self, machine_id: str, now: float) -> bool:
        bucket = self.buckets.setdefault(machine_id, TokenBucket(REPORTS_PER_SECOND, REPORT_BURST))
        return bucket.take(now)


BOOT_KEY = web.AppKey("boot_reports", BootReports)


async def boot_report(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    reports = request.app[BOOT_KEY]
    if request.content_length is not None and request.content_length > MAX_DETAIL:
        return json_error(413, ErrorCode.FRAME_TOO_LARGE, f"a boot report carries at most {MAX_DETAIL} bytes")
    body = b""
    while len(body) <= MAX_DETAIL:  # read() returns what has arrived so far: loop to the end (or the limit)
        chunk = await request.content.read(MAX_DETAIL + 1 - len(body))
        if not chunk:
            break
        body += chunk
    now = time.time()
    try:
        report, signature = parse_report(request.headers, body)  # header names are case-insensitive
    except ProtocolError as exc:
        return json_error(413 if exc.code is ErrorCode.FRAME_TOO_LARGE else 400, exc.code, exc.message)
    try:
        machine = await stores.machines(hub).machine(report.machine)
    except StoreError:
        return json_error(503, ErrorCode.UNAVAILABLE, "the hub's store is unavailable; retry later")
    if machine is None or not machine.report_key:
        # Same answer for an unknown machine and one without a report key: no probing for ids.
        return json_error(403, ErrorCode.UNKNOWN_IDENTITY, "no machine with that id accepts boot reports")
    try:
        verify_report(report, signature, bytes.fromhex(machine.report_key), now)
    except ProtocolError as exc:
        return json_error(403 if exc.code is ErrorCode.BAD_MAC else 400, exc.code, exc.message)
    # Counted only once authenticated, so forged reports cannot use up a machine's budget.
    if not reports.allow(machine.id, now):
        return json_error(429, ErrorCode.RATE_LIMITED, "too many boot reports from this machine; slow down")
    # A report is accepted while its time is within MAX_SKEW of a replica's clock; remembered twice as long, so
    # replicas whose clocks differ by up to MAX_SKEW still all see it as a replay.
    remember_until = max(float(report.time), now) + 2 * MAX_SKEW
    try:
        first = await stores.boot_reports(hub).first_boot_report(machine.id, signature.lower(), remember_until, now)
    except StoreError:
        return json_error(503, ErrorCode.UNAVAILABLE, "the hub's store is unavailable; retry later")
    if not first:  # the MAC as verified, whatever the hex case
        return json_error(409, ErrorCode.BAD_SEQUENCE, "this boot report was received already (replay)")
    detail = report.detail[-DETAIL_SHOWN:].decode("utf-8", "replace")
    step = BootStep(step=report.step, status=report.status.value, detail=detail, time=report.time)
    try:
        event = await hub.emit(machine.scenario_id, step, machine.name)
    except StoreError:
        return json_error(503, ErrorCode.UNAVAILABLE, "the hub's store is unavailable; retry later")
    return web.json_response({"accepted": True, "cursor": event.cursor}, status=202)


def add_boot_routes(app: web.Application) -> None:
    app[BOOT_KEY] = BootReports()
    app.router.add_post("/v1/boot", boot_report)
