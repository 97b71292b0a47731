"""Masters only ever see and drive their own scenarios; keys the hub does not know are refused at connect."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from clients.master.keys import write_private_key
from clients.master.sdk import Master
from protocol import Identity, Order, OrderKind, RemoteError
from tests.e2e.support import HubProcess, run_crc


@pytest.fixture(scope="module")
def bob_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bob") / "bob.key"
    write_private_key(path, Identity.generate(secrets.token_bytes))
    return path


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, bob_key: Path) -> Iterator[HubProcess]:
    """One hub for the module, with a second master, bob, enrolled in its data dir before it starts."""
    hub = HubProcess(tmp_path_factory.mktemp("tenancy"))
    try:
        bob_public = Identity.from_private_text(bob_key.read_text()).public.to_text()
        enrolled = run_crc(hub, "hub", "enroll-master", "bob", bob_public, "--data-dir", str(hub.data_dir))
        assert enrolled.returncode == 0, enrolled.stderr
        assert "enrolled master 'bob'" in enrolled.stdout
        hub.start()
        yield hub
    finally:
        hub.cleanup()


@pytest.fixture
async def bob(hub: HubProcess, bob_key: Path) -> AsyncIterator[Master]:
    async with await Master.connect(hub.url, bob_key, timeout=10) as connected:
        yield connected


async def expect_not_found(call) -> None:
    with pytest.raises(RemoteError) as caught:
        await call
    assert caught.value.code == "not_found", caught.value


async def test_a_master_cannot_see_or_touch_another_masters_scenario(
    master: Master, bob: Master, deploy, tmp_path: Path
) -> None:
    await deploy("alice-shop", "db")
    sc = await master.scenario("alice-shop")
    marker = tmp_path / "bob-was-here"

    assert "alice-shop" not in [s["name"] for s in await bob.scenarios()]
    await expect_not_found(bob.scenario("alice-shop"))
    await expect_not_found(bob.results("alice-shop"))
    await expect_not_found(bob.cancel("alice-shop", "0" * 32))
    await expect_not_found(bob.delete_scenario("alice-shop"))
    await expect_not_found(anext(aiter(bob.events("alice-shop", 0, follow=False))))
    await expect_not_found(bob.run("alice-shop", "all", f"touch {marker}", wait_timeout=2))

    # Even a well-formed order naming alice's scenario and machine, signed by bob himself, is refused.
    order = Order("b" * 32, "alice-shop", sc.machines[0].id, OrderKind.EXEC, {"command": f"touch {marker}"},
                  time.time() + 60, bob.identity.id).signed(bob.identity)  # fmt: skip
    await expect_not_found(bob.submit(order))

    # alice's scenario is intact and nothing of bob's ran on it
    assert "alice-shop" in [s["name"] for s in await master.scenarios()]
    assert await master.results("alice-shop") == []
    assert not marker.exists()


async def test_a_master_cannot_submit_orders_under_another_masters_name(master: Master, bob: Master, deploy) -> None:
    await deploy("alice-only", "db", start=False)
    sc = await master.scenario("alice-only")
    forged = Order("c" * 32, "alice-only", sc.machines[0].id, OrderKind.EXEC, {"command": "true"},
                   time.time() + 60, master.identity.id, b"\x00" * 64)  # fmt: skip
    with pytest.raises(RemoteError) as caught:
        await bob.submit(forged)
    assert caught.value.code == "forbidden"


async def test_two_masters_may_each_have_a_scenario_of_the_same_name(master: Master, bob: Master) -> None:
    await master.create_scenario("shop", [("db", "linux")])
    await bob.create_scenario("shop", [("web", "linux"), ("cache", "linux")])
    assert [m.name for m in (await master.scenario("shop")).machines] == ["db"]
    assert [m.name for m in (await bob.scenario("shop")).machines] == ["cache", "web"]
    await bob.delete_scenario("shop")
    assert [m.name for m in (await master.scenario("shop")).machines] == ["db"]


async def test_an_unenrolled_key_is_refused_at_connect(hub: HubProcess) -> None:
    stranger = Identity.generate(secrets.token_bytes)
    with pytest.raises(RemoteError) as caught:
        await Master.connect(hub.url, stranger, timeout=10)
    assert caught.value.code == "unknown_identity"
    assert stranger.id in caught.value.message


def test_enrolling_a_name_again_with_another_key_is_refused(make_hub: Callable[..., HubProcess]) -> None:
    hub = make_hub(start=False)
    first, second = (Identity.generate(secrets.token_bytes).public.to_text() for _ in range(2))
    assert run_crc(hub, "hub", "enroll-master", "carol", first, "--data-dir", str(hub.data_dir)).returncode == 0
    clash = run_crc(hub, "hub", "enroll-master", "carol", second, "--data-dir", str(hub.data_dir))
    assert clash.returncode == 1
    assert "carol" in clash.stderr
