"""PowerShellExecutor: its command line, and (where pwsh exists) running real PowerShell through it."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from clients.daemon.executor import ExecOutcome, ExecRequest, ExecStatus, ProcessExecutor
from clients.windows import WINDOWS, make_executor
from clients.windows.executor import PowerShellExecutor
from clients.windows.powershell import decode_encoded_command, powershell_argv, quote_literal, wrap_script

PWSH = shutil.which("pwsh")
needs_pwsh = pytest.mark.skipif(PWSH is None, reason="pwsh (PowerShell 7) is not on PATH here")
off_windows = pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX stand-in for PowerShell")


async def run(executor: ProcessExecutor, command: str, shell: tuple[str, ...], **request: object) -> ExecOutcome:
    chunks: list[tuple[str, bytes]] = []

    async def sink(stream: str, chunk: bytes) -> None:
        chunks.append((stream, chunk))

    outcome = await executor.run(ExecRequest(command, shell, **request), sink, asyncio.Event())  # type: ignore[arg-type]
    return outcome


def test_the_windows_executor_is_a_powershell_process_executor_constructible_anywhere() -> None:
    executor = make_executor()
    assert isinstance(executor, PowerShellExecutor)
    assert isinstance(executor, ProcessExecutor)


def test_the_platform_shell_picks_windows_powershell_by_default() -> None:
    argv = PowerShellExecutor().argv(ExecRequest("Get-Date", WINDOWS.shell))
    assert argv == powershell_argv("powershell.exe", "Get-Date")


def test_a_configured_executable_such_as_pwsh_wins_over_the_request_shell() -> None:
    argv = make_executor("pwsh").argv(ExecRequest("Get-Date", WINDOWS.shell))  # type: ignore[attr-defined]
    assert argv[0] == "pwsh"
    assert decode_encoded_command(argv[-1]) == wrap_script("Get-Date")


@off_windows
async def test_the_child_receives_exactly_the_encoded_command_line(tmp_path: Path) -> None:
    # A stand-in "PowerShell" that prints the argv it was given, so spawning is checked without PowerShell.
    fake = tmp_path / "fake-pwsh"
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    script = "Write-Output \"it's $HOME `n 'quoted'\"\nexit 3"

    outcome = await run(PowerShellExecutor(str(fake)), script, WINDOWS.shell)

    assert outcome.status is ExecStatus.SUCCEEDED, outcome.error
    assert json.loads(outcome.stdout) == powershell_argv(str(fake), script)[1:]


@off_windows
async def test_a_script_too_long_for_a_command_line_runs_from_a_private_file_removed_afterwards(
    tmp_path: Path,
) -> None:
    # The stand-in "PowerShell" decodes the command line it got, follows the wrapper to the script file and
    # prints what it finds there: the whole script, as written, in a file only its owner can read.
    fake = tmp_path / "fake-pwsh"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import base64, json, os, re, stat, sys\n"
        "wrapper = base64.b64decode(sys.argv[-1]).decode('utf-16-le')\n"
        "inner = base64.b64decode(re.search(r\"FromBase64String\\('([^']*)'\\)\", wrapper)[1]).decode()\n"
        "path = re.fullmatch(r\"\\. '(.*)'\", inner)[1]\n"
        "data = open(path, 'rb').read()\n"
        "mode = stat.S_IMODE(os.stat(path).st_mode)\n"
        "print(json.dumps({'path': path, 'mode': mode, 'bom': data[:3].hex(), 'script': data[3:].decode()}))\n"
    )
    fake.chmod(0o755)
    scripts = tmp_path / "scripts"
    script = "Write-Output 'grüße'\n" + "# filler\n" * 5000  # far over 32,767 characters once encoded

    outcome = await run(PowerShellExecutor(str(fake), script_dir=scripts), script, WINDOWS.shell)

    assert outcome.status is ExecStatus.SUCCEEDED, outcome.error
    seen = json.loads(outcome.stdout)
    assert seen["script"] == script and seen["bom"] == "efbbbf" and seen["mode"] & 0o077 == 0
    assert Path(seen["path"]).parent == scripts
    assert list(scripts.iterdir()) == []  # gone once the command ended


def test_typographic_and_plain_single_quotes_cannot_end_a_literal() -> None:
    assert quote_literal("C:\\crc\\it's") == "'C:\\crc\\it''s'"
    assert quote_literal("a\u2019b") == "'a\u2019\u2019b'"


async def test_a_missing_powershell_is_reported_not_raised() -> None:
    outcome = await run(PowerShellExecutor("no-such-powershell-here"), "Get-Date", WINDOWS.shell)
    assert outcome.status is ExecStatus.FAILED
    assert "cannot start no-such-powershell-here" in outcome.error


@needs_pwsh
async def test_pwsh_runs_a_script_with_utf8_output_and_its_exit_code() -> None:
    outcome = await run(PowerShellExecutor(PWSH), "Write-Output \"grüße 'q' `$x\"; cmd-that-is-not-there", ())
    assert outcome.status is ExecStatus.FAILED
    assert outcome.exit_code == 1
    assert "grüße 'q' $x" in outcome.stdout.decode("utf-8")
    assert b"cmd-that-is-not-there" in outcome.stderr


@needs_pwsh
async def test_pwsh_reports_exit_codes_and_success() -> None:
    assert (await run(PowerShellExecutor(PWSH), "exit 7", ())).exit_code == 7
    assert (await run(PowerShellExecutor(PWSH), "Write-Output ok", ())).status is ExecStatus.SUCCEEDED


@needs_pwsh
async def test_pwsh_is_killed_on_timeout() -> None:
    outcome = await run(PowerShellExecutor(PWSH, kill_grace=0.3), "Start-Sleep -Seconds 30", (), timeout=3.0)
    assert outcome.status is ExecStatus.TIMED_OUT
