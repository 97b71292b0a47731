"""What a sealed scenario leaves readable outside the master, hunted end to end (issue 19): a Redis-backed hub's
AOF and RDB files, every REST, SSE and dashboard payload an access token can fetch, what a second tenant can
reach, and orders replayed or spliced directly in the hub's SQLite store.

Each test runs the sealed flow of ``test_sealed_scenarios`` (a command with output and a secret parameter, a hosts
entry, a put, a plan step) and greps for its marker strings. A grep that finds nothing proves little unless it
could have found something, so where the medium is new (Redis files) an unsealed control run on the same hub
must show its own markers there.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.link import hub_http_url
from clients.master.keys import write_private_key
from clients.master.models import CommandResult, OutputChunk
from clients.master.sdk import Master
from protocol import Identity
from tests.e2e.support import Daemons, HubProcess, eventually, run_crc, wait_results
from tests.e2e.test_rest_tasks import Api
from tests.e2e.test_sealed_scenarios import (
    COMMAND_MARK,
    FILE_MARK,
    HOSTS_MARK,
    MARKS,
    PLAN_MARK,
    sealed_scenario,
)
from tests.e2e.test_tenancy import expect_not_found
from tests.redis_server import RedisServer, command

SECRET_MARK = "secret-mark-4e0a"  # a secret parameter's value: sealed everywhere, and redacted from the output
SEALED_MARKS = (*MARKS, SECRET_MARK)
STREAM_TIMEOUT = 20.0


@dataclass(frozen=True)
class Marks:
    """The strings one run of the flow puts in a command text, its output, a hosts entry, a file and a plan step."""

    command: str
    output: tuple[str, str]  # printed joined by "-", so the command text never holds the output marker whole
    hosts: str
    file: str
    plan: str

    @property
    def all(self) -> tuple[str, ...]:
        return self.command, "-".join(self.output), self.hosts, self.file, self.plan


SEALED = Marks(COMMAND_MARK, ("out-mark", "9c2d"), HOSTS_MARK, FILE_MARK, PLAN_MARK)
assert set(SEALED.all) == set(MARKS)  # the same markers test_sealed_scenarios hunts for
CONTROL = Marks("ctl-cmd-7a1b", ("ctl-out", "2b3c"), "ctl-hosts-d4e5", "ctl-file-f607", "ctl-plan-8192")


def found(data: bytes | str, marks: tuple[str, ...] = SEALED_MARKS) -> list[str]:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return [mark for mark in marks if mark in text]


def files_with(folder: Path, marks: tuple[str, ...] = SEALED_MARKS) -> dict[str, list[str]]:
    """Every file under ``folder`` holding a marker, with the markers it holds."""
    hits = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (marks_in := found(path.read_bytes(), marks)):
            hits[str(path.relative_to(folder))] = marks_in
    return hits


async def run_flow(
    master: Master,
    scenario: str,
    marks: Marks,
    tmp_path: Path,
    *,
    on_output: Callable[[OutputChunk], None] | None = None,
) -> list[CommandResult]:
    """Commands (one with a secret parameter it echoes), a hosts entry, a put and a plan step, each checked done.

    The command pauses between its lines so live output is still flowing when a stream reader looks."""
    out_a, out_b = marks.output
    text = f'# {marks.command}\nprintf "%s-%s\\n" {out_a} {out_b}; sleep 0.3; echo "pw=$DB_PASSWORD"'
    results = await master.run(
        scenario, "all", text, secrets={"DB_PASSWORD": SECRET_MARK}, on_output=on_output, wait_timeout=30
    )
    for r in results:  # the master opened the output; the daemon masked the secret before it left the machine
        assert (r.status, r.stdout, r.redacted) == ("succeeded", f"{out_a}-{out_b}\npw=***\n".encode(), 1), r
    hosts = await master.distribute_hosts(scenario, "all", extra={marks.hosts: "10.9.8.7"}, wait_timeout=30)
    assert all(r.ok for r in hosts), hosts
    target = tmp_path / f"{scenario}-put.conf"
    machine = (await master.scenario(scenario)).machines[0].name
    put = await master.put_file(scenario, machine, f"password = {marks.file}\n".encode(), str(target))
    assert put[0].ok and target.read_text() == f"password = {marks.file}\n", put
    plan = {"name": "p", "steps": [{"id": "s", "target": machine, "command": f"echo {marks.plan} | tr a-z A-Z"}]}
    done = await master.wait_plan(scenario, (await master.run_plan(scenario, plan))["id"], timeout=30)
    assert [s["state"] for s in done["steps"]] == ["succeeded"], done
    return results + hosts + put


async def open_scenario(hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path, name: str) -> None:
    """An unsealed scenario with one machine, ``box``, whose daemon is running."""
    [minted] = await master.create_scenario(name, [("box", "linux")])
    config = tmp_path / f"{name}-box.toml"
    write_config(config, DaemonConfig(hub.url, name, "box", minted.identity, master.identity.public))
    daemons.start(config)
    await master.wait_ready(name, timeout=30)


# 1. A Redis-backed hub: its append-only file and its snapshot


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, in its tmp dir, that writes every command to its AOF before answering and
    stores its snapshot uncompressed: so a grep of its files sees every byte the hub ever stored (LZF would
    hide a marker inside a compressed string, making "not found" meaningless)."""
    server = RedisServer(tmp_path / "redis", extra_args=["--appendfsync", "always", "--rdbcompression", "no"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_hub(tmp_path: Path, persistent_redis: RedisServer) -> Iterator[HubProcess]:
    hub = HubProcess(tmp_path / "rhub", extra_args=["--redis", persistent_redis.url, "--replica-id", "r0"])
    try:
        hub.start()
        yield hub
    finally:
        hub.cleanup()


async def test_a_redis_backed_hubs_aof_rdb_and_log_hold_nothing_of_a_sealed_scenario(
    redis_hub: HubProcess, persistent_redis: RedisServer, daemons: Daemons, tmp_path: Path
) -> None:
    async with await Master.connect(redis_hub.url, redis_hub.key_path, timeout=10) as master:
        await sealed_scenario(redis_hub, master, daemons, tmp_path)
        await run_flow(master, "vault", SEALED, tmp_path)
        # the control: the same flow, unsealed, on the same hub and Redis, with markers of its own
        await open_scenario(redis_hub, master, daemons, tmp_path, "open")
        await run_flow(master, "open", CONTROL, tmp_path)
    assert command(persistent_redis.host, persistent_redis.port, "SAVE") == b"+OK"
    aof_dir = persistent_redis.directory / "appendonlydir"
    aofs = sorted(p for p in aof_dir.iterdir() if p.is_file() and ".aof" in p.name and p.stat().st_size)
    rdb = persistent_redis.directory / "dump.rdb"
    assert aofs and rdb.is_file(), sorted(persistent_redis.directory.rglob("*"))

    assert files_with(persistent_redis.directory) == {}
    assert files_with(redis_hub.data_dir) == {}
    assert found(redis_hub.log_text()) == []
    # The grep sees what the hub stores in plain: the unsealed run's command text and output are in both the
    # append-only log and the snapshot, its hosts entry, file content and plan step at least in the log (a put's
    # chunks are deleted once it ran, so a snapshot taken later need not hold them).
    aof_text = b"".join(p.read_bytes() for p in aofs)
    assert found(aof_text, CONTROL.all) == list(CONTROL.all)
    assert set(found(rdb.read_bytes(), CONTROL.all)) >= {CONTROL.command, "-".join(CONTROL.output), CONTROL.plan}
    assert found(rdb.read_bytes(), SEALED_MARKS) == [] and found(aof_text, SEALED_MARKS) == []


# 2. Every REST, SSE and dashboard payload


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture(scope="module")
def bob_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bob") / "bob.key"
    write_private_key(path, Identity.generate(secrets.token_bytes))
    return path


@pytest.fixture
def hub(make_hub: Callable[..., HubProcess], bob_key: Path) -> HubProcess:
    """A SQLite hub (``--dev``: the test's master) with a second master, bob, enrolled before it starts."""
    hub = make_hub(start=False)
    bob_public = Identity.from_private_text(bob_key.read_text()).public.to_text()
    enrolled = run_crc(hub, "hub", "enroll-master", "bob", bob_public, "--data-dir", str(hub.data_dir))
    assert enrolled.returncode == 0, enrolled.stderr
    hub.start()
    return hub


class Stream:
    """A background reader of a live stream that keeps every raw frame and the highest event cursor seen."""

    def __init__(self) -> None:
        self.raw: list[str] = []
        self.cursor = 0
        self.outputs = 0
        self.task: asyncio.Task[None] | None = None

    async def until(self, cursor: int) -> None:
        """Bounded: every event up to ``cursor`` arrived, or the test fails."""
        await eventually(lambda: self.cursor >= cursor, timeout=STREAM_TIMEOUT, what=f"the stream to reach {cursor}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@contextlib.asynccontextmanager
async def sse_stream(http: aiohttp.ClientSession, hub: HubProcess, token: str, scenario: str) -> AsyncIterator[Stream]:
    stream = Stream()
    url = hub_http_url(hub.url) + f"/v1/scenarios/{scenario}/events/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)  # a live stream: its reader is cancelled at the end
    async with http.get(url, headers={"Authorization": f"Bearer {token}"}, params={"after": "0"},
                        timeout=timeout) as response:  # fmt: skip
        assert response.status == 200, await response.text()

        async def read() -> None:
            async for line in response.content:
                text = line.decode(errors="replace")
                stream.raw.append(text)
                if text.startswith("id: "):
                    stream.cursor = max(stream.cursor, int(text[4:]))
                elif text.startswith("event: output"):
                    stream.outputs += 1

        stream.task = asyncio.create_task(read())
        try:
            await stream.until(1)  # the replay began, so the hub listens for live output from here on
            yield stream
        finally:
            await stream.stop()


@contextlib.asynccontextmanager
async def live_socket(http: aiohttp.ClientSession, hub: HubProcess, token: str, scenario: str) -> AsyncIterator[Stream]:
    """The dashboard's feed (``/v1/live``), signed in as the dashboard does: the token in the first message."""
    stream = Stream()
    url = hub_http_url(hub.url).replace("http", "ws", 1) + "/v1/live"
    async with http.ws_connect(url) as ws:
        await ws.send_json({"token": token, "scenario": scenario, "after": 0})

        async def read() -> None:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                stream.raw.append(message.data)
                item = json.loads(message.data)
                if item.get("type") == "event":
                    stream.cursor = max(stream.cursor, int(item["cursor"]))
                elif item.get("type") == "output":
                    stream.outputs += 1

        stream.task = asyncio.create_task(read())
        try:
            await stream.until(1)
            yield stream
        finally:
            await stream.stop()


async def every_payload(api: Api, scenario: str, *, scoped: bool) -> list[str]:
    """The JSON of every GET a token can make about ``scenario`` (and the dashboard's own files), as text."""
    bodies: list[str] = []

    async def get(path: str, **params: str) -> Any:
        status, answer = await api.call("GET", path, **params)
        assert status == 200, (path, answer)
        bodies.append(json.dumps(answer))
        return answer

    query = {} if scoped else {"scenario": scenario}
    await get("/v1/me")
    await get("/v1/scenarios")
    await get(f"/v1/scenarios/{scenario}", limit="10000")
    head = (await get(f"/v1/scenarios/{scenario}/events", after="0"))["head"]
    after = 0
    for _ in range(100):  # paged: 500 a page, far more than this scenario has
        page = (await get(f"/v1/scenarios/{scenario}/events", after=str(after)))["events"]
        if not page:
            break
        after = page[-1]["cursor"]
    assert after >= head > 0
    results = (await get(f"/v1/scenarios/{scenario}/results", limit="100"))["results"]
    assert results
    for result in results:
        await get(f"/v1/scenarios/{scenario}/results", order_id=result["order_id"])
    plans = (await get(f"/v1/scenarios/{scenario}/plans"))["plans"]
    assert plans
    tasks = (await get("/v1/tasks/", **query))["tasks"]
    assert {t["id"] for t in tasks} == {p["id"] for p in plans}
    for task in tasks:
        await get(f"/v1/tasks/{task['id']}")
    for path in ("/", "/static/app.js", "/static/index.html"):  # the dashboard: static, but checked all the same
        async with api.http.get(api.base + path) as reply:
            if reply.status == 200:
                bodies.append(await reply.text())
    return bodies


async def test_no_rest_sse_or_dashboard_payload_shows_a_sealed_scenario_and_tokens_cannot_command_it(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    viewer_text = await asyncio.to_thread(run_crc, hub, "token", "create", "--role", "viewer", "--scenario", "vault")
    assert viewer_text.returncode == 0, viewer_text.stderr
    viewer = Api(http, hub, viewer_text.stdout.strip())
    operator = Api(http, hub, (await master.create_token("operator"))[0])  # unscoped: names its scenario

    async with contextlib.AsyncExitStack() as streams:
        sse = await streams.enter_async_context(sse_stream(http, hub, viewer.token, "vault"))
        ws = await streams.enter_async_context(live_socket(http, hub, operator.token, "vault"))
        await run_flow(master, "vault", SEALED, tmp_path)

        # An operator token tries to command the sealed scenario through REST, as a command and as a task.
        ran = tmp_path / "rest-ran"
        status, queued = await operator.call(
            "POST", "/v1/scenarios/vault/commands", {"target": "all", "command": f"touch {ran}"}
        )
        assert status == 202 and len(queued["orders"]) == 2, queued
        task = {"name": "t", "digraph": [0], "nodes": [{"id": 0, "name": "x", "target": "web", "engine": "shell",
                                                        "artifact": f"touch {ran}-task"}]}  # fmt: skip
        status, created = await operator.call("POST", "/v1/tasks", task, scenario="vault")
        assert status == 202, created
        refused = await wait_results(master, "vault", [o["order_id"] for o in queued["orders"]], timeout=30)
        for r in refused:  # the hub took them; each daemon refused them, signed, and nothing ran
            assert r.status == "rejected" and r.verified, r
            assert "scenario is sealed: orders signed under an access token are refused" in r.error, r
        done = await operator.wait_done(created["id"], timeout=30)
        assert [n["step_state"] for n in done["nodes"]] == ["failed"] and done["state"] == 4, done
        assert not ran.exists() and not Path(f"{ran}-task").exists()

        head = (await viewer.call("GET", "/v1/scenarios/vault/events", after="0", limit="1"))[1]["head"]
        await sse.until(head)
        await ws.until(head)
    assert sse.outputs and ws.outputs, "live output of the sealed commands reached both streams (as ciphertext)"
    for name, raw in (("SSE", sse.raw), ("live WebSocket", ws.raw)):
        assert found("".join(raw)) == [], name
    for api, scoped in ((viewer, True), (operator, False)):
        for body in await every_payload(api, "vault", scoped=scoped):
            assert found(body) == [], body[:2000]
    assert found(hub.log_text()) == []
    # the control: the same requests about an unsealed scenario do show its command texts and output
    await open_scenario(hub, master, daemons, tmp_path, "open")
    await run_flow(master, "open", CONTROL, tmp_path)
    shown = "".join(await every_payload(operator, "open", scoped=False))
    assert set(found(shown, CONTROL.all)) >= {CONTROL.command, "-".join(CONTROL.output), CONTROL.plan}
    assert found(shown) == []  # the secret stays sealed there too


# 3. A second tenant on the same hub


async def test_a_second_tenant_gets_not_found_for_a_sealed_scenario_and_reaches_none_of_it(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, daemons: Daemons, bob_key: Path, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    await run_flow(master, "vault", SEALED, tmp_path)
    plan_ids = [p["id"] for p in await master.plans("vault")]
    order_ids = [r.order_id for r in await master.results("vault")]
    ran = tmp_path / "bob-ran"
    async with await Master.connect(hub.url, bob_key, timeout=10) as bob:
        assert "vault" not in [s["name"] for s in await bob.scenarios()]
        await expect_not_found(bob.scenario("vault"))
        await expect_not_found(bob.results("vault"))
        await expect_not_found(bob.results("vault", order_ids))
        await expect_not_found(bob.plans("vault"))
        for plan_id in plan_ids:
            await expect_not_found(bob.plan("vault", plan_id))
        await expect_not_found(anext(aiter(bob.events("vault", 0, follow=False))))
        await expect_not_found(bob.run("vault", "all", f"touch {ran}", wait_timeout=2))
        await bob.create_scenario("bobs", [("box", "linux")])  # so his tokens have something of their own to list
        tokens = [(await bob.create_token("viewer"))[0], (await bob.create_token("operator"))[0]]
    bodies: list[str] = []
    for token in tokens:
        api = Api(http, hub, token)
        for path in ("", "/events", "/events/stream", "/results", "/plans"):
            bodies.append(await api.refused("GET", f"/v1/scenarios/vault{path}", 404, "not_found"))
        bodies.append(await api.refused("GET", "/v1/tasks/", 404, "not_found", scenario="vault"))
        for plan_id in plan_ids:
            bodies.append(await api.refused("GET", f"/v1/tasks/{plan_id}", 404, "not_found"))
        for path in ("/v1/me", "/v1/scenarios", "/v1/tasks/"):
            status, answer = await api.call("GET", path)
            assert status == 200, answer
            bodies.append(json.dumps(answer))
        assert [s["name"] for s in json.loads(bodies[-2])["scenarios"]] == ["bobs"]
        async with http.ws_connect(hub_http_url(hub.url).replace("http", "ws", 1) + "/v1/live") as ws:
            await ws.send_json({"token": token, "scenario": "vault", "after": 0})
            refused = await ws.receive_json(timeout=10)
            assert (refused["type"], refused["code"]) == ("error", "not_found"), refused
    operator = Api(http, hub, tokens[1])
    command_body = {"target": "all", "command": f"touch {ran}"}
    bodies.append(await operator.refused("POST", "/v1/scenarios/vault/commands", 404, "not_found", command_body))
    assert not ran.exists()
    assert [body for body in bodies if found(body)] == []


# 4. Orders replayed or spliced in the hub's SQLite store


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


def _stored(hub: HubProcess, order_id: str) -> tuple[str, dict[str, Any], bytes]:
    """An order's state, its signed wire form as the hub keeps it, and the raw row (to grep)."""
    with _db(hub) as db:
        state, body = db.execute("SELECT state, body FROM orders WHERE id = ?", (order_id,)).fetchone()
    return str(state), dict(msgpack.unpackb(body, raw=False)), bytes(body)


def _store(hub: HubProcess, order_id: str, wire: dict[str, Any]) -> None:
    with _db(hub) as db:
        db.execute("UPDATE orders SET body = ? WHERE id = ?", (msgpack.packb(wire, use_bin_type=True), order_id))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_sealed_orders_spliced_or_requeued_in_the_store_are_refused_and_nothing_runs_twice(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await sealed_scenario(hub, master, daemons, tmp_path)
    web, db = daemons.started["web"], daemons.started["db"]
    for daemon in (web, db):
        assert daemon.terminate() == 0

    async def offline() -> bool:
        return all(m.status != "ready" for m in (await master.scenario("vault")).machines)

    await eventually(offline, timeout=15, what="both machines to be offline")
    marks = tmp_path / "marks"
    marks.mkdir()

    async def queue(machine: str, label: str) -> str:
        [queued] = await master.run("vault", machine, f"echo ran >> {marks / label}; echo {label}", wait=False)
        return queued.order_id

    a, b, c, d = await queue("web", "a"), await queue("db", "b"), await queue("web", "c"), await queue("web", "d")
    rows = {order_id: _stored(hub, order_id) for order_id in (a, b, c, d)}
    assert {state for state, _, _ in rows.values()} == {"queued"}
    assert not any(str(marks) in raw.decode(errors="replace") for _, _, raw in rows.values())  # sealed bodies
    source = rows[a][1]
    _store(hub, b, {**rows[b][1], "body": source["body"]})  # a's sealed body under b's signature, another machine
    _store(hub, c, {**rows[c][1], "body": source["body"]})  # the same, on a's own machine
    _store(hub, d, dict(source))  # a's whole signed order in d's row: a replay of a

    web.start()
    db.start()
    done_a, done_b, done_c = await wait_results(master, "vault", [a, b, c], timeout=30)
    assert (done_a.status, done_a.stdout, done_a.verified) == ("succeeded", b"a\n", True), done_a
    for spliced in (done_b, done_c):
        assert spliced.status == "rejected" and spliced.verified, spliced
        assert "refused by the daemon" in spliced.error and "signature" in spliced.error, spliced
    # d's row carries a's id: web answers it as the order it ran already (acknowledged, its result sent again),
    # so d itself never gets a result; it is never run as d nor as a again.
    await asyncio.sleep(1.0)  # what a second run would take to show up
    assert _stored(hub, d)[0] in ("queued", "delivered")
    assert _lines(marks / "a") == ["ran"] and sorted(p.name for p in marks.iterdir()) == ["a"]

    # An order that ran, put back in the queue in the store: delivered again on the next session, not run again.
    with _db(hub) as store:
        store.execute("UPDATE orders SET state = 'queued', result = NULL WHERE id IN (?, ?)", (a, b))
    assert (await master.results("vault", [a]))[0].status == "queued"
    web.restart()
    db.restart()
    again_a, again_b = await wait_results(master, "vault", [a, b], timeout=30)
    assert (again_a.status, again_a.stdout, again_a.verified) == ("succeeded", b"a\n", True), again_a
    assert again_b.status == "rejected", again_b
    await asyncio.sleep(1.0)
    assert _lines(marks / "a") == ["ran"] and sorted(p.name for p in marks.iterdir()) == ["a"]
    assert "refusing order" in web.log_text() and "refusing order" in db.log_text()
