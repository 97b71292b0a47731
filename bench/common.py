"""What every scenario shares: the record it reports, run settings, server subprocesses, bounded waits."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = 256
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Config:
    """How long and how often: ``repeats`` runs per figure (the median is reported), ``messages`` per flood."""

    quick: bool
    repeats: int
    messages: int
    work_dir: Path


@dataclass(frozen=True)
class Record:
    """One figure and its baseline, both measured in the same run; ``ratio`` = ours / baseline."""

    scenario: str
    unit: str
    ours: float
    baseline: float
    baseline_name: str
    ratio: float
    target: float | None
    met: bool | None

    @classmethod
    def of(
        cls,
        scenario: str,
        unit: str,
        ours: float,
        baseline: float,
        baseline_name: str,
        target: float | None,
        *,
        lower_is_better: bool = False,
        digits: int = 1,
    ) -> Record:
        """``target`` bounds the ratio from below (rates), or from above with ``lower_is_better`` (latency,
        memory): e.g. a p99 within 3x the baseline's is ``target=3.0, lower_is_better=True``."""
        ratio = ours / baseline if baseline else 0.0
        met = None if target is None else (ratio <= target if lower_is_better else ratio >= target)
        return cls(
            scenario, unit, round(ours, digits), round(baseline, digits), baseline_name, round(ratio, 3), target, met
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Server:
    """A server in a process of its own (so it does not share the clients' event loop), writing its URL to a file."""

    def __init__(self, name: str, argv: list[str], work_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.ready_file = work_dir / f"{name}.ready"
        self.log_path = work_dir / f"{name}.log"
        self.argv = [*argv, "--ready-file", str(self.ready_file)]
        self.env = env or child_env()
        self.popen: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> str:
        self.ready_file.unlink(missing_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, *self.argv], env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready_file.exists():
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {START_TIMEOUT} s; see {self.log_path}")
            await asyncio.sleep(0.02)
        self.url = self.ready_file.read_text().strip()
        return self.url

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


async def serve_app(app: web.Application, path: str, ready_file: Path, scheme: str = "ws") -> None:
    """Serve a baseline's aiohttp app on a free port of 127.0.0.1, announce its URL in ``ready_file`` (see
    ``Server``), and run until cancelled."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    write_ready(ready_file, f"{scheme}://127.0.0.1:{runner.addresses[0][1]}{path}")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def open_ws(url: str, role: str, timeout: float) -> ClientConnection:
    """A plain ``websockets`` client of a baseline server (no compression, no pings), in ``timeout`` seconds."""
    return await asyncio.wait_for(
        connect(f"{url}?role={role}", compression=None, max_size=1 << 20, ping_interval=None, close_timeout=2),
        timeout,
    )


def write_ready(ready_file: Path, url: str) -> None:
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(url)
    tmp.replace(ready_file)


def flood_timeout(messages: int) -> float:
    """Bound on one flood: generous (1,000 msgs/s would be far below anything measured) but finite."""
    return 10.0 + messages / 1000.0


# The sender may run at most this many messages ahead of the receiver. The hub has no end-to-end backpressure
# from a subscriber to the daemon (it drops a master whose outbox passes 10,000 frames), so an unwindowed flood
# larger than that measures the drop, not the throughput. The baseline relay gets the same window.
WINDOW = 2_000
BATCH = 250


class Counter:
    """Messages received so far; senders wait on it to stay within ``WINDOW`` of the receiver."""

    def __init__(self) -> None:
        self.count = 0
        self.error: BaseException | None = None
        self._threshold = 0
        self._reached = asyncio.Event()

    def reset(self) -> None:
        self.count, self._threshold = 0, 0
        self._reached.clear()

    def add(self) -> None:
        self.count += 1
        if self.count >= self._threshold:
            self._reached.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._reached.set()

    async def wait_for(self, count: int, deadline: float) -> None:
        """Until ``count`` messages arrived (or the receiver failed); TimeoutError past ``deadline`` (monotonic)."""
        while self.count < count and self.error is None:
            self._threshold = count
            self._reached.clear()
            await asyncio.wait_for(self._reached.wait(), max(0.01, deadline - time.monotonic()))
        if self.error is not None:
            raise RuntimeError(f"the receiver failed after {self.count} messages: {self.error}")


async def windowed_flood(send: Callable[[], Awaitable[None]], counter: Counter, messages: int) -> float:
    """Send ``messages`` (in batches, at most ``WINDOW`` ahead of the receiver); messages/s until all arrived."""
    counter.reset()
    deadline = time.monotonic() + flood_timeout(messages)
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        for _ in range(min(BATCH, messages - sent)):
            await send()
        sent += min(BATCH, messages - sent)
        await counter.wait_for(sent - WINDOW, deadline)
    await counter.wait_for(messages, deadline)
    return messages / (time.perf_counter() - start)
