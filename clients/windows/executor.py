"""Running commands through PowerShell, killing the whole process tree through a job object.

Only spawning and stopping differ from the shared :class:`~clients.daemon.executor.ProcessExecutor`;
streaming, tails, timeouts, cancellation and outcomes are the shared code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.daemon.executor import ExecOutcome, ExecRequest, ExecStatus, OutputSink, ProcessExecutor, SpawnedProcess
from clients.windows._pywin32 import is_windows, load
from clients.windows.powershell import current_oem_codepage, decode_output, powershell_argv, quote_literal

__all__ = ["DEFAULT_POWERSHELL", "PowerShellExecutor"]

log = logging.getLogger(__name__)

DEFAULT_POWERSHELL = "powershell.exe"
"""Windows PowerShell 5.1, present on every supported Windows; ``pwsh`` (7.x) when configured."""


@dataclass(frozen=True)
class _JobProcess(SpawnedProcess):
    """A spawned process together with the job object that holds its tree."""

    release: Callable[[], None] | None = None

    def close(self) -> None:
        super().close()
        if self.release is not None:
            self.release()


def as_utf8(outcome: ExecOutcome, oem_codepage: int | None) -> ExecOutcome:
    """The outcome with its output tails as UTF-8: the wrapper makes PowerShell print UTF-8, but native
    programs may still print in the console's OEM code page. Results are text for the master, so they are
    normalised once here; live chunks stay raw (a chunk may end inside a character)."""
    return dataclasses.replace(
        outcome,
        stdout=decode_output(outcome.stdout, oem_codepage).encode("utf-8"),
        stderr=decode_output(outcome.stderr, oem_codepage).encode("utf-8"),
    )


class PowerShellExecutor(ProcessExecutor):
    """Runs each command as a PowerShell script (see :func:`~clients.windows.powershell.wrap_script`).

    The executable is ``executable`` when given, else the first word of the request's shell (the
    platform default is ``powershell.exe``). On Windows the child and everything it starts is put
    in a job object, and timeout or cancel terminates the whole job. On other systems (``pwsh`` on
    Linux or macOS) the shared POSIX spawning and process-group handling are used unchanged.
    """

    def __init__(self, executable: str | None = None, *, script_dir: Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.executable = executable
        # Where scripts too long for a command line are written for the time they run: a folder only the
        # daemon's account (SYSTEM, Administrators) can read, as the daemon's state dir is.
        self.script_dir = script_dir
        self._jobs: dict[int, Any] = {}

    async def run(self, request: ExecRequest, on_output: OutputSink, cancel: asyncio.Event) -> ExecOutcome:
        """See :meth:`Executor.run`; a configured executable replaces the request's shell (also in errors).

        A script too long for a Windows command line (32,767 characters once encoded) is written to a file of
        its own in ``script_dir`` (UTF-8 with a byte-order mark, which Windows PowerShell 5.1 needs to read it
        as UTF-8) and dot-sourced by the usual wrapper, so it behaves the same; the file is removed afterwards.
        """
        if self.executable:
            request = dataclasses.replace(request, shell=(self.executable,))
        script_file: Path | None = None
        try:
            self.argv(request)
        except ValueError:
            try:
                script_file = self._write_script(request.command)
            except OSError as exc:
                return ExecOutcome(
                    status=ExecStatus.FAILED, exit_code=None, stdout=b"", stderr=b"", stdout_truncated=False,
                    stderr_truncated=False, error=f"cannot write the long script to a file: {exc.strerror or exc}",
                    duration=0.0,
                )  # fmt: skip
            request = dataclasses.replace(request, command=f". {quote_literal(str(script_file))}")
        try:
            outcome = await super().run(request, on_output, cancel)
        finally:
            if script_file is not None:
                with contextlib.suppress(OSError):
                    script_file.unlink()
        return as_utf8(outcome, current_oem_codepage())

    def _write_script(self, script: str) -> Path:
        folder = self.script_dir or Path(tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="crc-command-", suffix=".ps1", dir=folder)  # 0600 on POSIX
        with os.fdopen(fd, "w", encoding="utf-8-sig", newline="") as f:
            f.write(script)
        return Path(name)

    def argv(self, request: ExecRequest) -> list[str]:
        """The full command line for ``request``; raises ``ValueError`` when it cannot be built."""
        executable = self.executable or (request.shell[0] if request.shell else DEFAULT_POWERSHELL)
        return powershell_argv(executable, request.command)

    async def _spawn(self, request: ExecRequest) -> SpawnedProcess:
        argv = self.argv(request)
        if not is_windows():
            # The shared spawner appends the command to the shell prefix: hand it the encoded form.
            return await super()._spawn(dataclasses.replace(request, shell=tuple(argv[:-1]), command=argv[-1]))
        return await self._spawn_in_job(argv, request)

    async def _spawn_in_job(self, argv: list[str], request: ExecRequest) -> SpawnedProcess:
        """Start the child with pipes and put it into a fresh job object (Windows only)."""
        win32job = load("win32job")
        win32api = load("win32api")
        win32con = load("win32con")
        job = win32job.CreateJobObject(None, "")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=request.cwd,
                env={**os.environ, **request.env},
                limit=self._chunk_size,
            )
        except BaseException:
            win32api.CloseHandle(job)
            raise
        try:
            # A process the child starts before this line escapes the job; PowerShell's own
            # start-up takes far longer than this call, so in practice nothing does.
            handle = win32api.OpenProcess(win32con.PROCESS_TERMINATE | win32con.PROCESS_SET_QUOTA, False, proc.pid)
            try:
                win32job.AssignProcessToJobObject(job, handle)
            finally:
                win32api.CloseHandle(handle)
        except Exception:
            log.warning("could not put process %d into a job object; only it will be killed", proc.pid, exc_info=True)
        self._jobs[proc.pid] = job
        assert proc.stdout is not None and proc.stderr is not None

        def release() -> None:
            if self._jobs.pop(proc.pid, None) is not None:
                win32api.CloseHandle(job)

        return _JobProcess(proc, proc.stdout, proc.stderr, release=release)

    async def _stop_tree(self, proc: asyncio.subprocess.Process) -> None:
        """Terminate the job (the child and every descendant) on Windows; the shared POSIX way elsewhere."""
        if not is_windows():
            await super()._stop_tree(proc)
            return
        job = self._jobs.get(proc.pid)
        terminated = False
        if job is not None:
            try:
                load("win32job").TerminateJobObject(job, 1)
                terminated = True
            except Exception:
                log.warning("could not terminate the job of process %d", proc.pid, exc_info=True)
        if not terminated:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()
