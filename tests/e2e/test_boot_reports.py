"""``POST /v1/boot`` on a real hub process: signed boot reports become ``boot_step`` events, all else is refused.

One hub serves the whole module (each test declares scenarios of its own, so the per-machine rate limits and
the replay memory never mix between tests); ``master`` is the conftest's SDK master, connected to it.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from clients.master.models import NewMachine
from clients.master.sdk import Master
from protocol import Identity
from protocol.boot import (
    HEADER_MACHINE,
    HEADER_SIGNATURE,
    HEADER_STATUS,
    HEADER_STEP,
    HEADER_TIME,
    MAX_DETAIL,
    MAX_SKEW,
    SIGNATURE_PREFIX,
    BootReport,
    BootStatus,
    report_key,
)
from protocol.messages import ScenarioCreate
from server.boot import DETAIL_SHOWN, REPORT_BURST
from tests.e2e.support import HubProcess, next_event

HEADERS = (HEADER_MACHINE, HEADER_TIME, HEADER_STEP, HEADER_STATUS, HEADER_SIGNATURE)
_names = iter(range(1_000_000))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the module (overrides the conftest's per-test hub): starting one per case would be slow."""
    process = HubProcess(tmp_path_factory.mktemp("boot-hub"))
    process.start()
    try:
        yield process
    finally:
        process.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def boot_url(hub: HubProcess) -> str:
    return hub.url.replace("ws://", "http://").replace("wss://", "https://").split("/v1/")[0] + "/v1/boot"


async def declare(master: Master, *machines: str) -> tuple[str, dict[str, NewMachine]]:
    name = f"boot{next(_names)}"
    minted = await master.create_scenario(name, [(m, "linux") for m in machines])
    return name, {m.name: m for m in minted}


def signed(
    machine: NewMachine | Identity, step: str = "installing-python", status: BootStatus = BootStatus.RUNNING,
    detail: bytes = b"", *, when: float | None = None, key: bytes | None = None,
) -> tuple[dict[str, str], bytes]:  # fmt: skip
    identity = machine.identity if isinstance(machine, NewMachine) else machine
    report = BootReport(identity.id, int(time.time() if when is None else when), step, status, detail)
    return report.headers(key or report_key(identity)), detail


async def post(
    http: aiohttp.ClientSession, hub: HubProcess, headers: dict[str, str], body: Any = b""
) -> tuple[int, dict[str, Any]]:
    async with http.post(boot_url(hub), headers=headers, data=body) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def refused(
    http: aiohttp.ClientSession, hub: HubProcess, headers: dict[str, str], body: Any, status: int, code: str
) -> None:
    got_status, answer = await post(http, hub, headers, body)
    assert (got_status, answer.get("error", {}).get("code")) == (status, code), answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"code", "message"}
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]


async def accepted(http: aiohttp.ClientSession, hub: HubProcess, headers: dict[str, str], body: Any) -> int:
    status, answer = await post(http, hub, headers, body)
    assert status == 202, answer
    assert answer["accepted"] is True and isinstance(answer["cursor"], int)
    return int(answer["cursor"])


# accepted reports
async def test_an_accepted_report_becomes_a_boot_step_event(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    sent_at = int(time.time())
    headers, body = signed(
        machines["web"], "installing-python", BootStatus.RUNNING, b"Collecting aiohttp\n", when=sent_at
    )
    cursor = await accepted(http, hub, headers, body)
    event = await next_event(master, scenario, after=0, kind="boot_step", machine="web", timeout=5)
    assert event.cursor == cursor
    assert event.data == {"step": "installing-python", "status": "running", "detail": "Collecting aiohttp\n",
                          "time": sent_at}  # fmt: skip

    headers, body = signed(machines["web"], "daemon-started", BootStatus.OK)
    later = await accepted(http, hub, headers, body)
    assert later > cursor
    event = await next_event(master, scenario, after=cursor, kind="boot_step", timeout=5)
    assert (event.cursor, event.data["step"], event.data["status"], event.data["detail"]) == (
        later, "daemon-started", "ok", "",
    )  # fmt: skip


async def test_the_event_shows_the_tail_of_a_long_detail(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    detail = b"".join(b"line %05d\n" % i for i in range(MAX_DETAIL // 11))
    assert DETAIL_SHOWN < len(detail) <= MAX_DETAIL
    headers, body = signed(machines["web"], "pip-install", BootStatus.FAILED, detail)
    await accepted(http, hub, headers, body)
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert event.data["status"] == "failed"
    assert len(event.data["detail"]) == DETAIL_SHOWN
    assert event.data["detail"] == detail[-DETAIL_SHOWN:].decode()


async def test_invalid_utf8_in_the_detail_is_shown_with_replacement_characters(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    headers, body = signed(machines["web"], "step", BootStatus.RUNNING, b"caf\xc3\xa9 \xff\xfe end")
    await accepted(http, hub, headers, body)
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert event.data["detail"] == "café \ufffd\ufffd end"


async def test_a_body_sent_in_slow_chunks_is_read_whole(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    """Chunked transfer (no Content-Length), in pieces arriving apart, as a slow proxy would forward them."""
    scenario, machines = await declare(master, "web")
    detail = b"0123456789" * 300

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(detail), 1000):
            yield detail[start : start + 1000]
            await asyncio.sleep(0.05)

    headers, _ = signed(machines["web"], "chunked", BootStatus.OK, detail)
    await accepted(http, hub, headers, pieces())
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert event.data["detail"] == detail.decode()


async def test_header_names_are_case_insensitive(hub: HubProcess, master: Master, http: aiohttp.ClientSession) -> None:
    """HTTP header names carry no case (HTTP/2 proxies lower-case them all)."""
    scenario, machines = await declare(master, "web")
    headers, body = signed(machines["web"], "lower", BootStatus.OK, b"ok")
    await accepted(http, hub, {k.lower(): v for k, v in headers.items()}, body)
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert event.data["step"] == "lower"


# refusals: malformed reports
def _without(header: str) -> Any:
    def build(headers: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k != header}

    return build


def _with(header: str, value: str) -> Any:
    def build(headers: dict[str, str]) -> dict[str, str]:
        return {**headers, header: value}

    return build


MALFORMED: dict[str, Any] = {
    **{f"missing-{h}": _without(h) for h in HEADERS},
    "time-not-an-integer": _with(HEADER_TIME, "12.5"),
    "time-a-word": _with(HEADER_TIME, "now"),
    "step-upper-case": _with(HEADER_STEP, "Installing"),
    "step-with-spaces": _with(HEADER_STEP, "installing python"),
    "step-65-chars": _with(HEADER_STEP, "a" * 65),
    "step-empty": _with(HEADER_STEP, ""),
    "status-unknown": _with(HEADER_STATUS, "done"),
    "signature-without-prefix": lambda h: {**h, HEADER_SIGNATURE: h[HEADER_SIGNATURE].removeprefix(SIGNATURE_PREFIX)},
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_report_is_bad_field(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession, case: str
) -> None:
    _, machines = await declare(master, "web")
    headers, body = signed(machines["web"], detail=b"output")
    await refused(http, hub, MALFORMED[case](headers), body, 400, "bad_field")


async def test_a_body_over_the_limit_is_frame_too_large_with_or_without_content_length(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    _, machines = await declare(master, "web")
    detail = b"x" * (MAX_DETAIL + 1)
    headers, body = signed(machines["web"], detail=detail)
    await refused(http, hub, headers, body, 413, "frame_too_large")

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(detail), 4096):
            yield detail[start : start + 4096]

    await refused(http, hub, headers, chunked(), 413, "frame_too_large")


# refusals: who may report
async def test_an_unknown_machine_is_refused(hub: HubProcess, master: Master, http: aiohttp.ClientSession) -> None:
    stranger = Identity.generate(secrets.token_bytes)
    headers, body = signed(stranger)
    await refused(http, hub, headers, body, 403, "unknown_identity")


async def test_a_machine_declared_without_a_report_key_is_refused_like_an_unknown_one(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    machine = Identity.generate(secrets.token_bytes)
    wire = [{"name": "old", "os": "linux", "role": "old", "public_key": machine.public.to_text()}]
    await master.request(ScenarioCreate("keyless", wire), scenario="keyless")
    headers, body = signed(machine)  # signed with the key it would have had
    await refused(http, hub, headers, body, 403, "unknown_identity")


async def test_a_report_with_a_wrong_mac_is_refused(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    _, machines = await declare(master, "web")
    headers, _ = signed(machines["web"], detail=b"real output")
    await refused(http, hub, headers, b"forged output", 403, "bad_mac")
    await refused(http, hub, {**headers, HEADER_STEP: "other-step"}, b"real output", 403, "bad_mac")
    await refused(http, hub, {**headers, HEADER_STATUS: "ok"}, b"real output", 403, "bad_mac")
    await refused(http, hub, headers, b"real output".upper(), 403, "bad_mac")


async def test_a_report_for_one_machine_signed_with_anothers_key_is_refused(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "a", "b")
    a, b = machines["a"], machines["b"]
    headers, body = signed(a, key=report_key(b.identity))
    await refused(http, hub, headers, body, 403, "bad_mac")
    # and B's own report, re-addressed to A
    headers, body = signed(b)
    await refused(http, hub, {**headers, HEADER_MACHINE: a.id}, body, 403, "bad_mac")
    # a key of another scenario's machine does not help either
    _, others = await declare(master, "c")
    headers, body = signed(a, key=report_key(others["c"].identity))
    await refused(http, hub, headers, body, 403, "bad_mac")
    # nothing was recorded: the first boot_step is A's own next report
    cursor = await accepted(http, hub, *signed(a, "own-key"))
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert (event.cursor, event.machine, event.data["step"]) == (cursor, "a", "own-key")


@pytest.mark.parametrize("offset", [MAX_SKEW + 60, -(MAX_SKEW + 60)])
async def test_a_report_off_the_hubs_clock_is_stale(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession, offset: float
) -> None:
    _, machines = await declare(master, "web")
    headers, body = signed(machines["web"], when=time.time() + offset)
    await refused(http, hub, headers, body, 400, "stale_timestamp")


async def test_a_replayed_report_is_refused(hub: HubProcess, master: Master, http: aiohttp.ClientSession) -> None:
    _, machines = await declare(master, "web")
    headers, body = signed(machines["web"], detail=b"once")
    await accepted(http, hub, headers, body)
    await refused(http, hub, headers, body, 409, "bad_sequence")
    # the same MAC spelled in upper-case hex is the same report
    upper = SIGNATURE_PREFIX + headers[HEADER_SIGNATURE].removeprefix(SIGNATURE_PREFIX).upper()
    await refused(http, hub, {**headers, HEADER_SIGNATURE: upper}, body, 409, "bad_sequence")
    await refused(http, hub, {**headers, HEADER_SIGNATURE: f"  {headers[HEADER_SIGNATURE]}  "}, body, 409,
                  "bad_sequence")  # fmt: skip


async def test_a_flood_of_reports_is_rate_limited_per_machine(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    _, machines = await declare(master, "noisy", "quiet")
    statuses = []
    for i in range(int(REPORT_BURST) + 10):
        headers, body = signed(machines["noisy"], f"step-{i}")
        statuses.append((await post(http, hub, headers, body))[0])
    assert statuses[:40] == [202] * 40
    assert 429 in statuses[int(REPORT_BURST) - 1 :]
    headers, body = signed(machines["noisy"], "one-more")
    await refused(http, hub, headers, body, 429, "rate_limited")
    headers, body = signed(machines["quiet"], "unaffected")
    await accepted(http, hub, headers, body)


# the hub after refusals, and after the scenario is gone
async def test_the_hub_still_accepts_good_reports_after_bad_ones(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    web = machines["web"]
    headers, body = signed(web, detail=b"x")
    await refused(http, hub, _without(HEADER_TIME)(headers), body, 400, "bad_field")
    await refused(http, hub, headers, b"y", 403, "bad_mac")
    await refused(http, hub, *signed(web, when=time.time() - 3600), 400, "stale_timestamp")
    await refused(http, hub, headers, b"x" * (MAX_DETAIL + 1), 413, "frame_too_large")
    async with http.post(boot_url(hub), data=b"not a report") as response:
        assert response.status == 400
    headers, body = signed(web, "after-the-storm", BootStatus.OK, b"fine")
    cursor = await accepted(http, hub, headers, body)
    event = await next_event(master, scenario, after=0, kind="boot_step", timeout=5)
    assert (event.cursor, event.data["step"]) == (cursor, "after-the-storm")
    assert [s["name"] for s in await master.scenarios()].count(scenario) == 1


async def test_reports_are_refused_once_the_scenario_is_deleted(
    hub: HubProcess, master: Master, http: aiohttp.ClientSession
) -> None:
    scenario, machines = await declare(master, "web")
    await accepted(http, hub, *signed(machines["web"], "before"))
    await master.delete_scenario(scenario)
    await refused(http, hub, *signed(machines["web"], "after"), 403, "unknown_identity")
