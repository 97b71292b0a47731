"""Scenario "idle_connections": N idle daemon sessions on one hub process; memory per connection, handshake rate.

The hub runs in a process of its own (``bench.hub_process``, production limits) with N machines enrolled (in
scenarios of ``SCENARIO_SIZE``: a ``ScenarioCreate`` of 10,000 keys does not fit one 1 MiB frame). This process
opens N daemon sessions with ``HubLink`` (the real handshake: X25519 + Ed25519 + HKDF, then WELCOME), at most
``CONCURRENCY`` handshakes in flight, and keeps them idle the way a daemon does: ``HubLink``'s heartbeat PINGs,
and a reader per link answering the hub's PINGs. No ``Daemon`` objects (no journal, no order runner).

Figures: memory per connection = (hub RSS with all N connected and settled - hub RSS before) / N, each RSS the
median of ``SAMPLES`` samples; handshake rate = N / the time to open all N. The baseline is a bare aiohttp
WebSocket server (``bench.baselines_idle``, no compression) holding N idle plain ``websockets`` clients, measured
the same way in the same run. Each repeat uses fresh server processes (memory freed by closed sockets is not
given back to the OS, so a reused process would not start from the same place).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import sys
import time
from collections.abc import Awaitable, Callable

import psutil
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from bench.baselines_idle import open_idle, raise_nofile_limit
from bench.common import Config, Record, Server, median
from clients.link import HubLink
from clients.master.sdk import Master
from protocol import CrcError, Identity, Role

NAME = "idle_connections"
TARGET = 1.5  # hub memory per connection at most 1.5x the bare server's
CONCURRENCY = 200  # handshakes in flight (the hub admits at most 1,000 unauthenticated connections at once)
WARM = 10  # connections opened and closed before the "before" sample: one-off costs (first handshake...)
SCENARIO_SIZE = 2_000  # machines per ScenarioCreate (one frame: about 180 bytes of keys and names per machine)
OPEN_TIMEOUT = 15.0  # one connection's handshake
SETTLE = 2.0  # seconds after the last connection before sampling (0.5 for tiny smoke runs)
SAMPLES = 5  # RSS samples (SETTLE / 10 apart) per measurement; the median is used
BUDGET = {True: 40.0, False: 180.0}  # seconds: no further repeat is started once it would not fit


def connection_count(config: Config) -> int:
    """N: 10,000; 2,000 with --quick; 50 for the smoke test's tiny runs (``--messages`` under 1,000)."""
    if config.messages < 1_000:
        return 50
    return 2_000 if config.quick else 10_000


def connect_deadline(n: int) -> float:
    """Bound on opening N connections: generous (100 handshakes/s is far below anything measured) but finite."""
    return 20.0 + n / 100.0


class Clients:
    """The connections one phase opened in this process; ``abort`` drops them all at once."""

    def __init__(self) -> None:
        self.links: list[HubLink] = []
        self.sockets: list[ClientConnection] = []
        self.readers: list[asyncio.Task[None]] = []

    def add_link(self, link: HubLink) -> None:
        self.links.append(link)
        self.sockets.append(link.ws)
        self.readers.append(asyncio.create_task(_read(link)))

    def closed(self) -> int:
        return sum(ws.state is not State.OPEN for ws in self.sockets)

    async def abort(self) -> None:
        """Drop every socket (no closing handshake: not measured, and 10,000 of them take a while)."""
        for task in self.readers:
            task.cancel()
        for ws in self.sockets:
            ws.transport.abort()
        await asyncio.sleep(0.1)  # connection_lost callbacks run: the links see their sockets closed
        if self.links:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(link.close() for link in self.links), return_exceptions=True), 5
                )
        self.links, self.sockets, self.readers = [], [], []


async def _read(link: HubLink) -> None:
    """What a daemon's reader does when idle: answer the hub's PINGs (``HubLink.recv`` does), read the rest."""
    with contextlib.suppress(CrcError):
        while True:
            await link.recv()


async def open_all(open_one: Callable[[int], Awaitable[None]], n: int) -> float:
    """Open N connections, ``CONCURRENCY`` at a time; the seconds it took. Raises the first failure."""
    indexes = iter(range(n))

    async def worker() -> None:
        for i in indexes:
            await open_one(i)

    start = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(min(CONCURRENCY, n))]
    try:
        await asyncio.wait_for(asyncio.gather(*workers), connect_deadline(n))
    except TimeoutError:
        raise RuntimeError(f"could not open {n} connections within {connect_deadline(n):.0f} s") from None
    finally:
        for task in workers:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 5)
    return time.perf_counter() - start


async def rss_kib(pid: int, gap: float) -> float:
    """The process's resident memory in KiB: the median of ``SAMPLES`` samples ``gap`` seconds apart."""
    process = psutil.Process(pid)
    values = []
    for i in range(SAMPLES):
        if i:
            await asyncio.sleep(gap)
        values.append(process.memory_info().rss / 1024)
    return median(values)


async def measure(
    pid: int, clients: Clients, open_one: Callable[[int], Awaitable[None]], n: int, warm: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """(KiB per connection, connections/s) for N connections to the server process ``pid``."""
    settle = SETTLE if n >= 1_000 else SETTLE / 4
    await warm()
    await asyncio.sleep(settle / 2)
    before = await rss_kib(pid, settle / 10)
    seconds = await open_all(open_one, n)
    await asyncio.sleep(settle)
    after = await rss_kib(pid, settle / 10)
    if clients.closed():
        raise RuntimeError(f"{clients.closed()} of {n} connections closed before the measurement ended")
    return (after - before) / n, n / seconds


async def stop(server: Server) -> None:
    """SIGINT (the hub stops at once; SIGTERM would drain first), then ``Server.stop`` if it is still there."""
    try:
        popen = server.popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 5
            while popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    finally:
        server.stop()


async def ours(
    config: Config, hub_argv: list[str], identities: list[Identity], n: int, run: int
) -> tuple[float, float]:
    """One fresh hub process: N daemon sessions (after ``WARM`` opened and closed)."""
    hub = Server(f"idle-hub-{run}", hub_argv, config.work_dir)
    clients = Clients()
    try:
        await hub.start()
        assert hub.popen is not None

        async def open_one(i: int) -> None:
            clients.add_link(
                await HubLink.connect(hub.url, identities[WARM + i], Role.DAEMON, open_timeout=OPEN_TIMEOUT)
            )

        async def warm() -> None:
            links = await asyncio.gather(*(HubLink.connect(hub.url, identities[i], Role.DAEMON) for i in range(WARM)))
            await asyncio.gather(*(link.close() for link in links))

        return await measure(hub.popen.pid, clients, open_one, n, warm)
    finally:
        try:
            await clients.abort()
        finally:
            await stop(hub)


async def base(config: Config, n: int, run: int) -> tuple[float, float]:
    """One fresh bare server process: N idle plain WebSocket connections (after ``WARM`` opened and closed)."""
    server = Server(f"idle-bare-{run}", ["-m", "bench.baselines_idle"], config.work_dir)
    clients = Clients()
    try:
        await server.start()
        assert server.popen is not None

        async def open_one(_: int) -> None:
            clients.sockets.append(await open_idle(server.url, OPEN_TIMEOUT))

        async def warm() -> None:
            sockets = await asyncio.gather(*(open_idle(server.url) for _ in range(WARM)))
            await asyncio.gather(*(ws.close() for ws in sockets))

        return await measure(server.popen.pid, clients, open_one, n, warm)
    finally:
        try:
            await clients.abort()
        finally:
            await stop(server)


async def enrol(config: Config, hub_argv: list[str], master_key: Identity, count: int) -> list[Identity]:
    """Declare ``count`` machines on the hub's data dir (through the master SDK); their daemon identities."""
    hub = Server("idle-hub-setup", hub_argv, config.work_dir)
    identities: list[Identity] = []
    try:
        await hub.start()
        async with await Master.connect(hub.url, master_key) as master:
            for first in range(0, count, SCENARIO_SIZE):
                names = [(f"m{i:05d}", "linux") for i in range(first, min(count, first + SCENARIO_SIZE))]
                minted = await master.create_scenario(f"idle-{first // SCENARIO_SIZE:03d}", names)
                identities += [m.identity for m in minted]
    finally:
        await stop(hub)
    return identities


async def run(config: Config) -> list[Record]:
    raise_nofile_limit()
    n = connection_count(config)
    master_key = Identity.generate(secrets.token_bytes)
    hub_argv = [
        "-m", "bench.hub_process", "--data-dir", str(config.work_dir / "idle-hub-data"),
        "--master-key", master_key.public.to_text(), "--default-limits",
    ]  # fmt: skip
    identities = await enrol(config, hub_argv, master_key, WARM + n)
    started = time.monotonic()
    memory: tuple[list[float], list[float]] = ([], [])
    rates: tuple[list[float], list[float]] = ([], [])
    for repeat in range(config.repeats):
        lap = time.monotonic()
        base_kib, base_rate = await base(config, n, repeat)
        our_kib, our_rate = await ours(config, hub_argv, identities, n, repeat)
        memory[0].append(our_kib)
        memory[1].append(base_kib)
        rates[0].append(our_rate)
        rates[1].append(base_rate)
        print(
            f"  {NAME} run {repeat + 1}, N={n}: hub {our_kib:.1f} KiB/conn, {our_rate:.0f} conn/s; "
            f"bare {base_kib:.1f} KiB/conn, {base_rate:.0f} conn/s",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        if repeat + 1 < config.repeats and elapsed + (time.monotonic() - lap) > BUDGET[config.quick]:
            print(f"  {NAME}: stopping after {repeat + 1} runs (time budget)", file=sys.stderr, flush=True)
            break
    return [
        Record.of(
            f"{NAME}: memory per connection", "KiB", median(memory[0]), median(memory[1]),
            "bare aiohttp WebSocket server", TARGET, lower_is_better=True,
        ),
        Record.of(
            f"{NAME}: handshakes", "conn/s", median(rates[0]), median(rates[1]), "bare aiohttp WebSocket accept", None
        ),
    ]  # fmt: skip
