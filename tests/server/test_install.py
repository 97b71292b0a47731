"""``/v1/install.sh`` and ``/v1/install.ps1``: the packaged installers, byte for byte, to anyone (no sign-in), served
by an in-process hub."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from provisioning.installers import INSTALLERS
from server.app import create_app
from server.settings import HubSettings

SOURCE = Path(__file__).resolve().parents[2] / "provisioning" / "installers"


@pytest.mark.parametrize("name", ["install.sh", "install.ps1"])
async def test_the_hub_serves_the_packaged_installer_byte_for_byte_without_a_token(tmp_path: Path, name: str) -> None:
    client = TestClient(TestServer(create_app(HubSettings(data_dir=tmp_path / "hub")), host="127.0.0.1"))
    await client.start_server()
    try:
        response = await client.get(f"/v1/{name}")
        body = await response.read()
    finally:
        await client.close()
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=us-ascii"
    [installer] = [i for i in INSTALLERS.values() if i.name == name]
    assert body == installer.data() == (SOURCE / name).read_bytes()
    assert body.isascii()
