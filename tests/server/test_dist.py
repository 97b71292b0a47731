"""``/v1/dist/``: the hub's wheel folder as a pip flat index and ``index.json``, served by an in-process hub."""

from __future__ import annotations

import hashlib
import html
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from server.app import create_app
from server.core.appkeys import HUB_KEY
from server.settings import HubSettings

WHEELS = {
    "cloudremotecontrol-0.1.0-py3-none-any.whl": b"daemon 0.1.0",
    "cloudremotecontrol-0.10.0-py3-none-any.whl": b"daemon 0.10.0, the newest",
    "cloudremotecontrol-0.9.0-py3-none-any.whl": b"daemon 0.9.0",
    "aiohttp-3.9.0-py3-none-any.whl": b"not really aiohttp",
}
NOT_SERVED = {"notes.txt": b"private notes", ".hidden.whl": b"dotfile"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fill(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


async def _client(tmp_path: Path, dist: Path | None) -> TestClient:
    app = create_app(HubSettings(data_dir=tmp_path / "hub", dist=dist))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    folder = tmp_path / "dist"
    fill(folder, {**WHEELS, **NOT_SERVED})
    (folder / "subdir.whl").mkdir()  # a folder named like a wheel is not a file to serve
    (tmp_path / "secret.whl").write_bytes(b"outside the dist folder")
    return folder


@pytest.fixture
async def client(tmp_path: Path, dist: Path) -> AsyncIterator[TestClient]:
    client = await _client(tmp_path, dist)
    try:
        yield client
    finally:
        await client.close()


async def index(client: TestClient) -> dict:
    response = await client.get("/v1/dist/index.json")
    assert response.status == 200
    return await response.json()


async def test_index_json_names_the_newest_daemon_wheel_by_version(client: TestClient) -> None:
    data = await index(client)
    assert data["hub_id"] == client.app[HUB_KEY].id
    name = "cloudremotecontrol-0.10.0-py3-none-any.whl"
    assert data["daemon"] == {"name": name, "size": len(WHEELS[name]), "sha256": sha256(WHEELS[name])}


async def test_index_json_lists_every_served_file_with_its_size_and_hash(client: TestClient) -> None:
    files = (await index(client))["files"]
    assert sorted(f["name"] for f in files) == sorted(WHEELS)
    for f in files:
        assert f == {"name": f["name"], "size": len(WHEELS[f["name"]]), "sha256": sha256(WHEELS[f["name"]])}


async def test_the_html_index_links_each_file_with_its_sha256(client: TestClient) -> None:
    response = await client.get("/v1/dist/")
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    links = dict(re.findall(r'<a href="([^"#]+)#sha256=([0-9a-f]{64})">', page))
    assert {html.unescape(k): v for k, v in links.items()} == {name: sha256(data) for name, data in WHEELS.items()}
    assert "notes.txt" not in page and ".hidden" not in page and "subdir" not in page


@pytest.mark.parametrize("name", sorted(WHEELS))
async def test_a_listed_file_downloads_as_its_bytes(client: TestClient, name: str) -> None:
    response = await client.get(f"/v1/dist/{name}")
    assert response.status == 200
    assert await response.read() == WHEELS[name]
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/dist/notes.txt",
        "/v1/dist/.hidden.whl",
        "/v1/dist/subdir.whl",
        "/v1/dist/missing-1.0-py3-none-any.whl",
        "/v1/dist/..%2Fsecret.whl",
        "/v1/dist/..%2F..%2Fhub%2Fhub.key",
        "/v1/dist/%2E%2E%2Fsecret.whl",
        "/v1/dist/..%5Csecret.whl",
        "/v1/dist/%2Fetc%2Fpasswd",
        "/v1/dist/../secret.whl",
        "/v1/dist/x.whl%00.txt",
    ],
)
async def test_unlisted_missing_and_traversing_names_are_404(client: TestClient, path: str) -> None:
    base = str(client.make_url("/")).rstrip("/")
    async with client.session.get(URL(base + path, encoded=True)) as response:  # sent as written, not normalised
        assert response.status == 404, path
        body = await response.read()
    assert b"outside the dist folder" not in body and b"private notes" not in body


@pytest.mark.parametrize("missing", [True, False])
async def test_an_empty_or_missing_folder_serves_no_daemon_and_no_files(tmp_path: Path, missing: bool) -> None:
    folder = tmp_path / "empty-dist"
    if not missing:
        folder.mkdir()
    client = await _client(tmp_path, folder)
    try:
        data = await index(client)
        assert (data["daemon"], data["files"]) == (None, [])
        page = await (await client.get("/v1/dist/")).text()
        assert "<a " not in page
        response = await client.get("/v1/dist/cloudremotecontrol-0.1.0-py3-none-any.whl")
        assert response.status == 404
    finally:
        await client.close()


async def test_the_default_folder_is_dist_in_the_data_dir(tmp_path: Path) -> None:
    fill(tmp_path / "hub" / "dist", {"cloudremotecontrol-1.2.3-py3-none-any.whl": b"default"})
    client = await _client(tmp_path, None)
    try:
        data = await index(client)
        assert data["daemon"]["name"] == "cloudremotecontrol-1.2.3-py3-none-any.whl"
    finally:
        await client.close()


async def test_a_changed_file_gets_its_new_hash(client: TestClient, dist: Path) -> None:
    name = "cloudremotecontrol-0.10.0-py3-none-any.whl"
    before = (await index(client))["daemon"]
    assert before["sha256"] == sha256(WHEELS[name])

    rebuilt = b"daemon 0.10.0, rebuilt with a fix"
    (dist / name).write_bytes(rebuilt)
    after = (await index(client))["daemon"]
    assert (after["size"], after["sha256"]) == (len(rebuilt), sha256(rebuilt))

    # same size, new content, even within the file system's timestamp granularity
    same_size = bytes(reversed(rebuilt))
    stat = (dist / name).stat()
    (dist / name).write_bytes(same_size)
    os.utime(dist / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = (await index(client))["daemon"]
    assert again["sha256"] == sha256(same_size)
    assert await (await client.get(f"/v1/dist/{name}")).read() == same_size


async def test_a_new_daemon_wheel_becomes_the_daemon(client: TestClient, dist: Path) -> None:
    fill(dist, {"cloudremotecontrol-0.10.1-py3-none-any.whl": b"newer"})
    assert (await index(client))["daemon"]["name"] == "cloudremotecontrol-0.10.1-py3-none-any.whl"
    (dist / "cloudremotecontrol-0.10.1-py3-none-any.whl").unlink()
    assert (await index(client))["daemon"]["name"] == "cloudremotecontrol-0.10.0-py3-none-any.whl"
