"""The Vultr provider against the local emulator of the Vultr API v2, over a real socket on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from provisioning.providers import ProvidedMachine, ProviderError, Teardown, VultrProvider
from provisioning.providers.vultr import resource_name, scenario_tag
from provisioning.scenario_file import MachinePlan, ProviderSettings
from provisioning.vultr import VultrClient
from tests.provisioning.vultr_emulator import VultrEmulator

KEY = "s3cret-vultr-key-DO-NOT-LEAK-provider-42"
FAST: dict[str, Any] = {"backoff_initial": 0.001, "backoff_max": 0.005, "requests_per_second": None}
SCRIPT = "#!/bin/bash\necho 'first boot' > /tmp/crc-boot\n"

Connect = Callable[..., VultrProvider]


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
async def connect(emulator: VultrEmulator) -> AsyncIterator[Connect]:
    """Makes providers on the emulator (fast client backoff, fast polling); closes them after the test."""
    providers: list[VultrProvider] = []

    def make(settings: ProviderSettings | None = None, **options: Any) -> VultrProvider:
        client = VultrClient(api_key=KEY, base_url=emulator.base_url, **FAST)
        provider = VultrProvider(
            client,
            settings or ProviderSettings(kind="vultr", tags=("team-qa",)),
            **{"poll_interval": 0.01, "relist_after": 0.01, **options},
        )
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.close()


@pytest.fixture
def vultr(connect: Connect) -> VultrProvider:
    return connect()


def plan(name: str = "web_1", *, region: str = "ams", size: str = "vc2-1c-2gb", image: int | str = 2136) -> MachinePlan:
    return MachinePlan(name, "linux", "web", region, size, image)


def instance_data(emulator: VultrEmulator, instance_id: str) -> dict[str, Any]:
    return emulator.instances[instance_id].data


def decoded_scripts(emulator: VultrEmulator) -> dict[str, str]:
    return {s["name"]: base64.b64decode(s["script"]).decode() for s in emulator.scripts.values()}


# ------------------------------------------------------------------------------------------------ naming


def test_names_and_tags_carry_the_scenario() -> None:
    assert resource_name("shop", "db") == "crc:shop/db"
    assert scenario_tag("shop") == "crc-scenario:shop"
    assert not resource_name("shop-2", "db").startswith(resource_name("shop", ""))


# ------------------------------------------------------------------------------------------------ create


async def test_create_with_a_startup_script(vultr: VultrProvider, emulator: VultrEmulator) -> None:
    created = await vultr.create("shop", plan(), SCRIPT)

    assert created == ProvidedMachine("web_1", created.provider_id, "pending", "")
    assert decoded_scripts(emulator) == {"crc:shop/web_1": SCRIPT}
    [script_id] = emulator.scripts
    assert emulator.scripts[script_id]["type"] == "boot"

    assert list(emulator.instances) == [created.provider_id]
    data = instance_data(emulator, created.provider_id)
    assert data["label"] == "crc:shop/web_1"
    assert data["hostname"] == "web-1"
    assert data["tags"] == ["crc-scenario:shop", "crc-machine:web_1", "team-qa"]
    assert (data["region"], data["plan"], data["os_id"], data["image_id"]) == ("ams", "vc2-1c-2gb", 2136, "")
    assert emulator.instances[created.provider_id].script_id == script_id
    assert emulator.user_data_of(created.provider_id) is None


async def test_create_with_user_data_uploads_no_script(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(ProviderSettings(kind="vultr", boot="user_data"))

    created = await vultr.create("shop", plan("db", region="fra", size="vc2-2c-4gb", image=2284), SCRIPT)

    assert emulator.scripts == {}
    assert emulator.count("POST", "/v2/startup-scripts") == 0
    assert emulator.user_data_of(created.provider_id) == SCRIPT.encode()
    assert emulator.instances[created.provider_id].script_id is None
    data = instance_data(emulator, created.provider_id)
    assert data["tags"] == ["crc-scenario:shop", "crc-machine:db"]  # no extra tags configured
    assert (data["region"], data["plan"], data["os_id"]) == ("fra", "vc2-2c-4gb", 2284)


async def test_a_string_image_is_sent_as_an_image_id(vultr: VultrProvider, emulator: VultrEmulator) -> None:
    created = await vultr.create("shop", plan(image="0e1f-custom-image"), SCRIPT)

    data = instance_data(emulator, created.provider_id)
    assert data["image_id"] == "0e1f-custom-image"  # Vultr: image_id is a Marketplace application id
    assert data["os_id"] == 186  # "Application" in /v2/os: no os_id was sent


async def test_a_500_on_the_script_upload_is_retried(vultr: VultrProvider, emulator: VultrEmulator) -> None:
    emulator.fail_next(500)

    created = await vultr.create("shop", plan(), SCRIPT)

    assert emulator.statuses("POST", "/v2/startup-scripts") == [500, 201]
    assert decoded_scripts(emulator) == {"crc:shop/web_1": SCRIPT}
    assert created.provider_id in emulator.instances


async def test_a_script_upload_that_keeps_failing_is_a_provider_error(
    vultr: VultrProvider, emulator: VultrEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    def quick_sleep(delay: float, *args: Any) -> Coroutine[Any, Any, Any]:
        pauses.append(delay)
        return real_sleep(0, *args)

    monkeypatch.setattr(asyncio, "sleep", quick_sleep)
    emulator.fail_next(500, 502, 503)

    with pytest.raises(ProviderError, match="'web_1'") as caught:
        await vultr.create("shop", plan(), SCRIPT)

    assert "503" in str(caught.value)
    assert emulator.statuses("POST", "/v2/startup-scripts") == [500, 502, 503]
    assert pauses == [0.5, 1.0]
    assert emulator.instances == {}


async def test_a_400_on_instance_creation_is_a_provider_error_naming_the_machine(
    vultr: VultrProvider, emulator: VultrEmulator
) -> None:
    with pytest.raises(ProviderError, match="could not create machine 'web_1'") as caught:
        await vultr.create("shop", plan(region=""), SCRIPT)

    assert "400" in str(caught.value) and "region" in str(caught.value)
    assert emulator.statuses("POST", "/v2/instances") == [400]  # a create is not retried
    assert emulator.instances == {}
    # The script uploaded before the failure is the scenario's, so destroy still removes it.
    teardown = await vultr.destroy("shop")
    assert teardown == Teardown(machines=[], scripts=["crc:shop/web_1"])
    assert emulator.scripts == {}


async def test_an_injected_400_is_a_provider_error(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(ProviderSettings(kind="vultr", boot="user_data"))
    emulator.fail_next(400, message="Server add failed: plan is not available in this region")

    with pytest.raises(ProviderError, match=r"'db'.*plan is not available"):
        await vultr.create("shop", plan("db"), SCRIPT)


async def test_the_api_key_never_appears_in_a_provider_error(connect: Connect, emulator: VultrEmulator) -> None:
    vultr = connect(ProviderSettings(kind="vultr", boot="user_data"))
    emulator.fail_next(400, message=f"Server add failed: token {KEY} is odd")
    with pytest.raises(ProviderError) as created:
        await vultr.create("shop", plan(), SCRIPT)

    emulator.fail_next(401, message=f"Invalid API token {KEY}.")
    with pytest.raises(ProviderError) as listed:
        await vultr.machines("shop")

    emulator.fail_next(403, message=f"key {KEY} not allowed from this IP")
    with pytest.raises(ProviderError) as destroyed:
        await vultr.destroy("shop")

    for caught in (created, listed, destroyed):
        assert KEY not in str(caught.value) and KEY not in repr(caught.value)
        assert KEY not in str(caught.value.__cause__)
        assert "<redacted>" in str(caught.value)


async def test_a_wrong_key_is_a_provider_error(emulator: VultrEmulator) -> None:
    client = VultrClient(api_key="wrong-key-0000", base_url=emulator.base_url, **FAST)
    vultr = VultrProvider(client, ProviderSettings(kind="vultr"))
    try:
        with pytest.raises(ProviderError, match=r"'web_1'.*401") as caught:
            await vultr.create("shop", plan(), SCRIPT)
        assert "wrong-key-0000" not in str(caught.value)
    finally:
        await vultr.close()


# ------------------------------------------------------------------------------------------------ machines


async def test_machines_lists_only_the_scenarios_instances(vultr: VultrProvider, emulator: VultrEmulator) -> None:
    db = await vultr.create("shop", plan("db"), SCRIPT)
    web = await vultr.create("shop", plan("web"), SCRIPT)
    other = await vultr.create("shop-2", plan("db"), SCRIPT)

    shop = await vultr.machines("shop")
    shop2 = await vultr.machines("shop-2")

    assert [(m.name, m.provider_id) for m in shop] == [("db", db.provider_id), ("web", web.provider_id)]
    assert [(m.name, m.provider_id) for m in shop2] == [("db", other.provider_id)]
    assert all(m.state == "pending/running/none" and m.address == "" for m in shop + shop2)
    assert await vultr.machines("shop-3") == []


async def test_machines_report_the_state_and_address_once_active(vultr: VultrProvider) -> None:
    created = await vultr.create("shop", plan(), SCRIPT)
    address = await vultr.follow(created, lambda _: None)

    [machine] = await vultr.machines("shop")

    assert machine == ProvidedMachine("web_1", created.provider_id, "active/running/installingbooting", address)
    assert address.startswith("192.0.2.")


async def test_an_instance_with_another_label_keeps_its_label_as_name(
    vultr: VultrProvider, emulator: VultrEmulator
) -> None:
    client = VultrClient(api_key=KEY, base_url=emulator.base_url, **FAST)
    try:
        await client.create_instance("ewr", "vc2-1c-2gb", 2136, label="hand-made", tags=[scenario_tag("shop")])
    finally:
        await client.close()

    assert [m.name for m in await vultr.machines("shop")] == ["hand-made"]


# ------------------------------------------------------------------------------------------------ destroy


async def test_destroy_removes_only_the_scenarios_instances_and_scripts(
    vultr: VultrProvider, emulator: VultrEmulator
) -> None:
    await vultr.create("shop", plan("db"), SCRIPT)
    await vultr.create("shop", plan("web"), SCRIPT)
    kept = await vultr.create("shop-2", plan("db"), "echo other")
    client = VultrClient(api_key=KEY, base_url=emulator.base_url, **FAST)
    try:
        unrelated = await client.create_startup_script("somebody-elses-script", "echo mine")
    finally:
        await client.close()

    teardown = await vultr.destroy("shop")

    assert teardown == Teardown(machines=["crc:shop/db", "crc:shop/web"], scripts=["crc:shop/db", "crc:shop/web"])
    assert not teardown.empty
    assert list(emulator.instances) == [kept.provider_id]
    assert sorted(s["name"] for s in emulator.scripts.values()) == ["crc:shop-2/db", "somebody-elses-script"]
    assert unrelated.id in emulator.scripts
    assert [m.provider_id for m in await vultr.machines("shop-2")] == [kept.provider_id]
    assert await vultr.machines("shop") == []

    again = await vultr.destroy("shop")
    assert again == Teardown() and again.empty

    assert await vultr.destroy("shop-2") == Teardown(machines=["crc:shop-2/db"], scripts=["crc:shop-2/db"])
    assert emulator.instances == {}
    assert list(emulator.scripts) == [unrelated.id]


async def test_destroying_only_some_machines_keeps_the_scenarios_others_and_their_scripts(
    vultr: VultrProvider, emulator: VultrEmulator
) -> None:
    await vultr.create("shop", plan("db"), SCRIPT)
    web = await vultr.create("shop", plan("web"), SCRIPT)

    teardown = await vultr.destroy("shop", only=["db"])

    assert teardown == Teardown(machines=["crc:shop/db"], scripts=["crc:shop/db"])
    assert list(emulator.instances) == [web.provider_id]
    assert sorted(s["name"] for s in emulator.scripts.values()) == ["crc:shop/web"]
    assert [m.name for m in await vultr.machines("shop")] == ["web"]


async def test_destroy_of_a_scenario_that_never_existed_is_empty(vultr: VultrProvider) -> None:
    assert (await vultr.destroy("ghost")).empty


async def test_destroy_waits_for_the_install_lock_and_says_so(connect: Connect, emulator: VultrEmulator) -> None:
    emulator.locked_deletes, emulator.polls_until_active = True, None  # pending: server_status "none" (locked)
    emulator.seconds_until_active, emulator.locked_seconds = 0.3, 0.6
    vultr = connect(lock_poll=0.05)
    created = await vultr.create("shop", plan(), SCRIPT)
    said: list[str] = []

    assert await vultr.destroy("shop", said.append) == Teardown(machines=["crc:shop/web_1"], scripts=["crc:shop/web_1"])

    assert emulator.instances == {} and emulator.scripts == {}
    assert 500 in emulator.statuses("DELETE") and emulator.statuses("DELETE")[-1] == 204
    assert said and all(created.provider_id in line and "locked" in line for line in said)
    assert "server_status none" in said[0]


async def test_destroy_of_an_instance_locked_beyond_the_bound_is_a_provider_error(
    connect: Connect, emulator: VultrEmulator
) -> None:
    emulator.locked_deletes, emulator.polls_until_active = True, None
    vultr = connect(lock_wait=0.2, lock_poll=0.05)
    created = await vultr.create("shop", plan(), SCRIPT)

    with pytest.raises(ProviderError, match=r"'shop'.*locked.*still locked after.*run it again"):
        await vultr.destroy("shop")
    assert created.provider_id in emulator.instances


# ------------------------------------------------------------------------------------------------ follow


async def test_follow_returns_the_main_ip_once_active(vultr: VultrProvider, emulator: VultrEmulator) -> None:
    emulator.polls_until_active = 3
    created = await vultr.create("shop", plan(), SCRIPT)
    said: list[str] = []

    address = await vultr.follow(created, said.append)

    assert address.startswith("192.0.2.")
    assert address == instance_data(emulator, created.provider_id)["main_ip"]
    assert said == [f"instance active at {address} (Debian 12 x64 (bookworm), vc2-1c-2gb)"]
    assert emulator.count("GET", f"/v2/instances/{created.provider_id}") == 3


async def test_follow_reports_an_instance_that_never_becomes_active(connect: Connect, emulator: VultrEmulator) -> None:
    emulator.polls_until_active = None
    vultr = connect(boot_timeout=0.05)
    created = await vultr.create("shop", plan(), SCRIPT)
    said: list[str] = []

    assert await vultr.follow(created, said.append) == ""

    [message] = said
    assert message.startswith(f"Vultr instance {created.provider_id} did not become active")
    assert "not ready" in message


async def test_follow_reports_an_instance_that_vanished(connect: Connect) -> None:
    vultr = connect(not_found_for=0.05)
    said: list[str] = []
    gone = ProvidedMachine("web_1", "00000000-0000-0000-0000-000000000000", "pending")

    assert await vultr.follow(gone, said.append) == ""
    assert len(said) == 1 and "did not become active" in said[0] and "404" in said[0]
