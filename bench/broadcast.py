"""Scenario "broadcast": one scenario message to every one of N connected daemons (1,000; 200 with --quick);
per daemon, the delay from the send to the daemon having the message; p50 and p99.

Ours: the hub in a process of its own (``bench.hub_process --default-limits``: production settings), a scenario of
N machines, their N real ``Daemon`` objects in one other process (``bench.broadcast_swarm``), each keeping a
receive pending at the hub the way ``crc-daemon recv`` does (a long-poll ``MsgRecv``), and the master (SDK) in
this process. The master sends ONE message (``Master.send_message(scenario, "all", topic, 256 bytes)``); the
swarm notes ``time.time()`` when the hub's answer carrying it reaches each daemon (``Daemon._on_response``).
Delay = that time - ``time.time()`` just before ``send_message`` (same machine, same clock).

Baseline: a bare aiohttp WebSocket server (``bench.baselines_broadcast``, own process) with N plain
``websockets`` clients (another process); on one trigger frame from this process it sends the same 256-byte
frame to every client socket; delay = receipt time in the clients' process - time just before the trigger.

Each side first does one untimed broadcast (warm-up; it also proves every receiver is listening), then
``config.repeats`` timed ones (3; 1 with --quick), alternating with the baseline, SETTLE seconds apart; the
records are the medians over the broadcasts of their p50 and p99. A receiver that never gets a broadcast
(within ``receipt_deadline``) counts with the delay at which we stopped waiting.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.baselines_broadcast import open_trigger
from bench.broadcast_swarm import SwarmProcess
from bench.common import PAYLOAD, Config, Record, Server, median
from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from protocol import Identity

NAME = "broadcast"
TARGET = 2.0  # p50 at most 2x the bare broadcast's
SCENARIO = "broadcast"
TOPIC = "bench"
SETTLE = 1.0  # seconds between broadcasts: every receiver has asked for the next message again
POLL = 0.05


def daemon_count(config: Config) -> int:
    """N: 1,000; 200 with --quick; 20 for the smoke test's tiny runs (``--messages`` under 1,000)."""
    if config.messages < 1_000:
        return 20
    return 200 if config.quick else 1_000


def receipt_deadline(n: int) -> float:
    """Bound on one broadcast reaching all N: generous (100 receivers a second) but finite."""
    return 10.0 + n / 100.0


def message(k: int) -> bytes:
    """Broadcast number k: its number in the first 8 bytes, padded to PAYLOAD bytes."""
    return f"{k:08d}".encode().ljust(PAYLOAD, b"x")


class Receipts:
    """The ``NAME BROADCAST TIME`` lines a receiving process appends to a file, read as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = ""
        self.times: dict[int, dict[str, float]] = {}

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open() as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset = f.tell()
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        for line in lines:
            name, k, t = line.split()
            self.times.setdefault(int(k), {}).setdefault(name, float(t))

    async def wait(self, k: int, n: int, timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            got = self.times.get(k, {})
            if len(got) >= n or time.monotonic() > deadline:
                return got
            await asyncio.sleep(POLL)


@dataclass(frozen=True)
class Spread:
    p50: float  # ms
    p99: float
    max: float
    missing: int

    def describe(self) -> str:
        return f"p50 {self.p50:.2f} ms, p99 {self.p99:.2f} ms, max {self.max:.2f} ms, missing {self.missing}"


def spread(sent: float, got: dict[str, float], n: int, gave_up: float) -> Spread:
    delays = sorted((t - sent) * 1000 for t in got.values())
    missing = n - len(delays)
    delays += [(gave_up - sent) * 1000] * missing
    q = statistics.quantiles(delays, n=100, method="inclusive")
    return Spread(statistics.median(delays), q[98], delays[-1], missing)


async def run(config: Config) -> list[Record]:
    n = daemon_count(config)
    work = config.work_dir / "broadcast"
    work.mkdir(parents=True, exist_ok=True)
    master_key = Identity.generate(secrets.token_bytes)
    hub_argv = [
        "-m", "bench.hub_process", "--data-dir", str(work / "hub-data"), "--master-key", master_key.public.to_text(),
        "--default-limits",
    ]  # fmt: skip
    ours_out, base_out = work / "daemons.txt", work / "clients.txt"
    server = Server("bcast-server", ["-m", "bench.baselines_broadcast"], work)
    ours: list[Spread] = []
    base: list[Spread] = []
    async with Server("bcast-hub", hub_argv, work) as hub, server:
        clients_argv = [
            "-m", "bench.baselines_broadcast", "--clients", server.url, "--count", str(n), "--out", str(base_out),
        ]  # fmt: skip
        async with Server("bcast-clients", clients_argv, work), await Master.connect(hub.url, master_key) as master:
            started = time.monotonic()
            minted = await master.create_scenario(SCENARIO, [(f"d{i:04d}", "linux") for i in range(n)])
            for m in minted:
                daemon_config = DaemonConfig(hub.url, SCENARIO, m.name, m.identity, master_key.public)
                write_config(work / "configs" / f"{m.name}.toml", daemon_config)
            swarm_argv = [str(work / "configs"), str(work / "swarm"), str(ours_out), "--topic", TOPIC]
            with SwarmProcess("bench.broadcast_swarm", swarm_argv, work / "swarm.log") as swarm:
                await master.wait_ready(SCENARIO, timeout=30 + n / 10)
                print(f"  {n} daemons ready in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
                trigger = await open_trigger(server.url)
                daemons, clients = Receipts(ours_out), Receipts(base_out)
                try:
                    for k in range(config.repeats + 1):  # broadcast 0: the warm-up
                        sent = time.time()
                        await trigger.send(message(k))
                        got = await clients.wait(k, n, receipt_deadline(n))
                        base.append(spread(sent, got, n, time.time()))
                        print(f"  bare #{k}: {base[-1].describe()}", file=sys.stderr, flush=True)
                        await asyncio.sleep(SETTLE)
                        swarm.check()
                        sent = time.time()
                        await master.send_message(SCENARIO, "all", TOPIC, message(k))
                        got = await daemons.wait(k, n, receipt_deadline(n))
                        ours.append(spread(sent, got, n, time.time()))
                        print(f"  ours #{k}: {ours[-1].describe()}", file=sys.stderr, flush=True)
                        await asyncio.sleep(SETTLE)
                finally:
                    await trigger.close()
    ours, base = ours[1:], base[1:]  # without the warm-up
    label = f"{n:,}"
    return [
        Record.of(
            f"{NAME}: p50 to {label} daemons", "ms", median([s.p50 for s in ours]), median([s.p50 for s in base]),
            "bare aiohttp broadcast", TARGET, lower_is_better=True, digits=2,
        ),
        Record.of(
            f"{NAME}: p99 to {label} daemons", "ms", median([s.p99 for s in ours]), median([s.p99 for s in base]),
            "bare aiohttp broadcast", None, lower_is_better=True, digits=2,
        ),
    ]  # fmt: skip
