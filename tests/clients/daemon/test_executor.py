"""ProcessExecutor against real shell processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import time
from pathlib import Path

import psutil
import pytest

from clients.daemon.executor import ExecOutcome, ExecRequest, ExecStatus, ProcessExecutor

SH = ("/bin/sh", "-c")


class Collector:
    """An output sink that remembers every chunk with its arrival time."""

    def __init__(self) -> None:
        self.chunks: list[tuple[float, str, bytes]] = []

    async def __call__(self, stream: str, chunk: bytes) -> None:
        self.chunks.append((time.monotonic(), stream, chunk))

    def joined(self, stream: str) -> bytes:
        return b"".join(chunk for _, name, chunk in self.chunks if name == stream)


async def run(
    command: str,
    *,
    executor: ProcessExecutor | None = None,
    cancel: asyncio.Event | None = None,
    sink: Collector | None = None,
    **request: object,
) -> tuple[ExecOutcome, Collector]:
    sink = sink or Collector()
    executor = executor or ProcessExecutor(kill_grace=0.3)
    outcome = await executor.run(
        ExecRequest(command, SH, **request),  # type: ignore[arg-type]
        sink,
        cancel or asyncio.Event(),
    )
    return outcome, sink


def is_dead(pid: int, within: float = 2.0) -> bool:
    # Orphans are reparented to PID 1, which may not reap them in a container: a zombie is dead. A SIGKILL sent to
    # a group lands asynchronously, so a busy machine may show a member alive for a moment after the kill.
    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def read_pids(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


@pytest.fixture
def reaper():
    """Pids registered here are SIGKILLed after the test, so a failing test leaves nothing behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_output_is_streamed_while_the_command_is_still_running():
    outcome, sink = await run("echo a; sleep 0.3; echo b")
    ended = time.monotonic()

    assert outcome.status is ExecStatus.SUCCEEDED
    assert outcome.exit_code == 0
    assert outcome.error == ""
    assert outcome.stdout == b"a\nb\n"
    assert sink.joined("stdout") == b"a\nb\n"
    first_arrival, _, first_chunk = sink.chunks[0]
    assert first_chunk == b"a\n"
    assert ended - first_arrival >= 0.2, "the first chunk should arrive before the command ends"
    assert outcome.duration >= 0.3


async def test_a_non_zero_exit_code_is_a_failure_with_that_code():
    outcome, _ = await run("echo partial; exit 3")

    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code == 3
    assert outcome.error == ""
    assert outcome.stdout == b"partial\n"


async def test_stderr_is_kept_apart_from_stdout():
    outcome, sink = await run("echo out; echo err >&2")

    assert outcome.stdout == b"out\n"
    assert outcome.stderr == b"err\n"
    assert sink.joined("stdout") == b"out\n"
    assert sink.joined("stderr") == b"err\n"


async def test_env_is_merged_over_the_daemon_environment():
    outcome, _ = await run('echo "$CRC_TEST_VALUE"; echo "$PATH"', env={"CRC_TEST_VALUE": "hello"})

    value, path = outcome.stdout.decode().splitlines()
    assert value == "hello"
    assert path == os.environ["PATH"]


async def test_the_command_runs_in_the_requested_cwd(tmp_path):
    outcome, _ = await run("pwd -P", cwd=str(tmp_path))

    assert outcome.stdout.decode().strip() == os.path.realpath(tmp_path)


async def test_stdin_is_empty_so_reading_it_does_not_hang():
    outcome, _ = await run("cat; echo after", timeout=5)

    assert outcome.status is ExecStatus.SUCCEEDED
    assert outcome.stdout == b"after\n"


async def test_a_timeout_kills_the_whole_process_group(tmp_path, reaper):
    pids = tmp_path / "pids"
    # $$ is the shell we started, $! a grandchild running in the background.
    command = f"sleep 100 & echo $$ $! > {pids}; sleep 100"

    outcome, _ = await run(command, timeout=0.5)

    shell_pid, grandchild_pid = read_pids(pids)
    reaper.extend([shell_pid, grandchild_pid])
    assert outcome.status is ExecStatus.TIMED_OUT
    assert outcome.exit_code is None
    assert outcome.error == "timed out after 0.5 s"
    assert 0.5 <= outcome.duration < 3
    assert is_dead(shell_pid)
    assert is_dead(grandchild_pid)


async def test_processes_ignoring_sigterm_are_killed_after_the_grace_period(tmp_path, reaper):
    pids = tmp_path / "pids"
    # An ignored signal stays ignored in children, so the background sleep ignores SIGTERM too.
    command = f"trap '' TERM; sleep 100 & echo $$ $! > {pids}; while :; do sleep 0.05; done"
    executor = ProcessExecutor(kill_grace=0.4)

    outcome, _ = await run(command, executor=executor, timeout=1.0)

    shell_pid, grandchild_pid = read_pids(pids)
    reaper.extend([shell_pid, grandchild_pid])
    assert outcome.status is ExecStatus.TIMED_OUT
    assert outcome.duration >= 1.0 + 0.4
    assert is_dead(shell_pid)
    assert is_dead(grandchild_pid)


async def test_setting_cancel_stops_the_command(tmp_path, reaper):
    cancel = asyncio.Event()
    pids = tmp_path / "pids"

    class CancelOnFirstChunk(Collector):
        async def __call__(self, stream: str, chunk: bytes) -> None:
            await super().__call__(stream, chunk)
            cancel.set()

    outcome, _ = await run(
        f"sleep 100 & echo $$ $! > {pids}; echo started; sleep 100", cancel=cancel, sink=CancelOnFirstChunk()
    )

    reaper.extend(read_pids(pids))
    assert outcome.status is ExecStatus.CANCELLED
    assert outcome.error == "cancelled"
    assert outcome.stdout == b"started\n"
    assert outcome.duration < 3
    assert all(is_dead(pid) for pid in read_pids(pids))


async def test_cancelling_the_run_task_kills_the_process_tree(tmp_path, reaper):
    pids = tmp_path / "pids"
    task = asyncio.create_task(run(f"sleep 100 & echo $$ $! > {pids}; sleep 100"))
    for _ in range(200):
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        await asyncio.sleep(0.01)
    reaper.extend(read_pids(pids))

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert all(is_dead(pid) for pid in read_pids(pids))


async def test_long_output_keeps_only_the_tail_and_says_so():
    executor = ProcessExecutor(tail_limit=1000, kill_grace=0.3, chunk_size=512)

    outcome, sink = await run("head -c 5000 /dev/zero | tr '\\0' x; printf END", executor=executor)

    assert outcome.status is ExecStatus.SUCCEEDED
    assert len(outcome.stdout) == 1000
    assert outcome.stdout.endswith(b"xxxEND")
    assert outcome.stdout_truncated
    assert not outcome.stderr_truncated
    assert len(sink.joined("stdout")) == 5003, "the sink still sees everything"
    assert all(len(chunk) <= 512 for _, _, chunk in sink.chunks)


async def test_a_missing_cwd_is_a_clean_failure(tmp_path):
    missing = tmp_path / "nope"

    outcome, _ = await run("echo hi", cwd=str(missing))

    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code is None
    assert outcome.error == f"cwd {missing} does not exist"


async def test_a_cwd_that_is_a_file_is_a_clean_failure(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("")

    outcome, _ = await run("echo hi", cwd=str(a_file))

    assert outcome.status is ExecStatus.FAILED
    assert outcome.error == f"cwd {a_file} is not a directory"


async def test_a_missing_shell_is_a_clean_failure(tmp_path):
    shell = str(tmp_path / "no-such-shell")

    outcome = await ProcessExecutor().run(ExecRequest("echo hi", (shell, "-c")), Collector(), asyncio.Event())

    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code is None
    assert outcome.error.startswith(f"cannot start {shell}:")
    assert "No such file" in outcome.error


async def test_a_non_executable_shell_is_a_clean_failure(tmp_path):
    shell = tmp_path / "shell"
    shell.write_text("#!/bin/sh\n")
    shell.chmod(stat.S_IRUSR | stat.S_IWUSR)

    outcome = await ProcessExecutor().run(ExecRequest("echo hi", (str(shell), "-c")), Collector(), asyncio.Event())

    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code is None
    assert "Permission denied" in outcome.error


async def test_an_env_value_with_a_nul_byte_is_a_clean_failure():
    outcome, _ = await run("echo hi", env={"BAD": "a\0b"})

    assert outcome.status is ExecStatus.FAILED
    assert outcome.error.startswith("invalid request:")


async def test_death_by_signal_names_the_signal():
    outcome, _ = await run("kill -KILL $$")

    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code is None
    assert outcome.error == "killed by signal SIGKILL (9)"


async def test_a_background_process_holding_the_pipes_does_not_delay_the_result(tmp_path, reaper):
    pids = tmp_path / "pids"
    executor = ProcessExecutor(kill_grace=0.3, drain_grace=0.2)

    outcome, _ = await run(f"sleep 100 & echo $! > {pids}; echo done", executor=executor)

    reaper.extend(read_pids(pids))
    assert outcome.status is ExecStatus.SUCCEEDED
    assert outcome.stdout == b"done\n"
    assert outcome.duration < 2


async def test_a_failing_sink_stops_streaming_but_not_the_command(caplog):
    calls = []

    async def broken_sink(stream: str, chunk: bytes) -> None:
        calls.append(chunk)
        raise ConnectionError("hub went away")

    outcome = await ProcessExecutor().run(ExecRequest("echo a; sleep 0.1; echo b", SH), broken_sink, asyncio.Event())

    assert outcome.status is ExecStatus.SUCCEEDED
    assert outcome.stdout == b"a\nb\n"
    assert calls == [b"a\n"]
    assert "output sink failed" in caplog.text


async def test_secret_values_are_masked_in_live_chunks_and_in_the_kept_tail_however_the_output_is_cut():
    secret = b"s3cr3t-Pa55"
    # Tiny chunks and a tail cut inside the output: every chunk boundary and the tail's start fall anywhere.
    executor = ProcessExecutor(tail_limit=40, kill_grace=0.3, chunk_size=3)
    command = (
        'for i in 1 2 3 4 5 6; do printf "%s|" "$SECRET"; printf "%s" "$SECRET" | base64 -w0; printf "|"; done; '
        'printf "%s" "$SECRET" >&2'
    )
    outcome, sink = await run(command, executor=executor, env={"SECRET": secret.decode()}, redact=(secret,))
    assert outcome.status is ExecStatus.SUCCEEDED
    live, err = sink.joined("stdout"), sink.joined("stderr")
    assert secret not in live + err + outcome.stdout + outcome.stderr
    assert live == b"***|***|" * 6
    assert err == outcome.stderr == b"***"
    assert outcome.stdout_truncated and outcome.stdout == live[-40:]
    assert outcome.redacted == 12 + 1
