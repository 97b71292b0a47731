"""The hub's data dir fills up (a small tmpfs): new work is refused with a clear error and nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import Daemons, HubProcess, eventually, wait_results


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "hub" / "data"
    mount_point.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the hub's data dir needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as f:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    return filler


async def test_a_full_disk_refuses_new_orders_clearly_and_loses_no_result(small_disk: Path, tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub")
    daemons = Daemons(tmp_path / "daemons")
    try:
        await asyncio.to_thread(hub.start)
        async with await Master.connect(hub.url, hub.key_path) as master:
            (box,) = await master.create_scenario("disk", [("box", "linux")])
            config = tmp_path / "box.toml"
            write_config(config, DaemonConfig(hub.url, "disk", "box", box.identity, master.identity.public))
            daemons.start(config)
            await master.wait_ready("disk", timeout=20)
            (late,) = await master.run("disk", "box", "sleep 1; echo late", wait=False)

            filler = await asyncio.to_thread(_fill, small_disk)
            marker = tmp_path / "must-not-run"
            with pytest.raises(RemoteError) as refused:
                await master.run("disk", "box", f"touch {marker}", wait=False)
            assert refused.value.code == "unavailable"
            assert "full" in refused.value.message

            await asyncio.sleep(2.0)  # the late result reaches the hub while it cannot store it
            filler.unlink()
            (result,) = await wait_results(master, "disk", [late.order_id], timeout=30)
            assert (result.status, result.stdout) == ("succeeded", b"late\n")
            (after,) = await eventually(
                lambda: _run_ok(master), timeout=15, what="orders accepted again once space is back"
            )
            assert after.status == "succeeded"
            assert not marker.exists()
    finally:
        daemons.cleanup()
        hub.cleanup()


async def _run_ok(master: Master) -> list | None:  # type: ignore[type-arg]
    try:
        return await master.run("disk", "box", "true", wait_timeout=10)
    except RemoteError:
        return None
