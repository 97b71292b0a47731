"""The Windows spawn path (pipes and a job object), driven on POSIX with stand-ins for pywin32's modules."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from clients.daemon.executor import ExecRequest, ExecStatus
from clients.windows import executor as windows_executor
from clients.windows.executor import PowerShellExecutor

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="simulates Windows with POSIX processes")


class FakePywin32:
    """Just enough of win32job, win32api and win32con: a job kills its processes with SIGKILL."""

    def __init__(self) -> None:
        self.jobs: list[list[int]] = []
        self.closed: list[object] = []
        self.terminated: list[int] = []

    def module(self, name: str) -> Any:
        return {
            "win32job": SimpleNamespace(
                CreateJobObject=self.create_job,
                AssignProcessToJobObject=lambda job, handle: self.jobs[job].append(handle),
                TerminateJobObject=self.terminate,
            ),
            "win32api": SimpleNamespace(OpenProcess=lambda access, inherit, pid: pid, CloseHandle=self.closed.append),
            "win32con": SimpleNamespace(PROCESS_TERMINATE=1, PROCESS_SET_QUOTA=0x100),
        }[name]

    def create_job(self, security: object, name: str) -> int:
        self.jobs.append([])
        return len(self.jobs) - 1

    def terminate(self, job: int, code: int) -> None:
        self.terminated.append(job)
        for pid in self.jobs[job]:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def pywin32(monkeypatch: pytest.MonkeyPatch) -> FakePywin32:
    fake = FakePywin32()
    monkeypatch.setattr(windows_executor, "is_windows", lambda: True)
    monkeypatch.setattr(windows_executor, "load", fake.module)
    return fake


def fake_powershell(tmp_path: Path, body: str) -> str:
    path = tmp_path / "powershell"
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def run(executor: PowerShellExecutor, timeout: float | None = None) -> Any:
    async def sink(stream: str, chunk: bytes) -> None:
        pass

    return await executor.run(ExecRequest("Get-Date", (), timeout=timeout), sink, asyncio.Event())


async def test_the_child_runs_in_a_job_whose_handle_is_closed_afterwards(pywin32: FakePywin32, tmp_path: Path) -> None:
    exe = fake_powershell(tmp_path, "print(sys.argv[-2]); sys.exit(4)")
    outcome = await run(PowerShellExecutor(exe))
    assert outcome.status is ExecStatus.FAILED and outcome.exit_code == 4
    assert outcome.stdout.strip() == b"-EncodedCommand"
    assert len(pywin32.jobs) == 1 and len(pywin32.jobs[0]) == 1, "the child was put into its job"
    assert 0 in pywin32.closed, "the job handle is released when the run ends"
    assert pywin32.terminated == []


async def test_a_timeout_terminates_the_job(pywin32: FakePywin32, tmp_path: Path) -> None:
    exe = fake_powershell(tmp_path, "print('started', flush=True); time.sleep(30)")
    outcome = await run(PowerShellExecutor(exe), timeout=1.0)
    assert outcome.status is ExecStatus.TIMED_OUT
    assert outcome.stdout == b"started\n"
    assert pywin32.terminated == [0]
    assert 0 in pywin32.closed
