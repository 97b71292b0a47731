"""Per-operating-system defaults for the daemon (shell, paths, line endings)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clients.daemon.executor import Executor

__all__ = ["PlatformDefaults", "current_platform", "platform_executor"]


@dataclass(frozen=True)
class PlatformDefaults:
    """Where things live and how commands are run on one operating-system family."""

    name: str
    shell: tuple[str, ...]
    """argv prefix that runs a command string, e.g. ``("/bin/sh", "-c")``."""
    state_dir: Path
    """Directory for the journal and other durable daemon state."""
    hosts_file: Path
    config_file: Path
    newline: str
    """Line ending for files the daemon writes (such as the hosts file)."""


def current_platform() -> PlatformDefaults:
    """The defaults for the system we are running on (Linux defaults also serve macOS and other POSIX)."""
    # Imported lazily: the adapters import this module for PlatformDefaults.
    if sys.platform == "win32":
        from clients.windows.platform import WINDOWS

        return WINDOWS
    from clients.linux.platform import LINUX

    return LINUX


def platform_executor() -> Executor:
    """The command executor of the system we are running on (/bin/sh here, PowerShell on Windows)."""
    if sys.platform == "win32":
        from clients.windows.platform import make_executor as windows_executor

        return windows_executor()
    from clients.linux.platform import make_executor as posix_executor

    return posix_executor()
