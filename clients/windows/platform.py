"""Windows defaults for the crc daemon and its executor factory."""

from __future__ import annotations

from pathlib import Path

from clients.daemon.executor import Executor
from clients.daemon.platform import PlatformDefaults
from clients.windows.executor import DEFAULT_POWERSHELL, PowerShellExecutor
from clients.windows.paths import windows_paths

__all__ = ["WINDOWS", "make_executor"]


def _windows_defaults() -> PlatformDefaults:
    # Resolved as Windows paths so the result is right even when this module is imported on
    # another system (tests, tooling); on Windows Path(str(...)) is the same WindowsPath.
    paths = windows_paths()
    return PlatformDefaults(
        name="windows",
        # Documents the interpreter; PowerShellExecutor takes shell[0] and runs the command as -EncodedCommand.
        shell=(DEFAULT_POWERSHELL, "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command"),
        state_dir=Path(str(paths.state_dir)),
        hosts_file=Path(str(paths.hosts_file)),
        config_file=Path(str(paths.config_file)),
        newline="\r\n",
    )


WINDOWS = _windows_defaults()


def make_executor(executable: str | None = None) -> Executor:
    """The executor for Windows: PowerShell (``powershell.exe``, or e.g. ``pwsh``) with job-object kills; scripts
    too long for a command line go through files in the state dir (SYSTEM and Administrators only)."""
    return PowerShellExecutor(executable, script_dir=WINDOWS.state_dir / "scripts")
