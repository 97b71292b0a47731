"""``/static/``: the dashboard serves its three files by name and nothing else, however the path is spelled."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from server.app import create_app
from server.settings import HubSettings


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    app = create_app(HubSettings(data_dir=tmp_path / "hub"))
    async with TestClient(TestServer(app, host="127.0.0.1")) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "path",
    [
        "/static/..%2F__init__.py",
        "/static/%2E%2E%2F__init__.py",
        "/static/..%5C__init__.py",
        "/static/../__init__.py",
        "/static/%2Fetc%2Fpasswd",
        "/static/app.js%00.html",
        "/static/missing.js",
        "/static/..%2F..%2F..%2Fhub%2Fadmin.token",
    ],
)
async def test_a_static_path_outside_the_dashboards_files_is_404(client: TestClient, path: str) -> None:
    base = str(client.make_url("/")).rstrip("/")
    async with client.session.get(URL(base + path, encoded=True)) as response:  # sent as written, not normalised
        assert response.status == 404, path
        body = await response.read()
    assert b"import" not in body and b"root:" not in body


async def test_the_dashboards_own_files_are_served(client: TestClient) -> None:
    for name in ("app.js", "style.css"):
        async with client.get(f"/static/{name}") as response:
            assert response.status == 200 and await response.read()
