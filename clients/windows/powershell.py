"""Building PowerShell command lines that no quoting can break, and decoding what PowerShell prints.

The user's script travels as ``-EncodedCommand`` (base64 of UTF-16LE), the only form that
``powershell.exe`` and ``pwsh`` take byte for byte whatever quotes, ``$``, backticks or newlines it
holds. Inside, :func:`wrap_script` carries the user's text as base64 of UTF-8 too, so the wrapper
always parses, and a syntax error in the user's script is reported like any other failure.
"""

from __future__ import annotations

import base64
import codecs
from typing import Any

__all__ = [
    "MAX_COMMAND_LINE",
    "POWERSHELL_FLAGS",
    "current_oem_codepage",
    "decode_encoded_command",
    "decode_output",
    "encode_command",
    "powershell_argv",
    "quote_literal",
    "wrap_script",
]

POWERSHELL_FLAGS = ("-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-EncodedCommand")
MAX_COMMAND_LINE = 32767
"""CreateProcess refuses longer command lines (in characters, including the terminating NUL)."""

_WRAPPER = """\
$ProgressPreference = 'SilentlyContinue'
$crcUtf8 = [System.Text.UTF8Encoding]::new($false)
[Console]::OutputEncoding = $crcUtf8
$OutputEncoding = $crcUtf8
$ErrorActionPreference = 'Stop'
$global:LASTEXITCODE = $null
try {
    $crcScript = $crcUtf8.GetString([System.Convert]::FromBase64String('__SCRIPT__'))
    . ([System.Management.Automation.ScriptBlock]::Create($crcScript))
} catch {
    [Console]::Error.WriteLine(($_ | Out-String).Trim())
    exit 1
}
if ($null -eq $LASTEXITCODE -or $LASTEXITCODE -is [bool]) {
    exit 0
}
exit $LASTEXITCODE
"""


def quote_literal(text: str) -> str:
    """``text`` as a PowerShell single-quoted string literal (nothing inside is expanded)."""
    # PowerShell also takes the typographic single quotes as quote characters: double them all.
    for quote in ("'", "\u2018", "\u2019", "\u201a", "\u201b"):
        text = text.replace(quote, quote * 2)
    return f"'{text}'"


def encode_command(script: str) -> str:
    """The ``-EncodedCommand`` form of ``script``: base64 of its UTF-16LE bytes."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def decode_encoded_command(b64: str) -> str:
    """The inverse of :func:`encode_command`."""
    return base64.b64decode(b64, validate=True).decode("utf-16-le")


def wrap_script(user_script: str) -> str:
    """PowerShell that runs ``user_script`` with UTF-8 output and a well-defined exit code.

    ``$ErrorActionPreference`` is ``Stop``; a terminating error (including a syntax error in the
    script) is written to stderr and exits 1. Otherwise the exit code is ``$LASTEXITCODE`` of the
    last native program the script ran, or 0 when it ran none. ``exit N`` in the script still
    ends the process with N.
    """
    payload = base64.b64encode(user_script.encode("utf-8")).decode("ascii")
    return _WRAPPER.replace("__SCRIPT__", payload)


def powershell_argv(executable: str, script: str) -> list[str]:
    """The argv that runs ``script`` (wrapped by :func:`wrap_script`) with ``executable``.

    Raises ``ValueError`` when the command line would be longer than Windows allows.
    """
    argv = [executable, *POWERSHELL_FLAGS, encode_command(wrap_script(script))]
    length = sum(len(arg) + 3 for arg in argv)  # a separator and, at worst, quotes around each
    if length >= MAX_COMMAND_LINE:
        raise ValueError(
            f"the PowerShell script is too long for a Windows command line ({len(script)} characters encode "
            f"to about {length}; the limit is {MAX_COMMAND_LINE})"
        )
    return argv


def decode_output(data: bytes, oem_codepage: int | None) -> str:
    """Text of PowerShell or native-program output: UTF-8 first, else the console's OEM code page.

    A leading UTF-8 byte-order mark is dropped. Without a usable code page, undecodable bytes
    become U+FFFD rather than raising.
    """
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if oem_codepage is not None:
        try:
            return data.decode(f"cp{oem_codepage}")
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("utf-8", "replace")


def current_oem_codepage() -> int | None:
    """The console's OEM code page on Windows (e.g. 437, 850, 866); ``None`` elsewhere."""
    from clients.windows._pywin32 import is_windows

    if not is_windows():
        return None
    import ctypes

    windll: Any = getattr(ctypes, "windll")  # noqa: B009 - only on Windows; typeshed hides it elsewhere
    return int(windll.kernel32.GetOEMCP()) or None
