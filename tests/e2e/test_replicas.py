"""Several hub replicas sharing a real Redis, behind a real nginx: any replica serves any master or daemon."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.daemon.enroll import EnrollError, enroll
from clients.master.models import EventInfo, OutputChunk
from clients.master.sdk import Master
from protocol import OrderKind, RemoteError
from tests.e2e.support import (
    PYTHON,
    DaemonProcess,
    Daemons,
    HubProcess,
    Process,
    child_env,
    eventually,
    file_lines,
    run_crc,
    wait_results,
)
from tests.nginx_server import MISSING, Nginx, free_port, nginx_binary
from tests.redis_server import RedisServer


@dataclass
class Cluster:
    """Hub replicas on one Redis, nginx in front, and daemons whose configs point where a test wants."""

    base: Path
    redis: RedisServer
    daemons: Daemons
    replicas: list[HubProcess] = field(default_factory=list)
    nginx: Nginx | None = None

    def add_replica(
        self, *, heartbeat_interval: float = 0.5, dead_after: float = 3.0, start: bool = True
    ) -> HubProcess:
        index = len(self.replicas)
        hub = HubProcess(
            self.base / f"replica{index}",
            heartbeat_interval=heartbeat_interval,
            dead_after=dead_after,
            extra_args=["--redis", self.redis.url, "--replica-id", f"r{index}"],
            key_path=self.base / "master.key",
            name=f"replica{index}",
        )
        hub.port = free_port()
        if start:
            hub.start()
        self.replicas.append(hub)
        return hub

    def start_nginx(self) -> Nginx:
        self.nginx = Nginx(self.base / "nginx", [r.port for r in self.replicas])
        self.nginx.start()
        return self.nginx

    async def master(self, url: str) -> Master:
        return await Master.connect(url, self.base / "master.key", timeout=10)

    async def deploy(self, master: Master, scenario: str, machines: dict[str, str]) -> dict[str, DaemonProcess]:
        """Create the scenario and start one daemon per machine, each connecting to the URL given for it."""
        minted = await master.create_scenario(scenario, [(name, "linux") for name in machines])
        started = {}
        for m in minted:
            path = self.base / "configs" / scenario / f"{m.name}.toml"
            write_config(path, DaemonConfig(machines[m.name], scenario, m.name, m.identity, master.identity.public))
            started[m.name] = self.daemons.start(path, f"{scenario}-{m.name}")
        await master.wait_ready(scenario, timeout=20)
        return started


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, redis_server: RedisServer) -> Iterator[Cluster]:
    group = Cluster(tmp_path, redis_server, Daemons(tmp_path / "daemons"))
    try:
        yield group
    finally:
        group.daemons.cleanup()
        if group.nginx is not None:
            group.nginx.stop()
        for replica in group.replicas:
            replica.cleanup()


@pytest.fixture
def need_nginx() -> None:
    if nginx_binary() is None:
        pytest.fail(MISSING, pytrace=False)


@pytest.fixture
async def masters(cluster: Cluster) -> AsyncIterator[Callable[[str], Awaitable[Master]]]:
    opened: list[Master] = []

    async def open_master(url: str) -> Master:
        master = await cluster.master(url)
        opened.append(master)
        return master

    yield open_master
    for master in opened:
        await master.close()


async def test_a_command_sent_through_one_replica_runs_on_a_daemon_of_another(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]]
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)
    await cluster.deploy(master, "split", {"db": b.url})
    chunks: list[OutputChunk] = []

    (result,) = await master.run("split", "db", "echo from-$((40+2)); exit 3", on_output=chunks.append, wait_timeout=20)

    assert (result.status, result.exit_code, result.verified) == ("failed", 3, True)
    assert result.stdout == b"from-42\n"
    assert b"".join(c.data for c in chunks) == b"from-42\n"


async def test_a_token_of_15_uses_lets_exactly_15_of_20_machines_join_across_two_replicas(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]]
) -> None:
    """The uses are counted in the shared store in one script, so two replicas taking joins at the same moment
    never let a 16th in; the refused ones are told why."""
    a, b = cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)
    await master.create_scenario("farm", [("db", "linux")])
    token = await master.create_enrollment("farm", "workers", uses=15)

    async def join(index: int) -> str:
        try:
            await enroll(a.url if index % 2 else b.url, token, f"w{index:02}", "linux")
        except EnrollError as exc:
            return str(exc)
        return "joined"

    outcomes = await asyncio.gather(*(join(i) for i in range(20)))

    assert outcomes.count("joined") == 15, outcomes
    assert all("used by as many machines as it allows" in o for o in outcomes if o != "joined")
    workers = [m for m in (await master.scenario("farm")).machines if m.role == "workers"]
    assert len(workers) == 15 and all(m.trusted for m in workers)
    [info] = await master.enrollments("farm")
    assert info.used == 15


async def test_a_future_set_through_one_replica_wakes_a_waiter_on_another(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]]
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    on_a, on_b = await masters(a.url), await masters(b.url)
    await on_a.create_scenario("futures", [("box", "linux")])
    waiter = asyncio.create_task(on_a.kv_wait("futures", "db/ready", timeout=20))
    await asyncio.sleep(0.5)
    assert not waiter.done()
    await on_b.kv_set("futures", "db/ready", "from b")
    assert await asyncio.wait_for(waiter, 4) == b"from b"  # pushed across replicas, not found by a 5 s re-check
    assert await on_a.kv_get("futures", "db/ready") == b"from b"


async def test_a_watcher_on_a_third_replica_sees_every_event(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]]
) -> None:
    a, b, c = cluster.add_replica(), cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)
    watcher = await masters(c.url)
    await cluster.deploy(master, "watched", {"web": b.url})
    seen: list[EventInfo] = []

    async def watch() -> None:
        async for item in watcher.events("watched", 0):
            assert isinstance(item, EventInfo)
            seen.append(item)

    task = asyncio.create_task(watch())
    try:
        results = await master.run("watched", "web", "true", wait_timeout=20)
        finished = await eventually(
            lambda: [e for e in seen if e.kind == "command_finished"], timeout=10, what="command_finished on C"
        )
        assert finished[0].data["order_id"] == results[0].order_id
        assert [e.cursor for e in seen] == list(range(1, len(seen) + 1))
        assert {"machine_ready", "command_queued", "command_delivered", "command_started"} <= {e.kind for e in seen}
    finally:
        task.cancel()


async def test_queued_commands_follow_a_machine_that_moves_to_another_replica(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    a, b, c = cluster.add_replica(), cluster.add_replica(), cluster.add_replica()
    master = await masters(b.url)
    daemon = (await cluster.deploy(master, "moving", {"box": a.url}))["box"]
    daemon.kill()
    await eventually(
        lambda: _status(master, "moving", "box", "offline"), timeout=10, what="box offline after its daemon died"
    )
    log = tmp_path / "ran.txt"
    queued = [await master.run("moving", "box", f"echo {i} >> {log}", wait=False) for i in range(3)]

    config = daemon.config
    text = config.read_text().replace(a.url, c.url)
    config.write_text(text)
    daemon.start()

    results = await wait_results(master, "moving", [r[0].order_id for r in queued], timeout=20)
    assert [r.status for r in results] == ["succeeded"] * 3
    assert file_lines(log) == ["0", "1", "2"]


async def _status(master: Master, scenario: str, machine: str, status: str) -> bool:
    return (await master.scenario(scenario)).machine(machine).status == status


async def test_killing_the_replica_of_a_daemon_mid_stream_loses_and_repeats_nothing(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], need_nginx: None, tmp_path: Path
) -> None:
    cluster.add_replica(), cluster.add_replica()
    nginx = cluster.start_nginx()
    master_replica = cluster.replicas[0]
    master = await masters(master_replica.url)
    await cluster.deploy(master, "stream", {"worker": nginx.url})
    holder = await eventually(lambda: _holder(master, cluster), timeout=10, what="the daemon's replica")
    if holder is master_replica:  # keep the master's own replica alive: the point is the daemon's side
        cluster.replicas.reverse()
        master = await masters(cluster.replicas[0].url)
    log = tmp_path / "stream.txt"
    ids = []
    for i in range(30):
        (queued,) = await master.run("stream", "worker", f"echo {i} >> {log}; sleep 0.05", wait=False)
        ids.append(queued.order_id)
        if i == 10:
            holder.kill()
    results = await wait_results(master, "stream", ids, timeout=40)
    assert [r.status for r in results] == ["succeeded"] * 30
    assert sorted(file_lines(log), key=int) == [str(i) for i in range(30)]
    assert len(file_lines(log)) == 30


async def _holder(master: Master, cluster: Cluster) -> HubProcess | None:
    events = [e async for e in master.events("stream", 0, follow=False) if isinstance(e, EventInfo)]
    connected = [e for e in events if e.kind == "machine_connected"]
    if not connected:
        return None
    replica = connected[-1].data.get("replica")
    return next((r for r in cluster.replicas if r.extra_args[-1] == replica), None)


async def test_a_drained_replica_hands_its_daemons_to_another_and_exits(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], need_nginx: None
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    nginx = cluster.start_nginx()
    master = await masters(a.url)
    await cluster.deploy(master, "drain", {f"m{i}": nginx.url for i in range(4)})
    done = await asyncio.to_thread(run_crc, b, "hub", "drain", "--url", b.url, "--data-dir", str(b.data_dir))
    assert done.returncode == 0, done.stderr
    assert await b.wait_exit(30) == 0
    await eventually(lambda: _all_on(master, "drain", "r0"), timeout=30, what="every machine back on replica r0")
    results = await master.run("drain", "all", "true", wait_timeout=20)
    assert [r.status for r in results] == ["succeeded"] * 4


async def _connected_replicas(master: Master, scenario: str) -> dict[str, str]:
    replicas: dict[str, str] = {}
    async for e in master.events(scenario, 0, follow=False):
        if isinstance(e, EventInfo) and e.kind == "machine_connected":
            replicas[e.machine] = str(e.data.get("replica"))
    return replicas


async def _all_on(master: Master, scenario: str, replica: str) -> bool:
    placed = await _connected_replicas(master, scenario)
    sc = await master.scenario(scenario)
    return all(v == replica for v in placed.values()) and all(m.status == "ready" for m in sc.machines)


async def test_redis_stopped_and_restarted_under_traffic_loses_nothing_and_runs_nothing_twice(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)
    await cluster.deploy(master, "outage", {"box": b.url})  # across replicas, so routing needs the backplane
    scenario, (box,) = await master.targets("outage", "box")
    log = tmp_path / "outage.txt"
    accepted: list[tuple[int, str]] = []
    refused: list[str] = []

    async def traffic() -> None:
        for i in range(60):
            order = master.sign(scenario, box, OrderKind.EXEC, {"command": f"echo {i} >> {log}"}, 300)
            try:
                accepted.append((i, await master.submit(order)))
            except RemoteError as exc:
                refused.append(exc.code)
            await asyncio.sleep(0.05)

    sender = asyncio.create_task(traffic())
    await asyncio.sleep(0.6)
    await asyncio.to_thread(cluster.redis.stop)
    await asyncio.sleep(1.5)
    await asyncio.to_thread(cluster.redis.start)
    await sender

    assert refused and set(refused) == {"unavailable"}, refused
    assert accepted
    results = await wait_results(master, "outage", [order_id for _, order_id in accepted], timeout=60)
    assert [r.status for r in results] == ["succeeded"] * len(accepted)
    assert sorted(file_lines(log), key=int) == [str(i) for i, _ in accepted]  # each accepted one ran once


def _swarm(tmp_path: Path, configs: Path) -> Process:
    argv = [PYTHON, "-m", "bench.swarm", str(configs), str(tmp_path / "swarm-state")]
    return Process("swarm", argv, child_env(), tmp_path / "swarm.log")


async def _write_swarm_configs(master: Master, scenario: str, count: int, hub_url: str, configs: Path) -> None:
    for m in await master.create_scenario(scenario, [(f"m{i:03d}", "linux") for i in range(count)]):
        config = DaemonConfig(hub_url, scenario, m.name, m.identity, master.identity.public)
        write_config(configs / f"{m.name}.toml", config)


async def test_rebalancing_moves_a_share_of_daemons_to_a_replica_that_joined(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], need_nginx: None, tmp_path: Path
) -> None:
    first = cluster.add_replica(heartbeat_interval=3.0, dead_after=15.0)
    late = cluster.add_replica(heartbeat_interval=3.0, dead_after=15.0, start=False)
    nginx = cluster.start_nginx()
    master = await masters(first.url)
    await _write_swarm_configs(master, "grow", 20, nginx.url, tmp_path / "grow-configs")
    swarm = _swarm(tmp_path, tmp_path / "grow-configs")
    swarm.start()
    try:
        await master.wait_ready("grow", timeout=60)
        assert set((await _connected_replicas(master, "grow")).values()) == {"r0"}
        await asyncio.to_thread(late.start)
        answer = await asyncio.to_thread(
            run_crc, first, "hub", "rebalance", "--url", first.url, "--share", "0.5", "--data-dir", str(first.data_dir)
        )
        assert answer.returncode == 0, answer.stderr
        assert '"asked_to_reconnect": 10' in answer.stdout

        async def spread() -> bool:
            placed = list((await _connected_replicas(master, "grow")).values())
            return placed.count("r1") >= 5 and all(
                m.status == "ready" for m in (await master.scenario("grow")).machines
            )

        await eventually(spread, timeout=30, what="daemons moving to the replica that joined")
        results = await master.run("grow", "all", "true", wait_timeout=30)
        assert [r.status for r in results] == ["succeeded"] * 20
    finally:
        swarm.cleanup()


async def test_sigterm_drains_and_a_daemon_without_a_balancer_waits_for_its_hub_to_return(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]]
) -> None:
    a = cluster.add_replica()
    master = await masters(a.url)
    daemon = (await cluster.deploy(master, "alone", {"box": a.url}))["box"]
    a.send_signal(signal.SIGTERM)
    assert await a.wait_exit(20) == 0
    await asyncio.sleep(1.0)  # the daemon meets a draining hub (503), then a closed port: it must keep trying
    assert daemon.running, daemon.log_tail()
    await asyncio.to_thread(a.start)
    (result,) = await master.run("alone", "box", "echo back", wait_timeout=30)
    assert result.stdout == b"back\n"


def _two_steps(log: Path, first: str) -> dict[str, object]:
    return {"name": "two", "steps": [
        {"id": "one", "target": "box", "command": f"echo one >> {log}; {first}"},
        {"id": "two", "target": "box", "command": f"echo two >> {log}", "depends_on": ["one"]},
    ]}  # fmt: skip


async def _plan_events(master: Master, scenario: str) -> list[tuple[str, ...]]:
    """("plan_step", step, state) and ("plan_finished",) events, in log order."""
    found: list[tuple[str, ...]] = []
    async for e in master.events(scenario, 0, follow=False):
        if isinstance(e, EventInfo) and e.kind == "plan_step":
            found.append((e.kind, e.data["step"], e.data["state"]))
        elif isinstance(e, EventInfo) and e.kind == "plan_finished":
            found.append((e.kind,))
    return found


async def test_a_replica_restarting_does_not_run_a_second_copy_of_a_plan_another_runs(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)  # a runs the plan: it was submitted there
    await cluster.deploy(master, "lease", {"box": a.url})
    log = tmp_path / "lease.txt"
    plan_id = (await master.run_plan("lease", _two_steps(log, "sleep 2")))["id"]
    await b.arestart()  # while "one" runs: b resumes open plans at start-up, but this one is a's
    done = await master.wait_plan("lease", plan_id, timeout=30)
    assert {s["id"]: s["state"] for s in done["steps"]} == {"one": "succeeded", "two": "succeeded"}
    await asyncio.sleep(2.0)  # a second runner on b would report the steps again at its next polls
    assert await _plan_events(master, "lease") == [
        ("plan_step", "one", "running"), ("plan_step", "one", "succeeded"),
        ("plan_step", "two", "running"), ("plan_step", "two", "succeeded"), ("plan_finished",),
    ]  # fmt: skip
    assert file_lines(log) == ["one", "two"]


@pytest.mark.slow  # over 20 s on 2 cores: CI runs it (scripts/test.sh), a bare pytest does not
async def test_the_plan_of_a_replica_killed_mid_step_is_adopted_by_another_and_finishes(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    on_a = await masters(a.url)
    await cluster.deploy(on_a, "adopt", {"box": b.url})  # the daemon is on b: it lives through a's death
    log = tmp_path / "adopt.txt"
    plan_id = (await on_a.run_plan("adopt", _two_steps(log, "sleep 3")))["id"]
    await asyncio.sleep(1.0)
    a.kill()
    on_b = await masters(b.url)
    assert not (await on_b.plan("adopt", plan_id))["done"]
    done = await on_b.wait_plan("adopt", plan_id, timeout=30)  # its lease expires, then b's adoption loop finds it
    assert {s["id"]: s["state"] for s in done["steps"]} == {"one": "succeeded", "two": "succeeded"}
    events = await _plan_events(on_b, "adopt")
    assert events.count(("plan_step", "one", "running")) == 1 and events.count(("plan_step", "two", "running")) == 1
    assert events[-1] == ("plan_finished",) and events.count(("plan_finished",)) == 1
    assert file_lines(log) == ["one", "two"]  # each step ran once: b found "one" running and waited for it


async def test_a_plan_cancelled_through_a_replica_that_does_not_run_it_ends_cancelled(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    a, b = cluster.add_replica(), cluster.add_replica()
    on_a = await masters(a.url)  # a runs the plan
    await cluster.deploy(on_a, "stop", {"box": b.url})
    log = tmp_path / "stop.txt"
    plan_id = (await on_a.run_plan("stop", _two_steps(log, "sleep 30")))["id"]
    await eventually(lambda: log.exists(), timeout=10, what="step one running")
    on_b = await masters(b.url)
    cancelled = await on_b.cancel_plan("stop", plan_id)
    assert cancelled["done"] and [s["state"] for s in cancelled["steps"]] == ["cancelled", "cancelled"]
    one = cancelled["steps"][0]["orders"]
    (result,) = await wait_results(on_b, "stop", one, timeout=15)
    assert result.status == "cancelled"
    assert file_lines(log) == ["one"]
    assert (await _plan_events(on_a, "stop"))[-1] == ("plan_finished",)


async def test_an_assigned_job_is_played_once_by_members_and_joiners_spread_over_two_replicas(
    cluster: Cluster, masters: Callable[[str], Awaitable[Master]], tmp_path: Path
) -> None:
    """Both replicas queue a member's play when it connects (under the one id per composition and machine), so a
    machine moving between replicas, or joining through either, plays the job once."""
    a, b = cluster.add_replica(), cluster.add_replica()
    master = await masters(a.url)
    folder = tmp_path / "plays"
    folder.mkdir()
    minted = await master.create_scenario("band", [(f"a{i}", "linux", "artist") for i in range(4)])
    configs = {}
    for i, m in enumerate(minted):
        configs[m.name] = tmp_path / "configs" / f"{m.name}.toml"
        url = (a.url, b.url)[i % 2]
        write_config(configs[m.name], DaemonConfig(url, "band", m.name, m.identity, master.identity.public))
    running = {name: cluster.daemons.start(configs[name]) for name in ("a0", "a1")}  # a2, a3 offline for now
    await master.put_job("tune", 'echo "$CRC_ORDER_ID" >> "$PLAYS/$CRC_MACHINE"')
    await master.assign_job("band", "role:artist", "tune", env={"PLAYS": str(folder)})
    running |= {name: cluster.daemons.start(configs[name]) for name in ("a2", "a3")}
    token = await master.create_enrollment("band", "artist", uses=4)
    joined = await asyncio.gather(*(enroll((a.url, b.url)[i % 2], token, f"j{i}", "linux") for i in range(4)))
    for config in joined:
        configs[config.machine_name] = tmp_path / "configs" / f"{config.machine_name}.toml"
        write_config(configs[config.machine_name], config)
        running[config.machine_name] = cluster.daemons.start(configs[config.machine_name])
    members = sorted(configs)

    def played() -> dict[str, int]:
        return {name: len(file_lines(folder / name)) if (folder / name).exists() else 0 for name in members}

    await eventually(lambda: played() == dict.fromkeys(members, 1), timeout=60, what="every member to play once")
    for name, daemon in running.items():  # every machine moves to the other replica
        config = configs[name].read_text()
        moved = config.replace(a.url, "@B@").replace(b.url, a.url).replace("@B@", b.url)
        configs[name].write_text(moved)
        daemon.restart()
    await eventually(lambda: all(d.running for d in running.values()), timeout=30, what="the daemons to run")
    await asyncio.sleep(3)  # time for a second play, were one queued
    assert played() == dict.fromkeys(members, 1)
    outcomes = {p.machine: p.outcome.value for p in await master.performances("band", "tune")}
    assert outcomes == dict.fromkeys(members, "played")
