"""The Vultr API v2 client against the local emulator, over a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

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
from tests.provisioning.vultr_emulator import GuestBoot, VultrEmulator

KEY = "s3cret-vultr-key-DO-NOT-LEAK-0123456789"
FAST = {"backoff_initial": 0.001, "backoff_max": 0.005, "requests_per_second": None}

Connect = Callable[..., VultrClient]


@pytest.fixture
async def emulator() -> AsyncIterator[VultrEmulator]:
    emulator = VultrEmulator(api_key=KEY)
    server = TestServer(emulator.app, host="127.0.0.1")
    await server.start_server()
    emulator.base_url = str(server.make_url("/v2"))
    try:
        yield emulator
    finally:
        await server.close()


@pytest.fixture
async def connect(emulator: VultrEmulator) -> AsyncIterator[Connect]:
    """Makes clients for the emulator (fast backoff, no throttle unless asked); closes them after the test."""
    clients: list[VultrClient] = []

    def make(api_key: str = KEY, **options: Any) -> VultrClient:
        client = VultrClient(api_key, base_url=emulator.base_url, **{**FAST, **options})
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
def vultr(connect: Connect) -> VultrClient:
    return connect()


async def debian(vultr: VultrClient, label: str = "web", **options: Any) -> Instance:
    return await vultr.create_instance("ewr", "vc2-1c-2gb", 2136, label=label, **options)


# ------------------------------------------------------------------------------------------------ startup scripts


async def test_a_startup_script_is_created_listed_and_deleted(vultr: VultrClient, emulator: VultrEmulator) -> None:
    script = await vultr.create_startup_script("firstboot", "#!/bin/bash\necho hi > /tmp/hi\n")

    assert script.name == "firstboot" and script.type == "boot"
    assert script.script == "#!/bin/bash\necho hi > /tmp/hi\n"
    assert base64.b64decode(emulator.scripts[script.id]["script"]) == b"#!/bin/bash\necho hi > /tmp/hi\n"
    assert [s.id async for s in vultr.list_startup_scripts()] == [script.id]
    assert (await vultr.get_startup_script(script.id)).script == script.script

    await vultr.delete_startup_script(script.id)
    assert [s async for s in vultr.list_startup_scripts()] == []
    with pytest.raises(VultrNotFound):
        await vultr.delete_startup_script(script.id)


async def test_startup_scripts_are_listed_across_pages(vultr: VultrClient, emulator: VultrEmulator) -> None:
    for n in range(5):
        await vultr.create_startup_script(f"s{n}", f"echo {n}", type="pxe" if n % 2 else "boot")

    listed = [s async for s in vultr.list_startup_scripts(per_page=2)]

    assert [s.name for s in listed] == ["s0", "s1", "s2", "s3", "s4"]
    assert [s.type for s in listed] == ["boot", "pxe", "boot", "pxe", "boot"]
    assert all(s.script is None for s in listed)  # lists leave the script out
    assert emulator.count("GET", "/v2/startup-scripts") == 3


async def test_the_emulator_rejects_a_script_that_is_not_base64(emulator: VultrEmulator, connect: Connect) -> None:
    vultr = connect()
    with pytest.raises(VultrBadRequest, match="base64"):
        await vultr._request("POST", "/startup-scripts", json_body={"name": "x", "script": "not base64!"}, ok=(201,))


# ------------------------------------------------------------------------------------------------ instances


async def test_an_instance_is_created_with_a_script_and_tags_and_waited_until_active(
    vultr: VultrClient, emulator: VultrEmulator
) -> None:
    emulator.polls_until_active = 3
    script = await vultr.create_startup_script("boot", "echo booted")

    created = await debian(vultr, hostname="web-1", tags=["crc", "scenario-shop"], script_id=script.id)

    assert created.status == "pending" and created.main_ip == "0.0.0.0" and not created.is_ready
    assert created.default_password and created.default_password not in repr(created)
    assert created.tags == ("crc", "scenario-shop") and created.hostname == "web-1" and created.os_id == 2136
    assert emulator.instances[created.id].script_id == script.id

    ready = await vultr.wait_active(created.id, timeout=5, poll_interval=0.01)

    assert ready.status == "active" and ready.power_status == "running" and ready.main_ip != "0.0.0.0"
    assert ready.server_status == "installingbooting"  # active is not booted
    assert ready.default_password is None  # only the create answer carries it
    assert emulator.count("GET", f"/v2/instances/{created.id}") == 3


async def test_waiting_gives_up_after_the_timeout(vultr: VultrClient, emulator: VultrEmulator) -> None:
    emulator.polls_until_active = None
    created = await debian(vultr)

    with pytest.raises(VultrTimeout, match="not ready") as caught:
        await vultr.wait_active(created.id, timeout=0.05, poll_interval=0.01)
    assert isinstance(caught.value, TimeoutError)


async def test_an_instance_becomes_active_after_the_configured_seconds(
    vultr: VultrClient, emulator: VultrEmulator
) -> None:
    emulator.polls_until_active, emulator.seconds_until_active = None, 0.1
    created = await debian(vultr)
    assert not (await vultr.get_instance(created.id)).is_ready

    ready = await vultr.wait_active(created.id, timeout=5, poll_interval=0.02)

    assert ready.is_ready


async def test_user_data_is_sent_as_base64_and_read_back(vultr: VultrClient, emulator: VultrEmulator) -> None:
    payload = b"#cloud-config\n\x00\xffbinary ok\n"
    created = await debian(vultr, user_data=payload)

    assert emulator.user_data_of(created.id) == payload
    assert await vultr.get_user_data(created.id) == payload


async def test_instances_are_listed_across_pages(vultr: VultrClient, emulator: VultrEmulator) -> None:
    created = [await debian(vultr, label=f"box-{n}") for n in range(7)]

    listed = [i async for i in vultr.list_instances(per_page=3)]

    assert [i.id for i in listed] == [i.id for i in created]
    cursors = [seen.query.get("cursor") for seen in emulator.requests if seen.path == "/v2/instances"]
    assert len(cursors) == 7 + 3 and cursors[-3] is None and all(cursors[-2:])
    assert all(seen.query["per_page"] == "3" for seen in emulator.requests if seen.method == "GET")


async def test_instances_are_filtered_by_tag_and_label(vultr: VultrClient) -> None:
    await debian(vultr, label="db", tags=["shop"])
    web = await debian(vultr, label="web", tags=["shop", "front"])
    await debian(vultr, label="other", tags=["blog"])

    assert {i.label async for i in vultr.list_instances(tag="shop")} == {"db", "web"}
    assert [i.id async for i in vultr.list_instances(label="web")] == [web.id]
    assert [i.id async for i in vultr.list_instances(tag="front", label="web")] == [web.id]
    assert [i async for i in vultr.list_instances(tag="nothing")] == []


async def test_deleting_an_instance_twice_is_fine(vultr: VultrClient, emulator: VultrEmulator) -> None:
    created = await debian(vultr)

    await vultr.delete_instance(created.id)
    await vultr.delete_instance(created.id)

    assert emulator.statuses("DELETE") == [204, 404]
    with pytest.raises(VultrNotFound, match="Invalid instance-id"):
        await vultr.get_instance(created.id)


async def test_deleting_a_locked_instance_is_retried_until_it_unlocks(
    connect: Connect, emulator: VultrEmulator
) -> None:
    vultr = connect(backoff_initial=0.02, backoff_max=0.05, max_retries=8)
    emulator.locked_deletes, emulator.polls_until_active, emulator.seconds_until_active = True, None, 0.1
    created = await debian(vultr)

    await vultr.delete_instance(created.id)

    statuses = emulator.statuses("DELETE")
    assert statuses[0] == 500 and statuses[-1] == 204
    assert created.id not in emulator.instances


async def test_a_create_needs_exactly_one_image_source(vultr: VultrClient, emulator: VultrEmulator) -> None:
    with pytest.raises(ValueError, match="exactly one image source"):
        await vultr.create_instance("ewr", "vc2-1c-1gb", label="x")
    with pytest.raises(ValueError, match="exactly one image source"):
        await vultr.create_instance("ewr", "vc2-1c-1gb", 2136, image_id="img", label="x")
    with pytest.raises(VultrBadRequest, match="Server add failed: invalid startup script"):
        await debian(vultr, script_id="no-such-script")
    assert emulator.count("POST") == 1


async def test_the_emulator_validates_create_requests(vultr: VultrClient) -> None:
    async def post(body: dict[str, Any]) -> None:
        await vultr._request("POST", "/instances", json_body=body, ok=(202,))

    with pytest.raises(VultrBadRequest, match="region"):
        await post({"plan": "vc2-1c-1gb", "os_id": 2136})
    with pytest.raises(VultrBadRequest, match="exactly one"):
        await post({"region": "ewr", "plan": "vc2-1c-1gb", "os_id": 2136, "app_id": 3})
    with pytest.raises(VultrBadRequest, match="user_data"):
        await post({"region": "ewr", "plan": "vc2-1c-1gb", "os_id": 2136, "user_data": "%%%"})
    await post({"region": "ewr", "plan": "vc2-1c-1gb", "os_id": 2136, "tags": None, "block_devices": None})


async def test_a_body_without_a_json_content_type_is_refused(emulator: VultrEmulator, vultr: VultrClient) -> None:
    session = vultr._get_session()
    async with session.post(
        f"{emulator.base_url}/startup-scripts",
        data=b'{"name":"x","script":"ZWNobw=="}',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["status"] == 400


async def test_the_boot_hook_receives_what_the_guest_runs(vultr: VultrClient, emulator: VultrEmulator) -> None:
    booted: list[GuestBoot] = []
    emulator.on_boot = booted.append
    script = await vultr.create_startup_script("setup", "#!/bin/sh\ncrc-daemon --config /etc/crc.toml\n")
    with_script = await debian(vultr, script_id=script.id)
    with_user_data = await debian(vultr, label="ud", user_data=b"#cloud-config\n")
    plain = await debian(vultr, label="plain")

    for instance in (with_script, with_user_data, plain):
        await vultr.wait_active(instance.id, timeout=5, poll_interval=0.01)
        await vultr.get_instance(instance.id)  # later reads do not boot it again

    [boot_script, boot_user_data] = booted
    assert boot_script.instance["id"] == with_script.id and boot_script.os == "linux"
    assert boot_script.text == "#!/bin/sh\ncrc-daemon --config /etc/crc.toml\n"
    assert boot_script.command == ("/bin/bash", "/tmp/firstboot.exec")
    assert boot_user_data.instance["id"] == with_user_data.id
    assert (boot_user_data.source, boot_user_data.command, boot_user_data.content) == (
        "user_data",
        ("cloud-init",),
        b"#cloud-config\n",
    )


# ------------------------------------------------------------------------------------------------ retries and errors


async def test_a_429_then_success_is_retried(vultr: VultrClient, emulator: VultrEmulator) -> None:
    emulator.fail_next(429)

    script = await vultr.create_startup_script("s", "echo")

    assert emulator.statuses("POST") == [429, 201]
    assert script.id in emulator.scripts


async def test_a_500_on_a_get_is_retried(vultr: VultrClient, emulator: VultrEmulator) -> None:
    created = await debian(vultr)
    emulator.fail_next(500, 503)

    assert (await vultr.get_instance(created.id)).id == created.id
    assert emulator.statuses("GET") == [500, 503, 200]


async def test_a_create_instance_is_not_retried_on_500_but_is_on_429(
    vultr: VultrClient, emulator: VultrEmulator
) -> None:
    emulator.fail_next(500, message="Server add failed: internal")
    with pytest.raises(VultrServerError, match="Server add failed: internal") as caught:
        await debian(vultr)
    assert caught.value.status == 500
    assert emulator.count("POST", "/v2/instances") == 1

    emulator.fail_next(429, 429)
    await debian(vultr)
    assert emulator.statuses("POST", "/v2/instances") == [500, 429, 429, 202]


async def test_retries_run_out_with_the_api_text(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(max_retries=2)
    emulator.fail_next(429, 429, 429, message="Too many requests, slow down.")
    with pytest.raises(VultrRateLimited, match=r"Too many requests, slow down\.") as limited:
        await vultr.get_instance("any")
    assert limited.value.status == 429 and emulator.count() == 3

    emulator.fail_next(500, 500, 500, message="Internal server error.")
    with pytest.raises(VultrError, match="Internal server error") as failed:
        await vultr.delete_instance("any")
    assert failed.value.status == 500 and emulator.count("DELETE") == 3


async def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key(
    connect: Connect, emulator: VultrEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-key-that-must-stay-secret-987"
    vultr = connect(api_key=wrong)
    emulator.fail_next(429)  # one retry, so the retry path logs too

    with pytest.raises(VultrAuthError, match=r"Invalid API token\.") as caught:
        await vultr.get_instance("any")

    assert caught.value.status == 401 and emulator.count() == 2
    for text in (str(caught.value), repr(caught.value), repr(vultr), caplog.text):
        assert wrong not in text
    assert "Vultr GET /instances/any" in caplog.text  # the logs were captured, just without the key


async def test_the_key_is_redacted_even_if_the_api_echoes_it(
    vultr: VultrClient, emulator: VultrEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator.fail_next(400, message=f"bad token {KEY}")
    with pytest.raises(VultrBadRequest) as caught:
        await vultr.get_instance("any")
    assert KEY not in str(caught.value) and "<redacted>" in str(caught.value)
    assert KEY not in caplog.text and KEY not in repr(vultr)


async def test_a_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VULTR_API_KEY", raising=False)
    with pytest.raises(VultrError, match="VULTR_API_KEY"):
        VultrClient()
    monkeypatch.setenv("VULTR_API_KEY", "from-the-environment")
    async with VultrClient() as client:
        assert "from-the-environment" not in repr(client)


async def test_an_unreachable_api_is_retried_then_a_connection_error(emulator: VultrEmulator) -> None:
    server = TestServer(VultrEmulator(api_key=KEY).app, host="127.0.0.1")
    await server.start_server()
    dead_url = str(server.make_url("/v2"))
    await server.close()
    async with VultrClient(KEY, base_url=dead_url, max_retries=2, **FAST) as vultr:  # type: ignore[arg-type]
        with pytest.raises(VultrConnectionError, match="cannot reach") as caught:
            await vultr.get_instance("any")
    assert caught.value.status == 0 and KEY not in str(caught.value)


# ------------------------------------------------------------------------------------------------ throttle


async def test_the_throttle_spaces_requests(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(requests_per_second=50.0)
    started = time.monotonic()

    await asyncio.gather(*(vultr.delete_startup_script("missing") for _ in range(20)), return_exceptions=True)

    assert time.monotonic() - started >= 0.3  # 19 gaps of 20 ms
    assert emulator.count() == 20


async def test_a_burst_of_40_calls_stays_under_the_documented_rate(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(requests_per_second=25.0)  # the default; the emulator answers 429 above 30 per second

    results = await asyncio.gather(*(vultr.delete_instance(f"gone-{n}") for n in range(40)))

    assert results == [False] * 40  # already gone, each
    assert 429 not in emulator.statuses() and emulator.count() == 40
    times = [seen.at for seen in emulator.requests]
    busiest_second = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest_second <= 30


async def test_without_the_throttle_the_emulator_rate_limits_a_burst(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(max_retries=0)

    results = await asyncio.gather(*(vultr.get_instance(f"x{n}") for n in range(40)), return_exceptions=True)

    assert any(isinstance(r, VultrRateLimited) for r in results)  # 30 accepted in the first second


# ------------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-10-10T01:56:20+00:00", datetime(2020, 10, 10, 1, 56, 20, tzinfo=UTC)),
        ("2020-07-07 18:52:56", datetime(2020, 7, 7, 18, 52, 56, tzinfo=UTC)),
        ("2024-01-02T03:04:05-05:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))),
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_dates_are_parsed_leniently(text: str | None, expected: datetime | None) -> None:
    assert Instance.from_api({"id": "i", "date_created": text}).date_created == expected
    assert StartupScript.from_api({"id": "s", "date_modified": text}).date_modified == expected


def test_an_instance_with_missing_or_odd_fields_still_parses() -> None:
    instance = Instance.from_api({"id": "i", "os_id": "2136", "tags": None, "main_ip": None, "ram": "lots"})

    assert instance.os_id == 2136 and instance.tags == () and instance.main_ip == "0.0.0.0"
    assert instance.ram is None and not instance.has_ip and not instance.is_ready
    assert hash(instance) == hash(Instance.from_api({"id": "i", "os_id": 2136}))


def test_a_startup_script_with_bad_base64_keeps_no_text() -> None:
    script = StartupScript.from_api({"id": "s", "name": "n", "script": "%%%"})
    assert script.script is None and script.type == "boot"
