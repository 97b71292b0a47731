"""Render a machine's startup script: the Linux bash one, or the Windows boot file (cmd.exe and PowerShell).

The templates live in ``provisioning/scripts/``; rendering fills in the settings block (hub URL, machine id,
report key, the daemon wheel to fetch and its SHA-256) and the daemon's config (with the private key). Every
value is quoted for its language here, and checked so that no value can end a heredoc or a here-string early.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources

from clients.daemon.config import DaemonConfig, render_config
from clients.link import hub_http_url
from protocol.boot import report_key

WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]+\.whl$")
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class RenderError(ValueError):
    """A value cannot be placed in a startup script safely."""


@dataclass(frozen=True)
class WheelRef:
    """The daemon wheel a machine installs: its file name under ``HUB/v1/dist/`` and its SHA-256 (hex)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not WHEEL_NAME.match(self.name):
            raise RenderError(f"{self.name!r} is not a wheel file name")
        if not SHA256_HEX.match(self.sha256):
            raise RenderError("a wheel's SHA-256 is 64 lower-case hex digits")


LOCK_NAME = re.compile(r"^crc-runtime-[0-9a-f]{16}\.lock$")


@dataclass(frozen=True)
class LockRef:
    """The dependency lock a machine installs with (``--require-hashes``): its name under ``HUB/v1/dist/`` and
    SHA-256. ``LockRef.local()`` is this master's own ``provisioning/runtime.lock``."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not LOCK_NAME.match(self.name):
            raise RenderError(f"{self.name!r} is not a runtime lock name")
        if not SHA256_HEX.match(self.sha256):
            raise RenderError("a lock's SHA-256 is 64 lower-case hex digits")

    @staticmethod
    def local_text() -> bytes:
        return resources.files("provisioning").joinpath("runtime.lock").read_bytes()

    @classmethod
    def local(cls) -> LockRef:
        digest = hashlib.sha256(cls.local_text()).hexdigest()
        return cls(f"crc-runtime-{digest[:16]}.lock", digest)


@dataclass(frozen=True)
class StartupParams:
    """What one machine's startup script needs.

    Attributes:
        config: the daemon config to install (hub URL, machine, private key, master key, hub pin).
        wheel: the daemon wheel to fetch from the hub.
        lock: the dependency lock (versions and hashes) to install the wheel's dependencies with.
        hub_ca_pem: the hub's certificate, when it is self-signed, so downloads and reports can verify it.
    """

    config: DaemonConfig
    wheel: WheelRef
    hub_ca_pem: str = ""
    lock: LockRef = field(default_factory=LockRef.local)

    @property
    def hub_http(self) -> str:
        """The hub's HTTP(S) base URL (the config may name it ws:// or wss://)."""
        return hub_http_url(self.config.hub)


def _template(name: str) -> str:
    return resources.files("provisioning").joinpath("scripts", name).read_text(encoding="utf-8")


def _unit_text() -> str:
    return resources.files("clients.linux").joinpath("crc-daemon.service").read_text(encoding="utf-8")


def _check_block(text: str, terminator: str) -> str:
    if any(line.strip() == terminator for line in text.splitlines()):
        raise RenderError(f"a value contains the line {terminator!r}, which would end its block early")
    return text.rstrip("\n")


def render_linux(params: StartupParams) -> str:
    """The bash startup script for a Linux machine (a Vultr boot script or cloud-init user-data)."""
    settings = {
        "CRC_HUB_HTTP": params.hub_http,
        "CRC_MACHINE_ID": params.config.machine_id,
        "CRC_MACHINE_NAME": params.config.machine_name,
        "CRC_SCENARIO": params.config.scenario,
        "CRC_REPORT_KEY": report_key(params.config.identity).hex(),
        "CRC_WHEEL": params.wheel.name,
        "CRC_WHEEL_SHA256": params.wheel.sha256,
        "CRC_LOCK": params.lock.name,
        "CRC_LOCK_SHA256": params.lock.sha256,
        "CRC_HUB_CA_PEM": params.hub_ca_pem.strip(),
    }
    block = "\n".join(f"{key}={shlex.quote(value)}" for key, value in settings.items())
    script = _template("linux.sh")
    script = script.replace("@@SETTINGS@@", "# --- rendered by crc for this machine ---\n" + block)
    script = script.replace("@@CONFIG@@", _check_block(render_config(params.config), "CRC_CONFIG_END"))
    return script.replace("@@UNIT@@", _check_block(_unit_text(), "CRC_UNIT_END"))


# PowerShell ends a single-quoted string at any of these (its tokenizer's IsSingleQuote), not only at "'".
PS_SINGLE_QUOTES = ("'", "\u2018", "\u2019", "\u201a", "\u201b")
# The template's settings line: a comment, so the unrendered template is valid PowerShell too.
PS_SETTINGS_LINE = re.compile(r"^(?:# )?@@SETTINGS@@[ \t]*$", re.M)


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted string (each kind of quote is doubled; nothing inside is expanded)."""
    for quote in PS_SINGLE_QUOTES:
        value = value.replace(quote, quote + quote)
    return "'" + value + "'"


# Where Vultr saves a Windows boot script, and runs it from with cmd.exe ("Startup Scripts Quickstart Guide",
# https://www.vultr.com/docs/vultr-startup-scripts-quickstart-guide); its output goes to WINDOWS_BOOT_LOG.
WINDOWS_BOOT_FILE = "C:\\image\\firstboot.cmd"
WINDOWS_BOOT_LOG = "C:\\image\\firstboot.log"
# The first line cmd.exe reads: a label to it, the start of a block comment to PowerShell (see windows.ps1).
WINDOWS_BOOT_FIRST_LINE = "<# : crc boot file for Windows"


def render_windows(params: StartupParams) -> str:
    """The Windows boot file: what Vultr saves as ``C:\\image\\firstboot.cmd`` and runs with cmd.exe.

    One file, two languages (``windows.ps1``): cmd.exe runs its first lines, which copy the file to a ``.ps1``
    beside it and run that with Windows PowerShell 5.1 (``-NoProfile -ExecutionPolicy Bypass -File``), and
    PowerShell reads those lines as a comment and runs the installer below them. So what PowerShell is handed is
    exactly this text, whatever its size, and no secret is on a command line.

    CRLF throughout: cmd.exe reads batch files a line at a time and mis-finds lines and labels in LF-only files.
    ASCII only: PowerShell 5.1 reads a BOM-less ``.ps1`` in the ANSI code page and cmd.exe in the OEM one, and a
    BOM would be the first thing cmd.exe runs; every value crc renders is ASCII, anything else is refused.
    """
    settings = {
        "CrcHubHttp": params.hub_http,
        "CrcMachineId": params.config.machine_id,
        "CrcMachineName": params.config.machine_name,
        "CrcScenario": params.config.scenario,
        "CrcReportKey": report_key(params.config.identity).hex(),
        "CrcWheel": params.wheel.name,
        "CrcWheelSha256": params.wheel.sha256,
        "CrcLock": params.lock.name,
        "CrcLockSha256": params.lock.sha256,
        "CrcHubCaPem": params.hub_ca_pem.strip(),
        "CrcConfig": render_config(params.config),
    }
    for key, value in settings.items():
        if not value.isascii():
            raise RenderError(f"${key} holds non-ASCII text, which Windows PowerShell 5.1 would misread")
    block = "\n".join(f"${key} = {ps_quote(value)}" for key, value in settings.items())
    rendered = "# --- rendered by crc for this machine ---\n" + block
    script, count = PS_SETTINGS_LINE.subn(lambda _: rendered, _template("windows.ps1"))
    if count != 1:
        raise RenderError(f"windows.ps1 must have exactly one @@SETTINGS@@ line, not {count}")
    if not script.startswith(WINDOWS_BOOT_FIRST_LINE):
        raise RenderError(f"windows.ps1 must start with {WINDOWS_BOOT_FIRST_LINE!r}, the line cmd.exe skips")
    if not script.isascii():
        raise RenderError("windows.ps1 holds non-ASCII text, which Windows PowerShell 5.1 would misread")
    return script.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def render(params: StartupParams, os_name: str) -> str:
    """What is uploaded for a machine of ``linux`` (a bash script) or ``windows`` (a cmd.exe boot file)."""
    if os_name == "linux":
        return render_linux(params)
    if os_name == "windows":
        return render_windows(params)
    raise RenderError(f"no startup script for os {os_name!r}")
