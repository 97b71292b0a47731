"""Helpers for the end-to-end tests: hub and daemon subprocesses, and bounded waits.

Every process runs in a session (and process group) of its own and is killed with everything it started at
teardown. Waits are bounded polls, never fixed sleeps, so the suite stays fast and a hang is a clear failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psutil

from clients.master.keys import load_or_create_master_key
from clients.master.models import CommandResult, EventInfo
from clients.master.sdk import Master

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
START_TIMEOUT = 20.0

T = TypeVar("T")


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CRC_* setting that could leak in, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRC_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """One child process in a session (and process group) of its own, logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"---- start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.popen = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def _descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    def kill(self) -> None:
        """SIGKILL the process, then everything it started, as systemd does with a crashed unit's cgroup.

        Commands run by a daemon live in sessions of their own, so killing the daemon's process group alone
        would leave them running; a real crash (or systemd's cleanup of the unit) takes them down too.
        """
        if not self.running:
            return
        children = self._descendants()  # before the kill: orphans are reparented and harder to find
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.wait(10)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait for a clean exit; returns the exit code."""
        if self.running:
            os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} still running after {timeout} s\n{self.log_tail()}") from None

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit on its own without blocking the event loop."""
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout} s\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        code = self.returncode
        assert code is not None
        return code

    def cleanup(self) -> None:
        """Teardown: resume (if stopped) and kill the process and its descendants."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGCONT)
            self.kill()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.log_path}:\n" + "\n".join(self.log_text().splitlines()[-lines:])


class HubProcess(Process):
    """``crc hub --dev`` on a data dir; the first start picks a free port, later starts reuse it."""

    def __init__(
        self,
        base: Path,
        *,
        heartbeat_interval: float | None = None,
        dead_after: float | None = None,
        extra_args: Sequence[str] = (),
        key_path: Path | None = None,
        name: str = "hub",
        env: dict[str, str] | None = None,
    ):
        self.base = base
        self.data_dir = base / "data"
        self.key_path = key_path or base / "master.key"
        self.extra_args = list(extra_args)
        self.ready_file = base / "ready"
        self.port = 0
        self.url = ""
        env = {"CRC_KEY": str(self.key_path), **(env or {})}
        if heartbeat_interval is not None:
            env["CRC_HEARTBEAT_INTERVAL"] = str(heartbeat_interval)
        if dead_after is not None:
            env["CRC_DEAD_AFTER"] = str(dead_after)
        super().__init__(name, [], child_env(**env), base / "hub.log")
        self.identity, _ = load_or_create_master_key(self.key_path)

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        self.argv = [
            PYTHON, "-m", "crc_cli", "hub", "--port", str(self.port), "--ready-file",
            str(self.ready_file), "--data-dir", str(self.data_dir), "--dev", *self.extra_args,
        ]  # fmt: skip
        super().start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready_file.exists():
            if not self.running:
                raise RuntimeError(f"the hub exited with {self.returncode} before it was ready\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub was not ready after {START_TIMEOUT} s\n{self.log_tail()}")
            time.sleep(0.02)
        self.url = self.ready_file.read_text().strip()
        port = urlsplit(self.url).port
        assert port is not None and (self.port in (0, port)), f"hub came back on {self.url}, not port {self.port}"
        self.port = port

    def restart(self) -> None:
        """SIGKILL (if running) and start again on the same data dir and port."""
        self.kill()
        self.start()

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    def crc_env(self) -> dict[str, str]:
        """Environment for running the ``crc`` CLI against this hub as the dev master."""
        return child_env(CRC_KEY=str(self.key_path), CRC_HUB=self.url)


class DaemonProcess(Process):
    def __init__(self, name: str, config: Path, state_dir: Path, hosts_file: Path) -> None:
        self.config = config
        self.state_dir = state_dir
        self.hosts_file = hosts_file
        argv = [
            PYTHON, "-m", "clients.daemon.cli", "--config", str(config), "--state-dir", str(state_dir),
            "--hosts-file", str(hosts_file),
        ]  # fmt: skip
        super().__init__(f"daemon {name}", argv, child_env(), state_dir.parent / f"{name}.log")

    def restart(self) -> None:
        """SIGKILL (if running) and start again on the same state dir."""
        self.kill()
        self.start()


class Daemons:
    """Starts ``crc-daemon`` processes, each with a state dir and hosts file of its own under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: dict[str, DaemonProcess] = {}

    def start(self, config: Path, name: str | None = None) -> DaemonProcess:
        name = name or config.stem
        if name in self.started:
            raise ValueError(f"a daemon named {name} exists already; use its restart()")
        daemon = DaemonProcess(name, config, self.base / name / "state", self.base / name / "hosts")
        self.started[name] = daemon
        daemon.start()
        return daemon

    def cleanup(self) -> None:
        for daemon in self.started.values():
            daemon.cleanup()


@dataclass
class Deployment:
    """A scenario created through the SDK, with one daemon config (and maybe a running daemon) per machine."""

    name: str
    configs: dict[str, Path]
    daemons: Daemons
    running: dict[str, DaemonProcess] = field(default_factory=dict)

    def start(self, machine: str) -> DaemonProcess:
        if machine in self.running:
            self.running[machine].start()
        else:
            self.running[machine] = self.daemons.start(self.configs[machine], f"{self.name}-{machine}")
        return self.running[machine]

    def daemon(self, machine: str) -> DaemonProcess:
        return self.running[machine]


# bounded waits
async def eventually(check: Callable[[], Awaitable[T | None] | T | None], *, timeout: float, what: str) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.05)


async def wait_results(
    master: Master, scenario: str, order_ids: Sequence[str], *, timeout: float = 15.0
) -> list[CommandResult]:
    """The results of ``order_ids`` once all are final."""
    order_ids = list(order_ids)

    async def final() -> list[CommandResult] | None:
        results = await master.results(scenario, order_ids)
        if len(results) == len(order_ids) and all(r.final for r in results):
            return results
        return None

    return await eventually(final, timeout=timeout, what=f"final results of {order_ids}")


async def wait_state(master: Master, scenario: str, order_id: str, state: str, *, timeout: float = 15.0) -> None:
    async def reached() -> bool:
        (result,) = await master.results(scenario, [order_id])
        return result.status == state

    await eventually(reached, timeout=timeout, what=f"order {order_id} to be {state}")


async def next_event(
    master: Master, scenario: str, *, after: int, kind: str, machine: str = "", timeout: float = 15.0
) -> EventInfo:
    """The first event of ``kind`` (for ``machine`` if given) numbered above ``after``."""

    async def find() -> EventInfo:
        async with contextlib.aclosing(master.events(scenario, after)) as stream:
            async for item in stream:
                if isinstance(item, EventInfo) and item.kind == kind and (not machine or item.machine == machine):
                    return item
        raise AssertionError("event stream ended")

    try:
        return await asyncio.wait_for(find(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {kind} event for {machine or 'any machine'} within {timeout} s") from None


def file_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def run_crc(
    hub: HubProcess, *args: str, timeout: float = 30.0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``crc`` CLI (as ``python -m crc_cli``) against ``hub`` as the dev master (plus ``env``)."""
    return subprocess.run(
        [PYTHON, "-m", "crc_cli", *args], env={**hub.crc_env(), **(env or {})}, cwd=ROOT,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """An expected CLI failure: exit ``code``, no traceback, one stderr line holding every fragment; that line."""
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
