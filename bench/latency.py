"""Scenario "latency": round-trip latency of a no-op order (PING, answered by the daemon without spawning a
process) at a fixed 1,000 requests/s, open loop; p50 and p99.

Ours: the hub in a process of its own (``bench.hub_process``, per-session rate limit lifted: the daemon sends 3
messages per order, 3,000/s here, above the production limit of 2,000/s), one real ``Daemon`` in a process of its
own (``bench.swarm`` with one config), one master (the SDK's ``Master``) in this process. Request i is due at
t0 + i / RATE whatever the replies (open loop): at that moment ``Master.submit`` of a PING order signed before
the clock started (signing is the master's work, not the round trip's) is started as a task; it is done when
the scenario's ``command_finished`` event for that order reaches the master (an ``events`` stream subscribed
before the run: the earliest moment the SDK knows the result, without a ``results`` query). Latency = that
moment - the due time, so a sender that falls behind counts against us (no coordinated omission).

Baseline: a bare aiohttp relay (``bench.baselines_rtt``, own process) between client A (this process) and an
echo client B (own process): A sends a 256-byte frame, the relay forwards it to B, B sends it back, the relay
forwards it to A. Same rate, same count, same schedule, same clock (``time.perf_counter`` in this process).

A run is WARMUP requests (not counted) then COUNT requests; repeated ``config.repeats`` times, alternating
with the baseline; the records are the medians of the runs' p50 and p99. A run whose latency keeps growing (last
tenth of the requests far slower than the first tenth) did not sustain the rate: it says so on stderr with the
rate actually completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import statistics
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import ClientConnection

from bench.baselines_rtt import connect_a
from bench.broadcast_swarm import SwarmProcess
from bench.common import PAYLOAD, Config, Record, Server, median
from clients.daemon.config import DaemonConfig, write_config
from clients.master.models import EventInfo
from clients.master.sdk import Master
from protocol import Identity, OrderKind
from protocol.events import EventKind

NAME = "latency"
RATE = 1_000.0  # requests per second
TARGET = 3.0  # p99 at most 3x the bare relay's
SCENARIO = "latency"
DRAIN = 20.0  # seconds after the last send to wait for the last replies


@dataclass(frozen=True)
class Sizes:
    warmup: int
    count: int


def sizes(config: Config) -> Sizes:
    """5,000 counted requests (1,000 with --quick) after 500; tiny for smoke runs (``--messages`` under 1,000)."""
    if config.messages < 1_000:
        return Sizes(max(10, config.messages // 5), config.messages)
    return Sizes(500, 1_000 if config.quick else 5_000)


@dataclass(frozen=True)
class Run:
    p50: float  # ms
    p99: float
    sent_rate: float  # requests/s actually sent over the counted part
    done_rate: float  # replies/s over the whole run (first due time to last reply)
    first_tenth: float  # median latency (ms) of the first and the last tenth of the counted requests
    last_tenth: float
    missing: int

    @property
    def sustained(self) -> bool:
        growing = self.last_tenth > 3 * self.first_tenth and self.last_tenth > 50.0
        return self.missing == 0 and self.done_rate >= 0.95 * RATE and not growing

    def describe(self) -> str:
        verdict = "sustained" if self.sustained else "NOT sustained (queue builds up)"
        return (
            f"p50 {self.p50:.2f} ms, p99 {self.p99:.2f} ms; sent {self.sent_rate:,.0f}/s, completed "
            f"{self.done_rate:,.0f}/s; median first/last tenth {self.first_tenth:.2f}/{self.last_tenth:.2f} ms; "
            f"missing {self.missing}: {verdict}"
        )


class OpenLoop:
    """Fires request i at t0 + i / rate (whatever the replies) and collects when each reply arrived."""

    def __init__(self, total: int, rate: float) -> None:
        self.total = total
        self.rate = rate
        self.due = [0.0] * total
        self.sent = [0.0] * total
        self.done = [0.0] * total
        self.received = 0
        self.all_done = asyncio.Event()

    def reply(self, i: int) -> None:
        if 0 <= i < self.total and not self.done[i]:
            self.done[i] = time.perf_counter()
            self.received += 1
            if self.received == self.total:
                self.all_done.set()

    async def run(self, fire: Callable[[int], None], warmup: int) -> Run:
        t0 = time.perf_counter() + 0.05
        for i in range(self.total):
            due = t0 + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 16 == 0:
                await asyncio.sleep(0)  # behind: still let the replies in now and then
            self.due[i] = due
            self.sent[i] = time.perf_counter()
            fire(i)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_done.wait(), DRAIN)
        return self.summary(warmup)

    def summary(self, warmup: int) -> Run:
        counted = range(warmup, self.total)
        end = time.perf_counter()
        # A reply that never came counts as arriving now (after the drain bound): it weighs on p99.
        lat = [((self.done[i] or end) - self.due[i]) * 1000 for i in counted]
        missing = sum(1 for i in counted if not self.done[i])
        q = statistics.quantiles(lat, n=100, method="inclusive")
        tenth = max(1, len(lat) // 10)
        first, last = warmup, self.total - 1
        span_sent = self.sent[last] - self.sent[first]
        replied = [d for d in self.done if d]
        span_done = max(replied) - self.due[0] if replied else 0.0
        return Run(
            p50=statistics.median(lat), p99=q[98],
            sent_rate=(last - first) / span_sent if span_sent > 0 else 0.0,
            done_rate=len(replied) / span_done if span_done > 0 else 0.0,
            first_tenth=statistics.median(lat[:tenth]), last_tenth=statistics.median(lat[-tenth:]),
            missing=missing,
        )  # fmt: skip


def _keep(tasks: set[asyncio.Task[object]], task: asyncio.Task[object]) -> None:
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def relay_round_trips(a: ClientConnection, size: Sizes) -> Run:
    """The baseline: 256-byte frames A -> relay -> B -> relay -> A at RATE, open loop (A connected once: the
    relay pairs each B with one A)."""
    loop = OpenLoop(size.warmup + size.count, RATE)
    pad = b"x" * (PAYLOAD - 4)
    tasks: set[asyncio.Task[object]] = set()

    async def read() -> None:
        with contextlib.suppress(Exception):
            async for frame in a:
                assert isinstance(frame, bytes)
                loop.reply(struct.unpack_from("<I", frame)[0])

    def fire(i: int) -> None:
        _keep(tasks, asyncio.create_task(a.send(struct.pack("<I", i) + pad)))

    reader = asyncio.create_task(read())
    try:
        return await loop.run(fire, size.warmup)
    finally:
        await _stop(reader, tasks)


async def hub_round_trips(master: Master, scenario: str, size: Sizes) -> Run:
    """Ours: PING orders through the hub to the daemon, done at their ``command_finished`` event."""
    sc = await master.scenario(scenario)
    (machine,) = sc.machines
    total = size.warmup + size.count
    orders = [master.sign(sc, machine, OrderKind.PING, {}, 600.0) for _ in range(total + 1)]
    index = {order.id: i for i, order in enumerate(orders)}
    loop = OpenLoop(total, RATE)
    subscribed = asyncio.Event()
    probe = orders[-1]  # sent first, untimed: its event shows the stream is live
    tasks: set[asyncio.Task[object]] = set()

    async def read() -> None:
        async for item in master.events(scenario, after=-1):
            if isinstance(item, EventInfo) and item.kind == EventKind.COMMAND_FINISHED:
                order_id = str(item.data.get("order_id"))
                if order_id == probe.id:
                    subscribed.set()
                else:
                    loop.reply(index.get(order_id, -1))

    reader = asyncio.create_task(read())
    try:
        await asyncio.sleep(0.2)  # let the reader subscribe
        await master.submit(probe)
        await asyncio.wait_for(subscribed.wait(), 15)

        def fire(i: int) -> None:
            _keep(tasks, asyncio.create_task(master.submit(orders[i])))

        return await loop.run(fire, size.warmup)
    finally:
        await _stop(reader, tasks)


async def _stop(reader: asyncio.Task[None], sends: set[asyncio.Task[object]]) -> None:
    """End a run: stop reading replies and cancel the sends still in flight."""
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    for task in list(sends):
        task.cancel()
    await asyncio.gather(*sends, return_exceptions=True)


async def run(config: Config) -> list[Record]:
    size = sizes(config)
    work = config.work_dir / "latency"
    work.mkdir(parents=True, exist_ok=True)
    master_key = Identity.generate(secrets.token_bytes)
    hub_argv = [
        "-m", "bench.hub_process", "--data-dir", str(work / "hub-data"), "--master-key", master_key.public.to_text(),
    ]  # fmt: skip
    relay = Server("rtt-relay", ["-m", "bench.baselines_rtt"], work)
    ours: list[Run] = []
    base: list[Run] = []
    async with Server("latency-hub", hub_argv, work) as hub, relay:
        echo = Server("rtt-echo", ["-m", "bench.baselines_rtt", "--echo", relay.url], work)
        async with await Master.connect(hub.url, master_key) as master, echo:
            a = await connect_a(relay.url)
            try:
                for repeat in range(config.repeats):
                    base.append(await relay_round_trips(a, size))
                    print(f"  relay: {base[-1].describe()}", file=sys.stderr, flush=True)
                    # A fresh machine and daemon per run: a run that fell behind leaves orders queued for its machine.
                    scenario = f"{SCENARIO}-{repeat}"
                    (machine,) = await master.create_scenario(scenario, [("box", "linux")])
                    config_dir = work / f"configs-{repeat}"
                    write_config(
                        config_dir / "box.toml",
                        DaemonConfig(hub.url, scenario, machine.name, machine.identity, master_key.public),
                    )
                    state_root = Path(os.environ.get("CRC_BENCH_DAEMON_STATE", work)) / f"latency-daemon-{repeat}"
                    daemon_argv = [str(config_dir), str(state_root)]
                    try:
                        with SwarmProcess("bench.swarm", daemon_argv, work / "daemon.log") as daemon:
                            await master.wait_ready(scenario, timeout=30)
                            daemon.check()
                            ours.append(await hub_round_trips(master, scenario, size))
                    finally:
                        shutil.rmtree(state_root, ignore_errors=True)
                    print(f"  ours:  {ours[-1].describe()}", file=sys.stderr, flush=True)
            finally:
                await a.close()
    if not all(r.sustained for r in ours):
        rates = ", ".join(f"{r.done_rate:,.0f}/s" for r in ours)
        print(f"  ours did NOT sustain {RATE:,.0f}/s in every run (completed: {rates})", file=sys.stderr)
    baseline_name = "bare aiohttp relay round trip"
    return [
        Record.of(
            f"{NAME}: p99 at 1,000/s", "ms", median([r.p99 for r in ours]), median([r.p99 for r in base]),
            baseline_name, TARGET, lower_is_better=True, digits=2,
        ),
        Record.of(
            f"{NAME}: p50 at 1,000/s", "ms", median([r.p50 for r in ours]), median([r.p50 for r in base]),
            baseline_name, None, lower_is_better=True, digits=2,
        ),
    ]  # fmt: skip
