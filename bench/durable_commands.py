"""Scenario "durable_commands": signed orders master -> daemons and their signed results, through the real hub.

The hub runs in a process of its own (``bench.hub_process``, default SQLite store, per-session rate limit
lifted); ``DAEMONS`` real ``Daemon`` objects (``clients.daemon.agent``, each with its own journal) run in a swarm
process (``bench.swarm``). One ``Master`` in this process signs PING orders (``Master.sign``: a signed no-op
the daemon journals and answers at once, no process spawned) and submits them (``Master.submit``) round-robin
over the daemons, at most ``WINDOW`` in flight (submitted, not yet finished). A second master session,
subscribed to the scenario's events, counts ``command_finished``: the hub emits it only once it has stored the
daemon's signed result, which the daemon journaled before sending. So a completion is the whole durable path:
order verified and stored, delivered, journaled (received, running, result), result verified and stored.
The figure is N / time from the first submit until the last ``command_finished``.

Baselines, in the same run, alternating with ours: the bare aiohttp relay (``bench.baselines``) with the same
count of 256-byte frames, and python-socketio with ``AsyncRedisManager`` doing the same count of request/response
round trips (``bench.baselines_socketio``; skipped with a note when not installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

from bench import baselines_socketio
from bench.baselines import relay_flood
from bench.common import BATCH, ROOT, WINDOW, Config, Record, Server, child_env, median
from bench.output_frames import Watcher
from clients.daemon.config import DaemonConfig, write_config
from clients.link import HubLink
from clients.master.keys import load_or_create_master_key
from clients.master.models import Scenario
from clients.master.sdk import Master
from protocol import Envelope, OrderKind, Role
from protocol.events import EventKind
from protocol.messages import Event

NAME = "durable_commands"
TARGET = 0.25  # issue scenario (1): at least a quarter of the bare relay's rate
SIO_TARGET = 10.0  # and at least 10x python-socketio with Redis
SCENARIO = "bench-durable"
DAEMONS = 4
ORDER_TTL = 600.0
READY_TIMEOUT = 60.0
# Durable commands cost far more than output frames (SQLite writes on the hub, fsynced journal writes on the
# daemon): a tenth of the output flood's count keeps a run near 3-5 s (quick) or 10-20 s (full) here.
SCALE = 10
WINDOW_OVERRIDE = int(os.environ.get("CRC_BENCH_DURABLE_WINDOW", "0"))  # to measure other windows


def command_count(messages: int) -> int:
    return max(20, messages // SCALE)


def command_timeout(commands: int) -> float:
    """Bound on one command flood: generous (50 commands/s is far below anything measured) but finite."""
    return 10.0 + commands / 50.0


class FinishedWatcher(Watcher):
    """A master session subscribed to the scenario's events, counting ``command_finished`` (any other final
    status than succeeded fails the run)."""

    def __init__(self, link: HubLink) -> None:
        super().__init__(link, SCENARIO)

    def counts(self, envelope: Envelope) -> bool:
        body = envelope.body
        if not (isinstance(body, Event) and body.kind == EventKind.COMMAND_FINISHED):
            return False
        if body.data.get("status") != "succeeded":
            raise RuntimeError(f"an order finished {body.data.get('status')}: {body.data}")
        return True


async def command_flood(
    master: Master, sc: Scenario, watcher: FinishedWatcher, commands: int, window: int = WINDOW
) -> float:
    """Commands per second: N signed PINGs round-robin over the daemons until the last ``command_finished``.

    ``Master.submit`` waits for the hub's answer, so each submit runs in a task of its own (at most ``WINDOW``
    orders are in flight, submitted but not finished); a refused submit fails the run.
    """
    counter = watcher.counter
    counter.reset()
    machines = itertools.cycle(sc.machines)
    submits: set[asyncio.Task[str]] = set()

    def submitted(task: asyncio.Task[str]) -> None:
        submits.discard(task)
        if not task.cancelled() and task.exception() is not None:
            counter.fail(task.exception() or RuntimeError("submit failed"))

    deadline = time.monotonic() + command_timeout(commands)
    start = time.perf_counter()
    sent = 0
    try:
        while sent < commands:
            for _ in range(min(BATCH, commands - sent)):
                order = master.sign(sc, next(machines), OrderKind.PING, {}, ORDER_TTL)
                task = asyncio.create_task(master.submit(order))
                submits.add(task)
                task.add_done_callback(submitted)
            sent += min(BATCH, commands - sent)
            await asyncio.sleep(0)  # let the submits go out
            await counter.wait_for(sent - window, deadline)
        await counter.wait_for(commands, deadline)
        return commands / (time.perf_counter() - start)
    finally:
        for task in list(submits):
            task.cancel()


class Swarm:
    """``bench.swarm`` in a process (and session) of its own, running a daemon per config; stopped on exit."""

    def __init__(self, work_dir: Path) -> None:
        self.configs = work_dir / "durable-configs"
        self.state = work_dir / "durable-swarm"
        self.log_path = work_dir / "durable-swarm.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "bench.swarm", str(self.configs), str(self.state)],
                env=child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)


async def run(config: Config) -> list[Record]:
    identity, _ = load_or_create_master_key(config.work_dir / "master.key")
    commands = command_count(config.messages)
    hub_argv = [
        "-m", "bench.hub_process", "--data-dir", str(config.work_dir / "durable-hub-data"),
        "--master-key", identity.public.to_text(),
    ]  # fmt: skip
    sio_missing = baselines_socketio.missing()
    if sio_missing:
        baselines_socketio.skip_note(NAME, sio_missing)
    ours: list[float] = []
    base: list[float] = []
    sio: list[float] = []
    async with AsyncExitStack() as stack:
        hub = await stack.enter_async_context(Server("durable-hub", hub_argv, config.work_dir))
        relay = await stack.enter_async_context(Server("relay", ["-m", "bench.baselines"], config.work_dir))
        sio_relay = None
        if not sio_missing:
            sio_relay = await stack.enter_async_context(baselines_socketio.SocketioRelay(config.work_dir))
        master = await Master.connect(hub.url, identity)
        stack.push_async_callback(master.close)
        minted = await master.create_scenario(SCENARIO, [(f"d{i}", "linux") for i in range(DAEMONS)])
        swarm = Swarm(config.work_dir)
        for m in minted:
            write_config(swarm.configs / f"{m.name}.toml", DaemonConfig(hub.url, SCENARIO, m.name, m.identity,
                                                                        identity.public))  # fmt: skip
        stack.callback(swarm.stop)
        swarm.start()
        sc = await master.wait_ready(SCENARIO, timeout=READY_TIMEOUT)
        warm = await master.ping(SCENARIO, "all", timeout=30)  # every daemon answers before the clock starts
        if not all(r.ok for r in warm):
            raise RuntimeError(f"daemons did not answer a PING: {[(r.machine, r.status) for r in warm]}")
        watcher = FinishedWatcher(await HubLink.connect(hub.url, identity, Role.MASTER))
        stack.push_async_callback(watcher.close)
        await watcher.subscribe()
        for _ in range(config.repeats):
            base.append(await relay_flood(relay.url, commands))
            ours.append(await command_flood(master, sc, watcher, commands, WINDOW_OVERRIDE or WINDOW))
            if sio_relay is not None:
                sio.append(await baselines_socketio.sio_round_trips(sio_relay.url, commands))
        print(f"  {NAME}: N={commands} commands over {DAEMONS} daemons, window {WINDOW}", file=sys.stderr)
    records = [Record.of(NAME, "cmds/s", median(ours), median(base), "bare aiohttp relay", TARGET)]
    if sio:
        records.append(
            Record.of(
                f"{NAME} vs python-socketio",
                "cmds/s",
                median(ours),
                median(sio),
                baselines_socketio.SIO_NAME,
                SIO_TARGET,
            )
        )
    return records
