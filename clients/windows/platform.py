"""Windows defaults for the crc daemon.

Only the defaults live here for now; the real Windows work (an executor using job objects, the
service wrapper, hosts-file specifics) is a later issue.
"""

from __future__ import annotations

import os
from pathlib import Path, PureWindowsPath

from clients.daemon.executor import Executor
from clients.daemon.platform import PlatformDefaults

__all__ = ["WINDOWS", "make_executor"]


def _windows_defaults() -> PlatformDefaults:
    # Joined as Windows paths so the result is right even when this module is imported on
    # another system (tests, tooling); on Windows Path(str(...)) is the same WindowsPath.
    program_data = PureWindowsPath(os.environ.get("PROGRAMDATA") or r"C:\ProgramData")
    system_root = PureWindowsPath(os.environ.get("SYSTEMROOT") or r"C:\Windows")
    return PlatformDefaults(
        name="windows",
        shell=("powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass", "-Command"),
        state_dir=Path(str(program_data / "crc" / "state")),
        hosts_file=Path(str(system_root / "System32" / "drivers" / "etc" / "hosts")),
        config_file=Path(str(program_data / "crc" / "daemon.toml")),
        newline="\r\n",
    )


WINDOWS = _windows_defaults()


def make_executor() -> Executor:
    """Not available yet: the POSIX executor's process-group handling does not work on Windows."""
    raise NotImplementedError("the Windows executor is not implemented yet")
