"""How the client, the provider and the scenario file deal with the real API's behaviours (issue 16), each
against the emulator modelling it, over a real socket on 127.0.0.1. No test measures time: waits are recorded
through the client's injectable ``sleep`` or compressed with the emulator's ``time_factor``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from provisioning.providers import ProviderError, VultrProvider
from provisioning.scenario_file import (
    MachinePlan,
    ProviderSettings,
    ScenarioFileError,
    parse_scenario,
    windows_hostname,
)
from provisioning.vultr import (
    VultrClient,
    VultrNotFound,
    VultrRateLimited,
    VultrServerError,
    VultrUnprocessable,
    retry_after_seconds,
)
from tests.provisioning.vultr_emulator import GuestBoot, VultrEmulator

KEY = "s3cret-vultr-key-real-api-16"
FAST: dict[str, Any] = {"backoff_initial": 0.001, "backoff_max": 0.005, "requests_per_second": None}


@pytest.fixture
async def emulator() -> AsyncIterator[VultrEmulator]:
    emulator = VultrEmulator(api_key=KEY, rate_limit=None)
    server = TestServer(emulator.app, host="127.0.0.1")
    await server.start_server()
    emulator.base_url = str(server.make_url("/v2"))
    try:
        yield emulator
    finally:
        await server.close()


@pytest.fixture
async def clients(emulator: VultrEmulator) -> AsyncIterator[Callable[..., VultrClient]]:
    made: list[VultrClient] = []

    def make(**options: Any) -> VultrClient:
        client = VultrClient(KEY, base_url=emulator.base_url, **{**FAST, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


class Sleeps:
    """A ``sleep`` that records what it was asked to wait, and returns at once."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def plan(name: str = "web", *, os: str = "linux", image: int | str = 2136) -> MachinePlan:
    return MachinePlan(name, os, name, "ams", "vc2-1c-2gb", image)


# ------------------------------------------------------------------------------------------------ Retry-After


async def test_retry_after_is_honoured_in_full(clients: Callable[..., VultrClient], emulator: VultrEmulator) -> None:
    sleeps = Sleeps()
    vultr = clients(sleep=sleeps)
    emulator.fail_next(429, retry_after="45")  # well beyond the old 12 s cap

    assert [i async for i in vultr.list_instances()] == []

    assert sleeps.asked == [45.0] and emulator.statuses() == [429, 200]


async def test_a_retry_after_beyond_the_bound_fails_at_once_saying_so(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    sleeps = Sleeps()
    vultr = clients(sleep=sleeps, rate_limit_wait_max=60.0)
    emulator.fail_next(429, retry_after="3600")

    with pytest.raises(VultrRateLimited, match="3600 s more would pass this client's 60 s bound"):
        await vultr.get_instance("x")
    assert sleeps.asked == [] and emulator.count() == 1


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


async def test_the_emulators_rate_limit_sends_retry_after(clients: Callable[..., VultrClient]) -> None:
    emulator = VultrEmulator(api_key=KEY, rate_limit=1, retry_after=2)
    server = TestServer(emulator.app, host="127.0.0.1")
    await server.start_server()
    try:
        sleeps = Sleeps()
        vultr = VultrClient(KEY, base_url=str(server.make_url("/v2")), sleep=sleeps, **FAST)
        with pytest.raises(VultrNotFound):
            await vultr.get_instance("a")
        with pytest.raises(VultrRateLimited):  # the recorded sleeps do not wait, so every retry is limited too
            await vultr.get_instance("b")
        assert sleeps.asked and all(asked >= 2.0 for asked in sleeps.asked)
        await vultr.close()
    finally:
        await server.close()


# ------------------------------------------------------------------------------------------------ errors


async def test_422_is_a_clear_validation_error(clients: Callable[..., VultrClient], emulator: VultrEmulator) -> None:
    emulator.fail_next(422, message="Validation Error")
    with pytest.raises(VultrUnprocessable, match="refused the request as invalid: Validation Error"):
        [i async for i in clients().list_instances()]


async def test_error_bodies_with_extra_keys_and_html_5xx(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    emulator.error_extras = True
    vultr = clients(max_retries=0)
    with pytest.raises(VultrNotFound, match="Invalid instance-id") as gone:
        await vultr.get_instance("nope")
    assert "request_id" not in str(gone.value)

    emulator.fail_next(502, html=True)
    with pytest.raises(VultrServerError, match="502 Bad Gateway"):
        await vultr.get_instance("nope")


@pytest.mark.parametrize("as_400", [False, True])
async def test_a_deleted_instance_is_gone_whether_404_or_400(
    clients: Callable[..., VultrClient], emulator: VultrEmulator, as_400: bool
) -> None:
    emulator.gone_as_400 = as_400
    vultr = clients()
    created = await vultr.create_instance("ewr", "vc2-1c-2gb", 2136, label="web")

    assert await vultr.delete_instance(created.id) is True
    assert await vultr.delete_instance(created.id) is False
    with pytest.raises(VultrNotFound):
        await vultr.get_instance(created.id)
    assert emulator.statuses("DELETE")[-1] == (400 if as_400 else 404)


async def test_a_startup_script_created_with_200_is_accepted(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    emulator.script_create_status = 200
    script = await clients().create_startup_script("s", "echo hi\n")
    assert script.script == "echo hi\n" and emulator.statuses("POST") == [200]


# ------------------------------------------------------------------------------------------------ 404 window


async def test_an_address_is_learned_through_the_404_window(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    emulator.time_factor, emulator.not_found_seconds = 0.01, 20.0  # 20 API s = 0.2 s
    emulator.polls_until_active, emulator.pending_seconds = None, (30.0, 90.0)
    vultr = clients(time_scale=0.01)
    created = await vultr.create_instance("ewr", "vc2-1c-2gb", 2136, label="web")

    ready = await vultr.wait_active(created.id, timeout=300, poll_interval=5)

    assert ready.has_ip and ready.status == "active"
    statuses = emulator.statuses("GET", f"/v2/instances/{created.id}")
    assert statuses[0] == 404 and statuses[-1] == 200


async def test_not_found_beyond_the_window_is_final(clients: Callable[..., VultrClient]) -> None:
    vultr = clients(time_scale=0.001)
    with pytest.raises(VultrNotFound, match="still not found 120 s after it was created"):
        await vultr.wait_active("00000000-dead", timeout=900, poll_interval=5)


# ------------------------------------------------------------------------------------------------ boot per OS


async def test_a_windows_boot_script_is_run_by_cmd_as_firstboot_cmd(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    vultr = clients()
    script = await vultr.create_startup_script("w", "@echo off\r\necho hi\r\n")
    created = await vultr.create_instance("ewr", "vc2-1c-2gb", 501, label="win", script_id=script.id)
    await vultr.wait_active(created.id, timeout=5, poll_interval=0.01)

    [boot] = emulator.boots
    assert (boot.os, boot.source, boot.path) == ("windows", "startup_script", "C:\\image\\firstboot.cmd")
    assert boot.command == ("cmd.exe", "/c", "C:\\image\\firstboot.cmd")
    assert boot.log_path == "C:\\image\\firstboot.log" and boot.content == b"@echo off\r\necho hi\r\n"


@pytest.mark.parametrize("cloudbase_init", [False, True])
async def test_user_data_on_windows_runs_only_with_cloudbase_init(
    clients: Callable[..., VultrClient], emulator: VultrEmulator, cloudbase_init: bool
) -> None:
    emulator.cloudbase_init = cloudbase_init
    booted: list[GuestBoot] = []
    emulator.on_boot = booted.append
    vultr = clients()
    created = await vultr.create_instance("ewr", "vc2-1c-2gb", 501, label="win", user_data=b"#ps1\nhi\n")
    await vultr.wait_active(created.id, timeout=5, poll_interval=0.01)

    assert [b.command for b in booted] == ([("cloudbase-init",)] if cloudbase_init else [])


# ------------------------------------------------------------------------------------------------ provider


@pytest.fixture
async def provider(clients: Callable[..., VultrClient]) -> VultrProvider:
    return VultrProvider(clients(), ProviderSettings(kind="vultr"), poll_interval=0.01, relist_after=0.01)


async def test_backups_are_always_sent_disabled_unless_enabled(
    clients: Callable[..., VultrClient], emulator: VultrEmulator
) -> None:
    off = VultrProvider(clients(), ProviderSettings(kind="vultr"))
    on = VultrProvider(clients(), ProviderSettings(kind="vultr", backups="enabled"))
    a = await off.create("shop", plan("a"), "echo\n")
    b = await on.create("shop", plan("b"), "echo\n")
    assert emulator.instances[a.provider_id].data["backups"] == "disabled"
    assert emulator.instances[b.provider_id].data["backups"] == "enabled"


async def test_a_snapshot_image_is_sent_as_snapshot_id(provider: VultrProvider, emulator: VultrEmulator) -> None:
    emulator.snapshots["7d3c-snap"] = "Windows 2022 Standard x64"
    made = await provider.create("shop", plan("w", os="windows", image="snapshot:7d3c-snap"), "@echo off\r\n")
    data = emulator.instances[made.provider_id].data
    assert data["snapshot_id"] == "7d3c-snap" and data["os_id"] == 164 and data["image_id"] == ""


async def test_a_windows_machine_gets_its_15_character_hostname(
    provider: VultrProvider, emulator: VultrEmulator
) -> None:
    made = await provider.create("shop", plan("windows-build-agent-01", os="windows", image=501), "@echo off\r\n")
    assert emulator.instances[made.provider_id].data["hostname"] == windows_hostname("windows-build-agent-01")


@pytest.mark.parametrize("mode", ["honoured", "ignored", "legacy_only"])
async def test_destroy_finds_the_scenario_whatever_the_tag_filter_does(
    provider: VultrProvider, emulator: VultrEmulator, mode: str
) -> None:
    emulator.tag_filter = mode  # type: ignore[assignment]
    await provider.create("shop", plan("a"), "echo\n")
    await provider.create("other", plan("b"), "echo\n")

    teardown = await provider.destroy("shop")

    assert teardown.machines == ["crc:shop/a"]
    assert [i.data["label"] for i in emulator.instances.values()] == ["crc:other/b"]


async def test_destroy_sees_through_a_listing_that_still_shows_the_deleted_instance(
    provider: VultrProvider, emulator: VultrEmulator
) -> None:
    emulator.list_lags_deletes = 2  # the deleted instance is still listed by the checks after the deletes
    made = await provider.create("shop", plan("a"), "echo\n")

    teardown = await provider.destroy("shop")

    assert teardown.machines == ["crc:shop/a"] and teardown.scripts == ["crc:shop/a"]
    assert emulator.instances == {} and emulator.scripts == {}
    assert emulator.statuses("GET", f"/v2/instances/{made.provider_id}") == [404]  # asked by id: gone
    assert emulator.statuses("DELETE", f"/v2/instances/{made.provider_id}") == [204]


async def test_destroy_deletes_an_instance_the_first_listing_left_out(
    provider: VultrProvider, emulator: VultrEmulator
) -> None:
    emulator.list_lags_creates = 1  # just created: missing from the next listing (kubermatic PR #1706)
    await provider.create("shop", plan("a"), "echo\n")

    teardown = await provider.destroy("shop")

    assert teardown.machines == ["crc:shop/a"] and emulator.instances == {} and emulator.scripts == {}


async def test_destroy_never_reports_success_while_an_instance_of_the_scenario_is_there(
    provider: VultrProvider, emulator: VultrEmulator
) -> None:
    await provider.create("shop", plan("a"), "echo\n")
    emulator.instances_survive_deletes = True  # every DELETE answers 204 and changes nothing

    with pytest.raises(ProviderError, match="still there after 3 rounds of deletes: crc:shop/a; run it again"):
        await provider.destroy("shop")
    assert emulator.scripts  # the scripts are kept for the next try: they are found by name then
    emulator.instances_survive_deletes = False
    again = await provider.destroy("shop")
    assert again.machines == ["crc:shop/a"] and emulator.instances == {} and emulator.scripts == {}


# ------------------------------------------------------------------------------------------------ hostnames


@pytest.mark.parametrize(
    ("name", "expected"),
    [("dev", "dev"), ("build_agent_1", "build-agent-1"), ("exactly15chars1", "exactly15chars1"), ("2024", "w2024")],
)
def test_windows_hostnames_that_fit_are_kept(name: str, expected: str) -> None:
    assert windows_hostname(name) == expected


def test_long_windows_names_are_truncated_with_a_hash_deterministically_and_uniquely() -> None:
    a, b = windows_hostname("windows-build-agent-01"), windows_hostname("windows-build-agent-02")
    assert len(a) <= 15 and len(b) <= 15 and a != b
    assert a.startswith("windows-bu-") and a == windows_hostname("windows-build-agent-01")


def test_the_scenario_file_derives_windows_hostnames_and_keeps_linux_ones() -> None:
    spec = parse_scenario(
        '[scenario]\nname = "s"\n[[machine]]\nname = "windows-build-agent-01"\nos = "windows"\n'
        '[[machine]]\nname = "a-very-long-linux-machine-name"\n'
        '[[machine]]\nname = "w"\nos = "windows"\nhostname = "BUILD01"\n'
    )
    assert len(spec.machine("windows-build-agent-01").hostname) == 15
    assert spec.machine("a-very-long-linux-machine-name").hostname == "a-very-long-linux-machine-name"
    assert spec.machine("w").hostname == "BUILD01"


def test_an_explicit_windows_hostname_over_15_is_refused() -> None:
    with pytest.raises(ScenarioFileError, match="'sixteen-chars-xx' is 16 characters; a Windows computer name"):
        parse_scenario(
            '[scenario]\nname = "s"\n[[machine]]\nname = "w"\nos = "windows"\nhostname = "sixteen-chars-xx"\n'
        )


def test_two_machines_cannot_be_given_the_same_hostname() -> None:
    with pytest.raises(ScenarioFileError, match="machine 'b': hostname 'WEB' is also machine 'a'"):
        parse_scenario(
            '[scenario]\nname = "s"\n[[machine]]\nname = "a"\nhostname = "web"\n'
            '[[machine]]\nname = "b"\nhostname = "WEB"\n'  # host and NetBIOS names ignore case
        )


def test_a_derived_hostname_taken_already_gets_a_hash_deterministically() -> None:
    text = (
        '[scenario]\nname = "s"\n[[machine]]\nname = "web_1"\n[[machine]]\nname = "web.1"\n'
        '[[machine]]\nname = "build_agent"\nos = "windows"\n[[machine]]\nname = "build.agent"\nos = "windows"\n'
        '[[machine]]\nname = "x"\nhostname = "build-agent-01"\n[[machine]]\nname = "build-agent-01"\n'
    )
    spec = parse_scenario(text)
    hostnames = [m.hostname for m in spec.machines]
    assert len({h.lower() for h in hostnames}) == len(hostnames) == 6
    assert hostnames[0] == "web-1" and hostnames[1].startswith("web-1-") and len(hostnames[1]) == 10
    assert hostnames[2] == "build-agent" and hostnames[3].startswith("build-agen-") and len(hostnames[3]) == 15
    assert hostnames[4] == "build-agent-01" and hostnames[5].startswith("build-agent-01-")  # the given one wins
    assert [m.hostname for m in parse_scenario(text).machines] == hostnames


def test_backups_and_snapshot_images_in_the_scenario_file() -> None:
    spec = parse_scenario(
        '[scenario]\nname = "s"\n[provider]\nbackups = "enabled"\nwindows_image = "snapshot:abc"\n'
        '[[machine]]\nname = "w"\nos = "windows"\n'
    )
    assert spec.provider.backups == "enabled" and spec.machine("w").image == "snapshot:abc"
    assert parse_scenario('[scenario]\nname = "s"\n[[machine]]\nname = "m"\n').provider.backups == "disabled"
    with pytest.raises(ScenarioFileError, match="backups"):
        parse_scenario('[scenario]\nname = "s"\n[provider]\nbackups = "yes"\n[[machine]]\nname = "m"\n')
