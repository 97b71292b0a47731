"""The REST API for scripts and the dashboard, against a real hub and real daemons: what a token sees (its
master's scenarios, or its one scenario), events from a cursor, stored results and plans, commands run by an
operator token (signed through its delegation, verified by the daemon) and refused to a viewer, server-sent events
that resume from Last-Event-ID, and the dashboard's WebSocket feed with live output."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from clients.link import hub_http_url
from clients.master.sdk import Master
from tests.e2e.support import HubProcess
from tests.e2e.test_rest_tasks import Api


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def wait_for_result(api: Api, scenario: str, order_id: str) -> dict[str, Any]:
    for _ in range(150):
        status, answer = await api.call("GET", f"/v1/scenarios/{scenario}/results", order_id=order_id)
        assert status == 200, answer
        if answer["results"] and answer["results"][0]["state"] not in ("queued", "delivered", "running"):
            return dict(answer["results"][0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for {order_id}")


async def test_tokens_read_their_scenarios_and_operators_run_commands(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("api", "db", "web")
    await master.create_scenario("other", [("box", "linux")])
    operator = Api(http, hub, (await master.create_token("operator", label="ci"))[0])
    viewer = Api(http, hub, (await master.create_token("viewer", scenario="api"))[0])

    assert (await operator.call("GET", "/v1/me"))[1]["role"] == "operator"
    status, me = await viewer.call("GET", "/v1/me")
    assert (status, me["role"], me["scenario"]) == (200, "viewer", "api")
    listed = (await operator.call("GET", "/v1/scenarios"))[1]["scenarios"]
    assert [(s["name"], s["machines"], s["ready"]) for s in listed] == [("api", 2, 2), ("other", 1, 0)]
    assert [s["name"] for s in (await viewer.call("GET", "/v1/scenarios"))[1]["scenarios"]] == ["api"]
    await viewer.refused("GET", "/v1/scenarios/other", 403, "forbidden")
    await operator.refused("GET", "/v1/scenarios/nope", 404, "not_found")
    shown = (await viewer.call("GET", "/v1/scenarios/api"))[1]
    assert {m["name"]: m["status"] for m in shown["machines"]} == {"db": "ready", "web": "ready"}
    assert all("report_key" not in m for m in shown["machines"])

    status, queued = await operator.call(
        "POST", "/v1/scenarios/api/commands", {"target": "all", "command": "echo hi $CRC_MACHINE"}
    )
    assert status == 202 and sorted(o["machine"] for o in queued["orders"]) == ["db", "web"], queued
    for order in queued["orders"]:
        result = await wait_for_result(viewer, "api", order["order_id"])
        assert (result["state"], result["exit_code"], result["stdout"]) == ("succeeded", 0, f"hi {order['machine']}\n")
        assert result["delegated_by"] == (await operator.call("GET", "/v1/me"))[1]["token"]
    # the SDK's results (daemon signatures checked by the master) show the same
    assert {r.order_id for r in await master.results("api")} >= {o["order_id"] for o in queued["orders"]}

    message = await viewer.refused(
        "POST", "/v1/scenarios/api/commands", 403, "forbidden", {"target": "all", "command": "true"}
    )
    assert "viewer" in message
    await operator.refused(
        "POST", "/v1/scenarios/api/commands", 404, "not_found", {"target": "ghost", "command": "true"}
    )
    await operator.refused("POST", "/v1/scenarios/api/commands", 400, "invalid_request", {"target": "all"})
    await operator.refused("POST", "/v1/scenarios/api/commands", 400, "invalid_request", [1, 2])

    events = (await viewer.call("GET", "/v1/scenarios/api/events", after="0", limit="3"))[1]
    assert [e["cursor"] for e in events["events"]] == [1, 2, 3] and events["head"] >= 10
    rest = (await viewer.call("GET", "/v1/scenarios/api/events", after="3"))[1]["events"]
    assert rest[0]["cursor"] == 4 and "command_finished" in {e["kind"] for e in rest}
    await viewer.refused("GET", "/v1/scenarios/api/events", 400, "invalid_request", after="soon")

    await master.wait_plan("api", (await master.run_plan("api", {"name": "p", "steps": [
        {"id": "a", "target": "db", "command": "true"}, {"id": "b", "target": "web", "command": "true",
                                                          "depends_on": ["a"]}]}))["id"])  # fmt: skip
    plans = (await viewer.call("GET", "/v1/scenarios/api/plans"))[1]["plans"]
    assert [(s["id"], s["state"]) for s in plans[0]["steps"]] == [("a", "succeeded"), ("b", "succeeded")]


async def read_sse(response: aiohttp.ClientResponse, until: Any) -> list[dict[str, Any]]:
    """Frames of a server-sent event stream (id, event, data) until ``until(frames)`` is true."""
    frames: list[dict[str, Any]] = []
    frame: dict[str, Any] = {}
    async with asyncio.timeout(20):
        while not until(frames):
            line = (await response.content.readline()).decode().rstrip("\n")
            if not line:
                if frame:
                    frames.append(frame)
                frame = {}
            elif not line.startswith(":"):
                field, _, value = line.partition(": ")
                frame[field] = json.loads(value) if field == "data" else value
    return frames


async def test_server_sent_events_stream_live_and_resume(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("sse", "box")
    token = (await master.create_token("viewer", scenario="sse"))[0]
    url = hub_http_url(hub.url) + "/v1/scenarios/sse/events/stream"
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=headers, params={"after": "0"}) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        await master.run("sse", "box", "for i in 1 2 3; do echo tick-$i; sleep 0.2; done")
        frames = await read_sse(response, lambda f: any(x.get("event") == "command_finished" for x in f))
    events = [f for f in frames if "id" in f]
    cursors = [int(f["id"]) for f in events]
    assert cursors == list(range(1, len(cursors) + 1))  # from the start, in order, no gaps
    assert "tick-1" in "".join(f["data"]["data"] for f in frames if f.get("event") == "output")
    # Resume after the third event: exactly what followed it.
    async with http.get(url, headers={**headers, "Last-Event-ID": "3"}) as response:
        again = await read_sse(response, lambda f: len([x for x in f if "id" in x]) >= len(cursors) - 3)
    assert [int(f["id"]) for f in again if "id" in f][: len(cursors) - 3] == cursors[3:]
    async with http.get(url) as response:
        assert response.status == 401 and (await response.json())["error"]["code"] == "unauthorized"


async def test_the_live_websocket_replays_from_a_cursor_then_pushes_events_and_output(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("ws", "box")
    token = (await master.create_token("viewer", scenario="ws"))[0]
    url = hub_http_url(hub.url).replace("http", "ws", 1) + "/v1/live"
    async with http.ws_connect(url) as ws:
        await ws.send_json({"token": "crc_0123456789abcdef.nope", "scenario": "ws"})
        refused = await ws.receive_json(timeout=10)
        assert (refused["type"], refused["code"]) == ("error", "unauthorized")
    async with http.ws_connect(url) as ws:
        await ws.send_json({"token": token, "scenario": "ws", "after": 2})
        welcome = await ws.receive_json(timeout=10)
        assert welcome["type"] == "welcome" and welcome["role"] == "viewer" and welcome["after"] == 2
        await master.run("ws", "box", "echo live-output; sleep 0.3")
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not any(m.get("kind") == "command_finished" for m in seen):
                seen.append(await ws.receive_json())
    events = [m for m in seen if m["type"] == "event"]
    assert [e["cursor"] for e in events] == list(range(3, 3 + len(events)))
    assert any(m["type"] == "output" and "live-output" in m["data"] and m["machine"] == "box" for m in seen)


async def test_tokens_have_a_request_budget_and_failed_sign_ins_are_limited_per_address(
    http: aiohttp.ClientSession, make_hub
) -> None:
    hub = make_hub(env={"CRC_REST_RATE": "2", "CRC_REST_BURST": "5"})
    async with await Master.connect(hub.url, hub.key_path) as master:
        await master.create_scenario("rl", [("box", "linux")])
        token = (await master.create_token("viewer"))[0]
        other = (await master.create_token("viewer"))[0]
    api = Api(http, hub, token)
    statuses = [(await api.call("GET", "/v1/scenarios"))[0] for _ in range(12)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
    message = await api.refused("GET", "/v1/scenarios", 429, "rate_limited")
    assert "requests/s" in message
    assert (await Api(http, hub, other).call("GET", "/v1/scenarios"))[0] == 200  # budgets are per token
    # Guessing: 30 failed sign-ins from one address, then even a good token waits (a minute).
    for _ in range(30):
        await Api(http, hub, "crc_0123456789abcdef.AAAA").refused("GET", "/v1/me", 401, "unauthorized")
    assert "failed sign-ins" in await Api(http, hub, other).refused("GET", "/v1/me", 429, "rate_limited")
