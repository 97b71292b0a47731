"""gorchestrator's REST API on the hub (``/v1/tasks``) with bearer access tokens: real hub, real daemons.

gorchestrator's published example, posted as is by an operator token, runs in an order its graph allows: a node
that fails marks its dependents not runnable (5) while the rest finish; the same graph with shell steps that
succeed ends with every node in state 3. Tokens: none, wrong, revoked, expired, viewer (reads but cannot start
anything) and scoped ones get JSON errors; tasks can be cancelled; bad bodies are refused before anything runs.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.link import hub_http_url
from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import HubProcess, run_crc

GORCH_EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "gorch-example.json"
DONE_STATES = {3, 4, 5, 10, 11}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        yield session


class Api:
    def __init__(self, http: aiohttp.ClientSession, hub: HubProcess, token: str) -> None:
        self.http, self.base, self.token = http, hub_http_url(hub.url), token

    async def call(self, method: str, path: str, body: Any = None, **params: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        raw = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
        data = None if raw is None else io.BytesIO(raw)
        async with self.http.request(method, self.base + path, data=data, headers=headers, params=params) as reply:
            assert reply.content_type == "application/json", await reply.text()
            return reply.status, await reply.json()

    async def refused(self, method: str, path: str, status: int, code: str, body: Any = None, **params: str) -> str:
        got, answer = await self.call(method, path, body, **params)
        assert (got, answer.get("error", {}).get("code")) == (status, code), answer
        assert answer["error"]["message"]
        return str(answer["error"]["message"])

    async def wait_done(self, task_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, task = await self.call("GET", f"/v1/tasks/{task_id}")
            assert status == 200, task
            if task["state"] in DONE_STATES:
                return dict(task)
            assert time.monotonic() < deadline, task
            await asyncio.sleep(0.2)


def example() -> dict[str, Any]:
    return dict(json.loads(GORCH_EXAMPLE.read_text()))


async def test_gorchestrators_example_runs_through_the_rest_api(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    await deploy("gorch", "test")
    token, _ = await master.create_token("operator", scenario="gorch")
    api = Api(http, hub, token)
    log = tmp_path / "order.log"
    task = example()
    for node in task["nodes"]:
        node["engine"], node["artifact"], node["args"] = "shell", f"echo {node['id']} >> {log}", None
    status, created = await api.call("POST", "/v1/tasks", task)
    assert status == 202 and set(created) >= {"id"}, created
    done = await api.wait_done(created["id"])
    assert done["state"] == 3 and [n["state"] for n in done["nodes"]] == [3] * 8
    assert done["digraph"] == task["digraph"] and [n["name"] for n in done["nodes"]] == list("abcdefgh")
    assert done["nodes"][0]["results"]["test"]["exit_code"] == 0
    ran = [int(line) for line in log.read_text().split()]
    n = len(task["nodes"])
    for j in range(n):  # every node ran once, after every node the matrix puts before it
        assert ran.count(j) == 1
        assert all(ran.index(i) < ran.index(j) for i in range(n) if task["digraph"][i * n + j])

    # As published, but with node f failing and the others succeeding: f's dependents are not runnable.
    task = example()
    for node in task["nodes"]:
        node["artifact"] = "exit 1" if node["name"] == "f" else "true"
        node["args"] = None
    status, created = await api.call("POST", "/v1/tasks", task)
    assert status == 202
    states = {node["name"]: node["state"] for node in (await api.wait_done(created["id"]))["nodes"]}
    assert states == {"f": 4, "a": 5, "b": 5, "c": 5, "e": 5, "g": 5, "d": 3, "h": 3}

    # The published file itself (its scripts do not exist here): it ends, and no node runs after a failure.
    status, created = await api.call("POST", "/v1/tasks", example())
    published = await api.wait_done(created["id"])
    assert published["state"] == 4
    for j, node in enumerate(published["nodes"]):
        before = [published["nodes"][i]["state"] for i in range(n) if published["digraph"][i * n + j]]
        if node["state"] == 5:
            assert {4, 5} & set(before)
        else:
            assert node["state"] == 4 and all(s == 3 for s in before)

    status, listed = await api.call("GET", "/v1/tasks/")
    assert status == 200 and len(listed["tasks"]) == 3
    assert sorted(t["state"] for t in listed["tasks"]) == ["Failure", "Failure", "Success"]


async def test_tokens_are_checked_and_viewers_only_read(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("tok", "test")
    await master.create_scenario("elsewhere", [("box", "linux")])
    operator, _ = await master.create_token("operator")
    viewer, _ = await master.create_token("viewer", scenario="tok")
    anonymous = Api(http, hub, "")
    message = await anonymous.refused("GET", "/v1/tasks", 401, "unauthorized")
    assert "Bearer" in message
    await Api(http, hub, "not-a-token").refused("GET", "/v1/tasks", 401, "unauthorized")
    forged = operator[: operator.index(".") + 1] + "A" * 43
    await Api(http, hub, forged).refused("GET", "/v1/tasks", 401, "unauthorized")

    ops = Api(http, hub, operator)
    simple = {"name": "one", "digraph": [0], "nodes": [{"id": 0, "name": "x", "engine": "shell", "artifact": "true"}]}
    await ops.refused("POST", "/v1/tasks", 400, "invalid_request", simple)  # an unscoped token names the scenario
    status, created = await ops.call("POST", "/v1/tasks", simple, scenario="tok", target="test")
    assert status == 202, created
    assert (await ops.wait_done(created["id"]))["state"] == 3

    views = Api(http, hub, viewer)
    status, shown = await views.call("GET", f"/v1/tasks/{created['id']}")
    assert status == 200 and shown["nodes"][0]["state"] == 3
    assert "viewer" in await views.refused("POST", "/v1/tasks", 403, "forbidden", simple, target="test")
    await views.refused("DELETE", f"/v1/tasks/{created['id']}", 403, "forbidden")
    await views.refused("GET", "/v1/tasks", 403, "forbidden", scenario="elsewhere")  # outside its scope
    await ops.refused("GET", "/v1/tasks/no-such-task", 404, "not_found")

    listed = await asyncio.to_thread(run_crc, hub, "--json", "token", "list")
    assert listed.returncode == 0, listed.stderr
    tokens = json.loads(listed.stdout)
    assert {t["role"] for t in tokens} == {"operator", "viewer"}
    assert all("secret_hash" not in t and "sealed_key" not in t for t in tokens)

    operator_id = operator.removeprefix("crc_").split(".")[0]
    revoked = await asyncio.to_thread(run_crc, hub, "token", "revoke", operator_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in await ops.refused("GET", "/v1/tasks", 401, "unauthorized", scenario="tok")

    brief, _ = await master.create_token("viewer", ttl=1)
    await asyncio.sleep(1.2)
    assert "expired" in await Api(http, hub, brief).refused("GET", "/v1/tasks", 401, "unauthorized")

    made = await asyncio.to_thread(run_crc, hub, "token", "create", "--role", "operator", "--scenario", "tok")
    assert made.returncode == 0 and made.stdout.startswith("crc_"), made.stderr
    status, _ = await Api(http, hub, made.stdout.strip()).call("GET", "/v1/tasks")
    assert status == 200
    with pytest.raises(RemoteError, match="not_found"):
        await master.create_token("viewer", scenario="no-such-scenario")


async def test_a_task_is_cancelled_and_bad_tasks_are_refused_before_anything_runs(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("cx", "test", "web")
    token, _ = await master.create_token("operator", scenario="cx")
    api = Api(http, hub, token)
    wait = {"id": 0, "name": "wait", "engine": "shell", "artifact": "sleep", "args": ["30"], "target": "test"}
    after = {"id": 1, "name": "after", "engine": "shell", "artifact": "true", "target": "all"}
    slow = {"name": "slow", "digraph": [0, 1, 0, 0], "nodes": [wait, after]}
    status, created = await api.call("POST", "/v1/tasks", slow)
    assert status == 202
    for _ in range(50):
        if (await api.call("GET", f"/v1/tasks/{created['id']}"))[1]["nodes"][0]["state"] == 2:
            break
        await asyncio.sleep(0.1)
    status, cancelled = await api.call("DELETE", f"/v1/tasks/{created['id']}")
    assert status == 200, cancelled
    assert cancelled["state"] == 11 and [n["state"] for n in cancelled["nodes"]] == [11, 11]

    cyclic = {"name": "c", "digraph": [0, 1, 1, 0], "nodes": [
        {"id": 0, "name": "a", "artifact": "true", "target": "test"},
        {"id": 1, "name": "b", "artifact": "true", "target": "test"}]}  # fmt: skip
    assert "cycle" in await api.refused("POST", "/v1/tasks", 400, "invalid_request", cyclic)
    ghost = {"name": "g", "digraph": [0], "nodes": [{"id": 0, "name": "a", "artifact": "true", "target": "ghost"}]}
    assert "ghost" in await api.refused("POST", "/v1/tasks", 400, "invalid_request", ghost)
    await api.refused("POST", "/v1/tasks", 400, "invalid_request", {"name": "m", "digraph": [0, 1], "nodes": []})
    await api.refused("POST", "/v1/tasks", 400, "invalid_request", b"{not json")
    await api.refused("POST", "/v1/tasks", 413, "frame_too_large", b"[" + b"0," * 600_000 + b"0]")
    await api.refused("PUT", "/v1/tasks", 405, "method_not_allowed")
    assert len((await api.call("GET", "/v1/tasks"))[1]["tasks"]) == 1  # only the cancelled one was ever taken
