"""Scenario "replicas": total output throughput of two hub replicas sharing Redis, against one.

K (= ``PAIRS``) independent pairs, each a daemon flooding ``Output`` into a scenario of its own and a master
subscribed to that scenario (the ``output_frames`` flood, reused from ``bench.output_frames``), all flooding at
once; the figure is total messages per second over all pairs (K x N / time from the first send until every
master has its last message). Both configurations run the same code path: every replica is ``bench.hub_process``
with ``--redis-url`` (Redis store and Redis backplane), on one fresh ``redis-server`` started here on a free
port (no snapshots, no AOF), so the comparison isolates the second replica, not Redis:

- one replica: every pair (daemon and master) on replica A (replica B runs, idle);
- two replicas: half of the pairs on A, half on B (each pair's daemon and master on the same replica).

The client sessions run in ``CLIENT_WORKERS`` worker processes (``python -m bench.replicas --worker``, pairs
split between them; 0 runs them in this process), started and connected before the clock starts, released
together. The CPU used by every process during each flood (psutil, user + system time over the flood's wall
time) is printed on stderr: on a small machine the clients, the replicas and Redis compete for the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import ROOT, START_TIMEOUT, Config, Record, Server, child_env, flood_timeout, median
from bench.output_frames import Watcher, drain_link, flood_order, hub_flood
from clients.link import HubLink
from clients.master.keys import load_or_create_master_key
from clients.master.sdk import Master
from protocol import Role
from protocol.identity import Identity
from tests.redis_server import RedisServer

NAME = "replicas"
TARGET = 1.6  # issue scenario (5): two replicas at least 1.6x one
PAIRS = 4
# Processes running the client pairs (0: in this process); chosen by measurement, see README. The environment
# variable overrides it, to measure the other way.
CLIENT_WORKERS = int(os.environ.get("CRC_BENCH_CLIENT_WORKERS", "2"))
SCENARIO_PREFIX = "bench-replicas"
SCENARIO_LABEL = "replicas: 2 vs 1 (Redis)"


class ThrowawayRedis(RedisServer):
    """A ``redis-server`` on a free port of 127.0.0.1 that keeps nothing on disk (``--save "" --appendonly no``)."""

    def _argv(self) -> list[str]:
        return [
            self.binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("redis-server is not running")
        return self._proc.pid


@dataclass(frozen=True)
class PairSpec:
    """Where one pair connects, and with which keys (private keys as text, to hand to a worker process)."""

    url: str
    scenario: str
    master_key: str
    machine_key: str
    order_id: str  # the order whose output the pair's daemon floods (``bench.output_frames.flood_order``)


@dataclass
class Pair:
    """A connected pair: the daemon session (its reads drained) and the subscribed master's ``Watcher``."""

    scenario: str
    order_id: str
    daemon: HubLink
    watcher: Watcher
    drain: asyncio.Task[None] = field(repr=False)

    @classmethod
    async def open(cls, spec: PairSpec) -> Pair:
        master = Identity.from_private_text(spec.master_key)
        watcher = Watcher(await HubLink.connect(spec.url, master, Role.MASTER), spec.scenario)
        try:
            await watcher.subscribe()
            daemon = await HubLink.connect(spec.url, Identity.from_private_text(spec.machine_key), Role.DAEMON)
        except BaseException:
            await watcher.close()
            raise
        return cls(spec.scenario, spec.order_id, daemon, watcher, asyncio.create_task(drain_link(daemon)))

    async def close(self) -> None:
        self.drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.drain
        await self.daemon.close()
        await self.watcher.close()


async def open_pairs(specs: list[PairSpec]) -> list[Pair]:
    pairs: list[Pair] = []
    try:
        for spec in specs:
            pairs.append(await asyncio.wait_for(Pair.open(spec), START_TIMEOUT))
    except BaseException:
        await close_pairs(pairs)
        raise
    return pairs


async def close_pairs(pairs: list[Pair]) -> None:
    for pair in pairs:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pair.close(), 5)


async def flood_pairs(pairs: list[Pair], messages: int) -> tuple[float, float]:
    """Every pair floods ``messages`` at once; (start, end) on the system-wide monotonic clock."""
    start = time.monotonic()
    await asyncio.gather(
        *(hub_flood(p.daemon, p.watcher, messages, scenario=p.scenario, order_id=p.order_id) for p in pairs)
    )
    return start, time.monotonic()


# --- client worker processes ---------------------------------------------------------------------------------


class Worker:
    """``python -m bench.replicas --worker``: connects its pairs, says "ready", floods on "go", prints the times."""

    def __init__(self, index: int, work_dir: Path) -> None:
        self.index = index
        self.log_path = work_dir / f"replicas-worker{index}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.finished = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, specs: list[PairSpec], messages: int) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.replicas", "--worker", cwd=ROOT, env=child_env(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, start_new_session=True,
            )  # fmt: skip
        await self._write({"pairs": [asdict(s) for s in specs], "messages": messages})
        line = await self._read(START_TIMEOUT * 2)
        if line != "ready":
            raise RuntimeError(f"worker {self.index} did not get ready ({line!r}); see {self.log_path}")

    async def go(self) -> None:
        await self._write({"go": True})

    async def result(self, timeout: float) -> tuple[float, float]:
        line = await self._read(timeout)
        try:
            times = json.loads(line)
            start, end = float(times["start"]), float(times["end"])
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(f"worker {self.index} failed ({line!r}); see {self.log_path}") from None
        self.finished = True
        return start, end

    async def _write(self, message: dict[str, Any]) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def _read(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), timeout)).decode().strip()

    async def stop(self) -> None:
        """After its flood, closing its stdin tells the worker to close its sessions and exit (killed if it has not
        after 10 s); otherwise (a failure, a timeout) it is killed at once."""
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.finished:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 10)
                return
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.proc.wait(), 5)


async def worker_main() -> None:
    loop = asyncio.get_running_loop()

    async def read() -> dict[str, Any]:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            raise SystemExit("stdin closed: exiting")
        message: dict[str, Any] = json.loads(line)
        return message

    def write(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    job = await read()
    pairs = await open_pairs([PairSpec(**p) for p in job["pairs"]])
    try:
        write("ready")
        await read()
        start, end = await flood_pairs(pairs, int(job["messages"]))
        write(json.dumps({"start": start, "end": end}))
        await read()  # stay (so the CPU meter still sees this process) until stdin closes
    except Exception as exc:
        write(f"error: {exc!r}")
        raise
    finally:
        await close_pairs(pairs)


# --- the measurement -----------------------------------------------------------------------------------------


def _split(items: list[PairSpec], parts: int) -> list[list[PairSpec]]:
    """Round-robin, so each part gets pairs of both replicas in the two-replica layout."""
    return [chunk for chunk in (items[i::parts] for i in range(parts)) if chunk]


def _idle(times: Any) -> float:
    return float(times.idle + getattr(times, "iowait", 0.0))


class CpuMeter:
    """CPU time (user + system) of named processes between ``start()`` and ``stop()``, as % of one core."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.procs = {name: [psutil.Process(pid) for pid in group] for name, group in pids.items()}
        self._before: dict[str, float] = {}
        self._machine = psutil.cpu_times()
        self._wall = 0.0

    def _times(self) -> dict[str, float]:
        out = {}
        for name, group in self.procs.items():
            total = 0.0
            for proc in group:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
            out[name] = total
        return out

    def start(self) -> None:
        self._before, self._machine, self._wall = self._times(), psutil.cpu_times(), time.monotonic()

    def stop(self) -> dict[str, float]:
        after, machine, wall = self._times(), psutil.cpu_times(), time.monotonic() - self._wall
        used = {name: 100 * (after[name] - self._before[name]) / wall for name in after}
        total = sum(machine) - sum(self._machine)
        busy = 100 * psutil.cpu_count() * (1 - (_idle(machine) - _idle(self._machine)) / total) if total else 0.0
        used["machine busy"] = busy
        used["others"] = max(0.0, busy - sum(v for k, v in used.items() if k != "machine busy"))
        return used


async def measure(
    specs: list[PairSpec], messages: int, work_dir: Path, servers: dict[str, int]
) -> tuple[float, dict[str, float]]:
    """Total msgs/s of every pair flooding at once, and the CPU % each process used meanwhile."""
    bound = flood_timeout(messages) + 30
    workers: list[Worker] = []
    pairs: list[Pair] = []
    try:
        if CLIENT_WORKERS:
            chunks = _split(specs, CLIENT_WORKERS)
            workers = [Worker(i, work_dir) for i in range(len(chunks))]
            await asyncio.gather(*(w.start(c, messages) for w, c in zip(workers, chunks, strict=True)))
            clients = {"clients": [w.pid for w in workers], "bench": [psutil.Process().pid]}
        else:
            pairs = await open_pairs(specs)
            clients = {"clients": [psutil.Process().pid]}
        meter = CpuMeter({**clients, **{name: [pid] for name, pid in servers.items()}})
        meter.start()
        if workers:
            await asyncio.gather(*(w.go() for w in workers))
            times = await asyncio.gather(*(w.result(bound) for w in workers))
        else:
            times = [await asyncio.wait_for(flood_pairs(pairs, messages), bound)]
        cpu = meter.stop()
    finally:
        await close_pairs(pairs)
        await asyncio.gather(*(w.stop() for w in workers))
    start, end = min(t[0] for t in times), max(t[1] for t in times)
    return len(specs) * messages / (end - start), cpu


def _cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in cpu.items())


async def run(config: Config) -> list[Record]:
    identity, _ = load_or_create_master_key(config.work_dir / "master.key")
    redis = ThrowawayRedis(config.work_dir / "replicas-redis")
    await asyncio.to_thread(redis.start)
    ones: list[float] = []
    twos: list[float] = []
    try:
        async with AsyncExitStack() as stack:
            hubs = []
            for name in ("replica-a", "replica-b"):
                argv = [
                    "-m", "bench.hub_process", "--data-dir", str(config.work_dir / name),
                    "--master-key", identity.public.to_text(), "--redis-url", redis.url,
                ]  # fmt: skip
                hubs.append(await stack.enter_async_context(Server(name, argv, config.work_dir)))
            a, b = hubs
            master = await Master.connect(a.url, identity)
            try:
                machines = [
                    (await master.create_scenario(f"{SCENARIO_PREFIX}-{i}", [("box", "linux")]))[0]
                    for i in range(PAIRS)
                ]
                order_ids = [await flood_order(master, f"{SCENARIO_PREFIX}-{i}") for i in range(PAIRS)]
            finally:
                await master.close()
            master_key = identity.private_text()

            def layout(urls: list[str]) -> list[PairSpec]:
                return [
                    PairSpec(url, f"{SCENARIO_PREFIX}-{i}", master_key, m.identity.private_text(), order_id)
                    for i, (url, m, order_id) in enumerate(zip(urls, machines, order_ids, strict=True))
                ]

            one = layout([a.url] * PAIRS)
            two = layout([a.url if i < PAIRS // 2 else b.url for i in range(PAIRS)])
            assert a.popen is not None and b.popen is not None
            servers = {"replica A": a.popen.pid, "replica B": b.popen.pid, "redis": redis.pid}
            per_hub_cpu: dict[str, list[float]] = {"one replica": [], "two replicas": []}
            for _ in range(config.repeats):
                for label, specs, out in (("one replica", one, ones), ("two replicas", two, twos)):
                    rate, cpu = await measure(specs, config.messages, config.work_dir, servers)
                    out.append(rate)
                    hub_cpu = (cpu["replica A"] + cpu["replica B"]) / 100
                    per_hub_cpu[label].append(rate / hub_cpu if hub_cpu else 0.0)
                    print(f"  {NAME} {label}: {rate:,.0f} msgs/s; CPU %: {_cpu_text(cpu)}", file=sys.stderr)
            eff_one, eff_two = median(per_hub_cpu["one replica"]), median(per_hub_cpu["two replicas"])
            print(
                f"  {NAME} msgs per replica CPU-second: one {eff_one:,.0f}, two {eff_two:,.0f}; "
                f"with a core per replica (and clients elsewhere) that projects to "
                f"{2 * eff_two / eff_one if eff_one else 0.0:.2f}x",
                file=sys.stderr,
            )
    finally:
        await asyncio.to_thread(redis.stop)
    return [Record.of(SCENARIO_LABEL, "msgs/s", median(twos), median(ones), "one replica (Redis)", TARGET)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help="run client pairs as told on stdin (internal)")
    args = parser.parse_args()
    if not args.worker:
        parser.error("run the scenario with python -m bench --only replicas")
    asyncio.run(worker_main())


if __name__ == "__main__":
    main()
