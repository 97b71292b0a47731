"""Per-operating-system defaults for the daemon (shell, paths, line endings)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PlatformDefaults", "current_platform"]


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
