"""Running one shell command as a child process, streaming its output and enforcing limits.

The executor knows nothing about orders, the hub or the journal: it takes an :class:`ExecRequest`,
streams output chunks to a sink while the command runs, and returns an :class:`ExecOutcome`. Values the
request names in ``redact`` are masked (``clients.daemon.redaction``) before output reaches the sink or the
tails, so neither the live stream nor the result ever holds them.
It never raises for problems that belong to the command (missing cwd, missing shell, non-zero
exit, timeout); those are described in the outcome so the caller can report them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import psutil

from clients.daemon.redaction import Redactor

__all__ = [
    "ExecOutcome",
    "ExecRequest",
    "ExecStatus",
    "Executor",
    "OutputSink",
    "ProcessExecutor",
    "SpawnedProcess",
]

log = logging.getLogger(__name__)

OutputSink = Callable[[str, bytes], Awaitable[None]]
"""Receives ``("stdout" | "stderr", chunk)`` as soon as a chunk has been read from the child."""


@dataclass(frozen=True)
class ExecRequest:
    """What to run and under which conditions."""

    command: str
    shell: Sequence[str]
    """argv prefix, e.g. ``("/bin/sh", "-c")``; the command is appended as the last argument."""
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets: never in a repr
    """Variables merged over the daemon's own environment."""
    timeout: float | None = None
    """Seconds before the command (and everything it started) is killed; ``None`` = no limit."""
    redact: Sequence[bytes] = field(default=(), repr=False)
    """Secret values to mask in the output (and their encoded forms)."""


class ExecStatus(StrEnum):
    """How a command ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ExecOutcome:
    """The result of one :meth:`Executor.run`."""

    status: ExecStatus
    exit_code: int | None
    """``None`` when the process never started or died from a signal (``error`` then says which)."""
    stdout: bytes
    """The last ``tail_limit`` bytes of stdout."""
    stderr: bytes
    """The last ``tail_limit`` bytes of stderr."""
    stdout_truncated: bool
    stderr_truncated: bool
    error: str
    """``""`` for a plain success or non-zero exit; otherwise a human-readable explanation."""
    duration: float
    redacted: int = 0
    """How many secret values were masked in stdout and stderr together."""


class Executor(ABC):
    """Runs commands; one implementation per operating-system family."""

    @abstractmethod
    async def run(self, request: ExecRequest, on_output: OutputSink, cancel: asyncio.Event) -> ExecOutcome:
        """Run ``request`` to completion, timeout or cancellation, streaming output to ``on_output``.

        Setting ``cancel`` stops the command (and everything it started) and yields a CANCELLED
        outcome. Problems of the command itself are reported in the outcome, never raised.
        """


class _Stream:
    """One output pipe's way out: redacted first, then kept in the tail and handed to the sink."""

    def __init__(self, name: str, tail_limit: int, redact: Sequence[bytes], sink: OutputSink) -> None:
        self.name = name
        self.tail = _Tail(tail_limit)
        self.redactor = Redactor(redact)
        self.sink: OutputSink | None = sink
        self.ended = False  # read to EOF (else cut short: held-back output is masked, not released)

    async def emit(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.tail.add(chunk)
        if self.sink is not None:
            try:
                await self.sink(self.name, chunk)
            except Exception:
                # Live output is best effort; the command and its result matter more, so a broken sink stops
                # streaming for this pipe but not the command.
                log.exception("output sink failed; no further %s chunks will be streamed", self.name)
                self.sink = None

    async def finish(self) -> None:
        await self.emit(self.redactor.finish(complete=self.ended))


class _Tail:
    """Keeps the last ``limit`` bytes of a stream and remembers whether anything was dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buf = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        self._buf += chunk
        excess = len(self._buf) - self._limit
        if excess > 0:
            del self._buf[:excess]
            self.truncated = True

    def value(self) -> bytes:
        return bytes(self._buf)


@dataclass(frozen=True)
class SpawnedProcess:
    """A started child process with stream readers on its stdout and stderr."""

    process: asyncio.subprocess.Process
    stdout: asyncio.StreamReader
    stderr: asyncio.StreamReader
    transports: Sequence[asyncio.BaseTransport] = ()
    """Read transports behind the readers; closed by :meth:`close`."""

    def close(self) -> None:
        """Stop reading output; needed when a leftover background process keeps a pipe open."""
        for transport in self.transports:
            transport.close()


class ProcessExecutor(Executor):
    """Runs each command as a child process in its own session (POSIX).

    Subclasses for other systems replace :meth:`_spawn` and :meth:`_stop_tree`; everything else
    (streaming, tails, timeout and cancel handling, outcome building) is shared.
    """

    def __init__(
        self,
        tail_limit: int = 256 * 1024,
        kill_grace: float = 2.0,
        chunk_size: int = 64 * 1024,
        *,
        drain_grace: float = 1.0,
    ) -> None:
        """Create an executor.

        :param tail_limit: bytes of stdout and of stderr kept for the outcome.
        :param kill_grace: seconds between SIGTERM and SIGKILL when stopping a command.
        :param chunk_size: largest chunk handed to the output sink.
        :param drain_grace: after the command exits, how long to keep reading output that
            background processes it left behind may still hold open.
        """
        if tail_limit < 0 or chunk_size <= 0:
            raise ValueError("tail_limit must be >= 0 and chunk_size > 0")
        self._tail_limit = tail_limit
        self._kill_grace = kill_grace
        self._chunk_size = chunk_size
        self._drain_grace = drain_grace

    async def run(self, request: ExecRequest, on_output: OutputSink, cancel: asyncio.Event) -> ExecOutcome:
        """See :meth:`Executor.run`."""
        started = time.monotonic()
        problem = _check_cwd(request.cwd)
        if problem:
            return _not_started(problem, started)
        try:
            child = await self._spawn(request)
        except (OSError, ValueError) as exc:
            return _not_started(_describe_spawn_error(request, exc), started)

        proc = child.process
        streams = {name: _Stream(name, self._tail_limit, request.redact, on_output) for name in ("stdout", "stderr")}
        readers = [
            asyncio.create_task(self._pump(child.stdout, streams["stdout"])),
            asyncio.create_task(self._pump(child.stderr, streams["stderr"])),
        ]
        finished = asyncio.create_task(self._wait_and_drain(proc, readers))
        cancelled = asyncio.create_task(cancel.wait())
        status: ExecStatus | None = None
        error = ""
        try:
            done, _ = await asyncio.wait(
                {finished, cancelled}, timeout=request.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if finished not in done:
                if cancelled in done:
                    status, error = ExecStatus.CANCELLED, "cancelled"
                else:
                    status, error = ExecStatus.TIMED_OUT, f"timed out after {float(request.timeout or 0)} s"
        finally:
            # Runs on timeout, cancel, and when our own task is cancelled: nothing may outlive us.
            cancelled.cancel()
            if not finished.done():
                await self._stop_tree(proc)
                # With the whole tree dead every pipe reaches EOF, so this is quick; the bound
                # only protects against a descendant that escaped into another process group.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(finished), self._drain_grace + 1.0)
            finished.cancel()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(finished, cancelled, *readers, return_exceptions=True)
            child.close()
            for stream in streams.values():
                await stream.finish()  # what the redactor held back at the end

        exit_code = proc.returncode
        if exit_code is not None and exit_code < 0:
            if not error:
                error = f"killed by signal {_signal_name(-exit_code)}"
            exit_code = None
        if status is None:
            status = ExecStatus.SUCCEEDED if exit_code == 0 else ExecStatus.FAILED
        out, err = streams["stdout"], streams["stderr"]
        return ExecOutcome(
            status=status,
            exit_code=exit_code,
            stdout=out.tail.value(),
            stderr=err.tail.value(),
            stdout_truncated=out.tail.truncated,
            stderr_truncated=err.tail.truncated,
            error=error,
            duration=time.monotonic() - started,
            redacted=out.redactor.count + err.redactor.count,
        )

    # --- the OS-specific part -------------------------------------------------------------

    async def _spawn(self, request: ExecRequest) -> SpawnedProcess:
        """Start the child in a new session with stdin from /dev/null and readers on its output.

        A new session makes the child the leader of a fresh process group, so the whole tree it
        starts can be signalled at once without touching the daemon. Output goes through pipes we
        own rather than asyncio's PIPE: with those, Process.wait() (Python 3.11) does not return
        while a background process left behind by the command still holds them open.
        """
        readers: list[asyncio.StreamReader] = []
        transports: list[asyncio.BaseTransport] = []
        write_fds: list[int] = []
        try:
            # Readers are attached before the child exists, so a failure here leaves no process behind.
            for _ in ("stdout", "stderr"):
                reader, transport, write_fd = await _open_pipe(self._chunk_size)
                readers.append(reader)
                transports.append(transport)
                write_fds.append(write_fd)
            proc = await asyncio.create_subprocess_exec(
                *request.shell,
                request.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_fds[0],
                stderr=write_fds[1],
                cwd=request.cwd,
                env={**os.environ, **request.env},
                start_new_session=True,
            )
        except BaseException:
            for transport in transports:
                transport.close()
            raise
        finally:
            # The child has its own copies; ours would keep the pipes from ever reaching EOF.
            for fd in write_fds:
                os.close(fd)
        return SpawnedProcess(proc, readers[0], readers[1], transports)

    async def _stop_tree(self, proc: asyncio.subprocess.Process) -> None:
        """Stop the child and every process in its group: SIGTERM, ``kill_grace``, then SIGKILL."""
        pgid = proc.pid  # the child is its session's (and thus its group's) leader
        if not _signal_group(pgid, signal.SIGTERM):
            await proc.wait()
            return
        deadline = time.monotonic() + self._kill_grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self._kill_grace)
        # The leader may be gone while descendants still handle SIGTERM; give them the rest of the grace.
        while time.monotonic() < deadline and _group_alive(pgid):
            await asyncio.sleep(0.02)
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        await proc.wait()

    # --- shared machinery -----------------------------------------------------------------

    async def _pump(self, pipe: asyncio.StreamReader, stream: _Stream) -> None:
        """Copy one pipe, redacted, to the sink and the tail until EOF."""
        while chunk := await pipe.read(self._chunk_size):
            await stream.emit(stream.redactor.feed(chunk))
        stream.ended = True

    async def _wait_and_drain(self, proc: asyncio.subprocess.Process, readers: list[asyncio.Task[None]]) -> None:
        """Wait for the child to exit and its pipes to be read to the end.

        A command like ``server &`` leaves a background process holding the pipes open; after the
        child itself has exited we read for at most ``drain_grace`` and then stop listening
        instead of blocking until that process exits.
        """
        await proc.wait()
        _, pending = await asyncio.wait(readers, timeout=self._drain_grace)
        for reader in pending:
            reader.cancel()


async def _open_pipe(limit: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport, int]:
    """A pipe whose read end feeds a StreamReader; returns the reader, its transport and the write fd."""
    read_fd, write_fd = os.pipe()
    pipe = open(read_fd, "rb", buffering=0)  # noqa: SIM115 - the transport owns and closes it
    # The reader pauses the pipe once 2 * limit bytes are buffered: a slow sink throttles the
    # command instead of filling the daemon's memory.
    reader = asyncio.StreamReader(limit=limit)
    try:
        transport, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe
        )
    except BaseException:
        pipe.close()
        os.close(write_fd)
        raise
    return reader, transport, write_fd


def _check_cwd(cwd: str | None) -> str:
    """A clear message for an unusable cwd ("" when fine); spawning would only say ENOENT."""
    if cwd is None:
        return ""
    if not os.path.exists(cwd):
        return f"cwd {cwd} does not exist"
    if not os.path.isdir(cwd):
        return f"cwd {cwd} is not a directory"
    return ""


def _describe_spawn_error(request: ExecRequest, exc: OSError | ValueError) -> str:
    if isinstance(exc, ValueError):
        return f"invalid request: {exc}"
    program = request.shell[0] if request.shell else request.command
    if exc.filename is not None and request.cwd is not None and str(exc.filename) == request.cwd:
        return f"cannot use cwd {request.cwd}: {exc.strerror}"
    return f"cannot start {program}: {exc.strerror or exc}"


def _not_started(error: str, started: float) -> ExecOutcome:
    return ExecOutcome(
        status=ExecStatus.FAILED,
        exit_code=None,
        stdout=b"",
        stderr=b"",
        stdout_truncated=False,
        stderr_truncated=False,
        error=error,
        duration=time.monotonic() - started,
    )


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member changed its credentials (setuid program); still report the group as present.
        log.warning("not allowed to send %s to process group %d", sig.name, pgid)
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg also counts zombies, which wait for whoever reaps orphans (slow in some containers); they hold
    # nothing, so only living members keep the group alive.
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (OSError, psutil.Error):
            continue
    return False


def _signal_name(signum: int) -> str:
    try:
        return f"{signal.Signals(signum).name} ({signum})"
    except ValueError:
        return str(signum)
