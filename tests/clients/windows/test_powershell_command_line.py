"""Building the PowerShell command line: flags, -EncodedCommand and the wrapper around the user's script."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.windows.powershell import (
    MAX_COMMAND_LINE,
    decode_encoded_command,
    encode_command,
    powershell_argv,
    wrap_script,
)

AWKWARD_SCRIPTS = [
    "Write-Output 'single' \"double\"",
    'Write-Output "it\'s $env:COMPUTERNAME and `$not-a-var"',
    "Write-Output `\n  continued",
    "$x = @'\nhere '@ string\n'@\n$x",
    "Get-ChildItem C:\\ | Select-Object -First 3\r\nexit 3",
    "Write-Output 'grüße, привет, 日本語, 🎉'",
    "} catch { 'escape attempt' } try {",
    "",
]


def embedded_user_script(wrapper: str) -> str:
    payload = re.search(r"FromBase64String\('([A-Za-z0-9+/=]*)'\)", wrapper)
    assert payload is not None
    return base64.b64decode(payload.group(1)).decode("utf-8")


@pytest.mark.parametrize("script", AWKWARD_SCRIPTS)
def test_encoding_round_trips_quotes_dollars_backticks_newlines_and_non_ascii(script: str) -> None:
    assert decode_encoded_command(encode_command(script)) == script


@given(st.text())
def test_encoding_round_trips_any_text(script: str) -> None:
    assert decode_encoded_command(encode_command(script)) == script


def test_the_encoded_command_is_base64_of_utf16le() -> None:
    assert encode_command("dir") == base64.b64encode("dir".encode("utf-16-le")).decode()
    assert encode_command("dir") == "ZABpAHIA"


@pytest.mark.parametrize("script", AWKWARD_SCRIPTS)
def test_the_wrapper_carries_the_user_script_unchanged(script: str) -> None:
    assert embedded_user_script(wrap_script(script)) == script


@pytest.mark.parametrize("script", AWKWARD_SCRIPTS)
def test_the_wrapper_is_plain_ascii_whatever_the_script_holds(script: str) -> None:
    assert wrap_script(script).isascii()


def test_the_wrapper_sets_utf8_output_stops_on_errors_and_maps_the_exit_code() -> None:
    wrapper = wrap_script("hostname")
    assert "[Console]::OutputEncoding = $crcUtf8" in wrapper
    assert "$OutputEncoding = $crcUtf8" in wrapper
    assert "$ErrorActionPreference = 'Stop'" in wrapper
    assert "[Console]::Error.WriteLine(" in wrapper
    assert "exit 1" in wrapper
    assert wrapper.rstrip().endswith("exit $LASTEXITCODE")


@pytest.mark.parametrize("executable", ["powershell.exe", "pwsh", r"C:\Program Files\PowerShell\7\pwsh.exe"])
def test_the_command_line_runs_the_encoded_wrapper_without_profile_or_prompts(executable: str) -> None:
    argv = powershell_argv(executable, "Write-Output 'hi'")
    assert argv[:-1] == [
        executable,
        "-NoProfile",
        "-NonInteractive",
        "-ExecutionPolicy",
        "Bypass",
        "-EncodedCommand",
    ]
    assert decode_encoded_command(argv[-1]) == wrap_script("Write-Output 'hi'")


@pytest.mark.parametrize("script", AWKWARD_SCRIPTS)
def test_the_encoded_argument_needs_no_quoting(script: str) -> None:
    assert re.fullmatch(r"[A-Za-z0-9+/=]+", powershell_argv("pwsh", script)[-1])


def test_a_script_too_long_for_a_windows_command_line_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too long for a Windows command line"):
        powershell_argv("powershell.exe", "x" * MAX_COMMAND_LINE)


def test_a_few_kilobytes_of_script_still_fit() -> None:
    assert len(" ".join(powershell_argv("powershell.exe", "Write-Output 1\n" * 400))) < MAX_COMMAND_LINE
