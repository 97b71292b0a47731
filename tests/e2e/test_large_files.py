"""Files bigger than a frame: uploaded to the hub in chunks, delivered in chunks, checked end to end."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clients.master.sdk import Master
from protocol import OrderKind, RemoteError
from protocol.order_bodies import PutFileBody
from tests.e2e.support import Deployment, HubProcess
from tests.e2e.test_metrics import scrape


async def test_a_file_of_several_frames_reaches_every_machine_intact(
    master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("big", "a", "b")
    data = os.urandom(3 * 1024 * 1024 + 17)  # > 1 MiB frames, an odd tail chunk
    target = tmp_path / "delivered" / "blob.bin"

    results = await master.put_file("big", "all", data, str(target), mode=0o600, wait_timeout=30)

    assert [(r.machine, r.status, r.verified) for r in results] == [("a", "succeeded", True), ("b", "succeeded", True)]
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


async def test_a_file_order_without_its_upload_is_refused_by_the_hub(
    master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("noupload", "a")
    sc, machines = await master.targets("noupload", "a")
    body = PutFileBody.for_content(str(tmp_path / "x"), b"content never sent", 0o644).to_wire()
    order = master.sign(sc, machines[0], OrderKind.PUT_FILE, body, 60)

    with pytest.raises(RemoteError) as refused:
        await master.submit(order, upload="0" * 64)
    assert refused.value.code == "not_found"


async def test_an_upload_that_does_not_match_the_signed_hash_is_refused(
    master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("mismatch", "a")
    sc, machines = await master.targets("mismatch", "a")
    upload = await master.upload(b"what was uploaded")
    order = master.sign(
        sc,
        machines[0],
        OrderKind.PUT_FILE,
        PutFileBody.for_content(str(tmp_path / "x"), b"what was signed", 0o644).to_wire(),
        60,
    )

    with pytest.raises(RemoteError) as refused:
        await master.submit(order, upload=upload)
    assert refused.value.code == "invalid_request"
    assert not (tmp_path / "x").exists()


async def test_the_hub_lets_go_of_an_upload_once_the_last_order_naming_it_is_submitted(
    master: Master, hub: HubProcess, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("freed", "a", "b", "c")
    data = os.urandom(2 * 1024 * 1024 + 5)
    await master.upload(data)  # sent, no order yet: held by the hub
    await master.scenarios()  # a round trip: the hub handled every chunk sent before it
    assert (await scrape(hub))["crc_upload_bytes"][()] == len(data)

    target = tmp_path / "freed" / "blob.bin"
    results = await master.put_file("freed", "all", data, str(target), wait_timeout=30)  # one upload, three orders

    assert [r.status for r in results] == ["succeeded"] * 3 and target.read_bytes() == data
    assert (await scrape(hub))["crc_upload_bytes"][()] == 0
