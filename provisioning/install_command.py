"""The one-liners ``crc enroll create --print-install`` prints: what an admin pastes on an existing machine, or
pushes with a software-distribution tool, to install crc-daemon and join a scenario (issue 20).

Each one downloads the installer the hub serves (``/v1/install.sh`` or ``/v1/install.ps1``), refuses it unless its
SHA-256 is that of this master's own packaged copy (``provisioning/installers``), and only then runs it with the
hub URL, the pin, the token, and the daemon build this master vouches for (``provisioning.release``: the wheel and
lock it published, by their SHA-256s, never the hub's ``index.json``). So a hub, or anyone between it and the
machine, can make an install fail but cannot make a machine run anything else.

The token is in the line (as in AWS SSM's hybrid activation one-liners) unless ``token_path`` names a file on the
machine that holds it. In the line, it is set in the environment of the installer only, never as an argument: the
Linux line runs in a subshell of the admin's shell (no new command line), the Windows one is ``powershell.exe
-EncodedCommand``, so it is on that process's command line (base64), which on Windows only its user and
administrators can read. Either way the line is as secret as the token until the token is used up or expires.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from clients.link import hub_http_url
from provisioning.installers import INSTALLERS, LINUX, WINDOWS
from provisioning.release import DaemonRelease
from provisioning.startup import ps_quote

OS_CHOICES = ("linux", "windows", "all")
TOKEN_ENV = "CRC_ENROLL_TOKEN"  # what crc-daemon enroll reads when --token is not given


class InstallCommandError(ValueError):
    """The one-liner cannot be made from these values (a pin on plain HTTP, a non-ASCII value for Windows)."""


@dataclass(frozen=True)
class InstallParams:
    """What a one-liner passes to the installer.

    Attributes:
        hub: the hub's URL as the machines reach it (http(s):// or ws(s)://).
        release: the daemon wheel and lock this master published and vouches for.
        token: the enrollment token's text, put into the line; or
        token_path: a file on the machine that holds it (then the line holds no secret).
        pin: the hub's certificate pin (``sha256:...``), for a hub with a self-signed certificate.
    """

    hub: str
    release: DaemonRelease
    token: str = ""
    token_path: str = ""
    pin: str = ""

    @property
    def hub_http(self) -> str:
        return hub_http_url(self.hub).rstrip("/")

    def check(self) -> None:
        if bool(self.token) == bool(self.token_path):
            raise InstallCommandError("give the token or the path of a file on the machine that holds it, not both")
        if self.pin and not self.hub_http.startswith("https://"):
            raise InstallCommandError(f"a hub certificate pin is given but {self.hub_http} does not use TLS")


def _arguments(params: InstallParams, flag: dict[str, str]) -> list[tuple[str, str]]:
    """The installer's arguments as (name, value), named for install.sh; ``flag`` renames them for install.ps1."""
    release = params.release
    pairs = [("--hub", params.hub_http)]
    if params.pin:
        pairs.append(("--hub-fingerprint", params.pin))
    pairs += [
        ("--wheel", release.wheel.name),
        ("--wheel-sha256", release.wheel.sha256),
        ("--lock", release.lock.name),
        ("--lock-sha256", release.lock.sha256),
    ]
    if params.token_path:
        pairs.append(("--token", "@" + params.token_path))
    return [(flag.get(name, name), value) for name, value in pairs]


def linux_command(params: InstallParams) -> str:
    """The line to run as root in a POSIX shell (sh, bash, zsh) on a Linux machine.

    A subshell, so that ``exit`` ends only it, never the admin's own shell; ``set -e``, so a failed download stops
    it with curl's own one-line error and status. ``mktemp`` makes the file 0600 under a fresh name, so no other
    local user can swap it between the check and the run. With a pin, curl is told not to verify the hub's
    certificate for this one download: its bytes are checked against this master's hash instead, and the
    installer checks the pin itself before it fetches anything else.
    """
    params.check()
    insecure = "-k " if params.pin else ""
    url = shlex.quote(f"{params.hub_http}/v1/{LINUX.name}")
    expected = LINUX.sha256()
    refused = shlex.quote(
        f"crc install: the hub's {LINUX.name} is not the one this master ships (SHA-256 {expected} expected): not run"
    )
    args = " ".join(f"{name} {shlex.quote(value)}" for name, value in _arguments(params, {}))
    token = f"{TOKEN_ENV}={shlex.quote(params.token)} " if params.token else ""
    return (
        f'(set -e; f=$(mktemp); trap \'rm -f "$f"\' EXIT; curl -fsSL {insecure}{url} -o "$f"; '
        f'if [ "$(sha256sum "$f" | cut -d" " -f1)" != {expected} ]; then echo {refused} >&2; exit 1; fi; '
        f'{token}sh "$f" {args})'
    )


PS_FLAGS = {
    "--hub": "-Hub",
    "--hub-fingerprint": "-HubFingerprint",
    "--wheel": "-Wheel",
    "--wheel-sha256": "-WheelHash",
    "--lock": "-Lock",
    "--lock-sha256": "-LockHash",
    "--token": "-Token",
}


def windows_script(params: InstallParams) -> str:
    """The PowerShell the Windows line runs (encoded): fetch install.ps1, check it, run it, pass its exit code on.

    The bytes are hashed as downloaded (``WebClient.DownloadData``), written to a fresh file in the user's temp
    folder, and run from there (``& FILE``), so ``exit N`` in the installer becomes ``$LASTEXITCODE``
    (about_Automatic_Variables, https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_automatic_variables);
    the ``finally`` block deletes the file even after ``exit`` (about_Try_Catch_Finally: "a Finally block also
    runs if an Exit keyword stops the script", https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_try_catch_finally).
    With a pin, certificate checks are off for this one download only (the hash decides) and back on before the
    installer runs, which then accepts only the pinned certificate.
    """
    params.check()
    values = [params.hub_http, params.pin, params.token, params.token_path]
    if not all(value.isascii() for value in values):
        raise InstallCommandError("the hub URL, pin and token must be ASCII for Windows PowerShell 5.1")
    url = ps_quote(f"{params.hub_http}/v1/{WINDOWS.name}")
    expected = WINDOWS.sha256()
    args = " ".join(f"{name} {ps_quote(value)}" for name, value in _arguments(params, PS_FLAGS))
    lines = [
        "$ErrorActionPreference = 'Stop'",
        "[Net.ServicePointManager]::SecurityProtocol = [Net.ServicePointManager]::SecurityProtocol -bor "
        "[Net.SecurityProtocolType]::Tls12",
    ]
    if params.pin:
        lines.append("[Net.ServicePointManager]::ServerCertificateValidationCallback = { $true }")
    lines += [
        "$f = Join-Path ([IO.Path]::GetTempPath()) ('crc-install-' + [Guid]::NewGuid().ToString('N') + '.ps1')",
        "try {",
        f"    try {{ $b = (New-Object Net.WebClient).DownloadData({url}) }} catch {{",
        f"        [Console]::Error.WriteLine('crc install: cannot download ' + {url} + ': ' + $_.Exception.Message)",
        "        exit 1",
        "    }",
        "    $d = [Security.Cryptography.SHA256]::Create().ComputeHash($b)",
        "    $h = -join ($d | ForEach-Object { $_.ToString('x2') })",
        f"    if ($h -ne '{expected}') {{",
        f"        [Console]::Error.WriteLine(\"crc install: the hub's {WINDOWS.name} is not the one this master ships "
        f'(SHA-256 {expected} expected): not run")',
        "        exit 1",
        "    }",
    ]
    if params.pin:
        lines.append("    [Net.ServicePointManager]::ServerCertificateValidationCallback = $null")
    lines.append("    [IO.File]::WriteAllBytes($f, $b)")
    if params.token:
        lines.append(f"    $env:{TOKEN_ENV} = {ps_quote(params.token)}")
    lines += [
        f"    & $f {args}",
        "    exit $LASTEXITCODE",
        "} finally {",
        "    Remove-Item -LiteralPath $f -Force -ErrorAction SilentlyContinue",
        "}",
    ]
    return "\n".join(lines) + "\n"


def windows_command(params: InstallParams) -> str:
    """The line to run elevated on a Windows machine, from cmd.exe, PowerShell or a distribution tool.

    ``-EncodedCommand`` (base64 of UTF-16LE) so neither cmd.exe nor a calling PowerShell re-reads any quote or
    ``$`` in it (about_PowerShell_exe, https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_powershell_exe);
    it stays far below cmd.exe's 8,191-character line limit
    (https://learn.microsoft.com/troubleshoot/windows-client/shell-experience/command-line-string-limitation).
    """
    encoded = base64.b64encode(windows_script(params).encode("utf-16-le")).decode("ascii")
    return f"powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -EncodedCommand {encoded}"


def install_commands(params: InstallParams, os_name: str) -> dict[str, str]:
    """The one-liner for each OS asked (``linux``, ``windows`` or ``all``), by OS.

    Raises:
        InstallCommandError: not a line that can be made from these values.
    """
    wanted = list(INSTALLERS) if os_name == "all" else [os_name]
    makers = {LINUX.os: linux_command, WINDOWS.os: windows_command}
    if any(name not in makers for name in wanted):
        raise InstallCommandError(f"no installer for os {os_name!r} (linux, windows or all)")
    return {name: makers[name](params) for name in wanted}
