"""Self-update where a process cannot exec: start each daemon build as a child process, the next one when it asks.

On Linux the launcher replaces itself with the build that should run (``update.launch``). A Windows service cannot
do that: the Service Control Manager watches the process it started (pythonservice.exe, from the first venv), and
``os.execv`` on Windows starts a new process and ends the old one. So the service stays a small supervisor: it
asks ``update.choose`` which build to run, starts that build's ``crc-daemon`` as a child with the same marker the
launcher sets, and when the child ends:

- asking to restart (``EXIT_RESTART``, after an UPDATE order installed a build): choose again, i.e. start the trial;
- a trial that ended any other way (it crashed, or did not reach the hub in time): choose again, i.e. roll back;
- revoked, a bad config, or a confirmed build that crashed: return its exit status, and the service manager's
  policy decides (no restart after a revocation; restart after a crash).

The child is stopped by closing its stdin (it watches for that, ``STOP_ON_EOF_ENV``): a service has no console
for Ctrl+Break, and ``TerminateProcess`` would not let it close its journal and session. ``crc-daemon supervise``
runs the same supervisor in the foreground on any system (a host without a service manager, and the tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clients.daemon import update

log = logging.getLogger(__name__)

STOP_ON_EOF_ENV = "CRC_DAEMON_STOP_ON_EOF"
STOP_GRACE_SECONDS = 30.0
MIN_START_INTERVAL = 1.0  # a build that asks to restart at once cannot make the loop spin
MAX_LOG_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class Supervision:
    state_dir: Path
    base_venv: Path
    """The supervisor's own build: what runs when no other build is pending or confirmed."""
    argv: tuple[str, ...]
    """The daemon's arguments (``--config ...``), the same for every build."""
    log_file: Path | None = None
    """Where each child's stdout and stderr go (appended; one older file kept); None: this process's own."""


async def supervise(supervision: Supervision, stop: asyncio.Event) -> int:
    """Run builds until ``stop`` is set (then 0) or one ends in a way another start would not mend (its status)."""
    last_start = float("-inf")
    while not stop.is_set():
        await _wait_or_stop(stop, last_start + MIN_START_INTERVAL - time.monotonic())
        if stop.is_set():
            break
        venv, marker = update.choose(supervision.state_dir, supervision.base_venv)
        last_start = time.monotonic()
        try:
            child = await _start(supervision, venv, marker)
        except OSError as exc:
            log.error("cannot start the daemon build in %s: %s", venv, exc)
            update.cannot_start(supervision.state_dir, marker)
            if marker == update.LAUNCHED_ENV and venv.resolve() == supervision.base_venv.resolve():
                return 1  # not even the supervisor's own build starts: nothing left to try
            continue
        status = await _wait_for_child(child, stop)
        if stop.is_set():
            break
        if status == update.EXIT_RESTART:
            log.info("the daemon in %s asked to restart", venv)
            continue
        if marker == update.TRIAL_ENV:
            log.warning("the new build in %s ended (exit %s) before proving itself; rolling back", venv, status)
            continue
        log.warning("the daemon in %s ended (exit %s)", venv, status)
        return status
    return 0


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def _start(supervision: Supervision, venv: Path, marker: str) -> asyncio.subprocess.Process:
    program = str(update.venv_daemon(venv))
    env = {k: v for k, v in os.environ.items() if k not in (update.TRIAL_ENV, update.LAUNCHED_ENV)}
    env.update({marker: "1", STOP_ON_EOF_ENV: "1"})
    output = _open_log(supervision.log_file) if supervision.log_file else None
    try:
        child = await asyncio.create_subprocess_exec(
            program,
            *supervision.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            env=env,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),  # a service has no console to show
        )
    finally:
        if output is not None:
            output.close()  # the child holds its own handle
    log.info("started %s (%s, pid %s)", program, "trial" if marker == update.TRIAL_ENV else "launched", child.pid)
    return child


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > MAX_LOG_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    return path.open("ab")


async def _wait_for_child(child: asyncio.subprocess.Process, stop: asyncio.Event) -> int:
    ended = asyncio.ensure_future(child.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not ended.done():
        if child.stdin is not None:
            child.stdin.close()  # "stop": the child finishes what it must and exits
        try:
            await asyncio.wait_for(asyncio.shield(ended), STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning("the daemon (pid %s) did not stop within %.0f s; killing it", child.pid, STOP_GRACE_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                child.kill()
    return await ended


def stop_when_stdin_closes(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """In a supervised daemon: set ``stop`` once the supervisor closes our stdin (or dies, which closes it too)."""

    def watch() -> None:
        # The raw descriptor, not sys.stdin: a thread blocked in a buffered read holds that buffer's lock, and the
        # interpreter aborts at exit when it cannot take it ("could not acquire lock ... at interpreter shutdown").
        with contextlib.suppress(OSError, ValueError, AttributeError):
            descriptor = sys.stdin.fileno()
            while os.read(descriptor, 4096):
                pass
        with contextlib.suppress(RuntimeError):  # the loop has ended already
            loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch, name="stop-on-eof", daemon=True).start()
