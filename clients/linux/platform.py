"""Linux defaults and the Linux command executor."""

from __future__ import annotations

from pathlib import Path

from clients.daemon.executor import Executor, ProcessExecutor
from clients.daemon.platform import PlatformDefaults

__all__ = ["LINUX", "make_executor"]

LINUX = PlatformDefaults(
    name="linux",
    shell=("/bin/sh", "-c"),
    state_dir=Path("/var/lib/crc"),  # matches StateDirectory=crc in crc-daemon.service
    hosts_file=Path("/etc/hosts"),
    config_file=Path("/etc/crc/daemon.toml"),
    newline="\n",
)


def make_executor() -> Executor:
    """The executor for Linux: child processes in their own session, killed as a whole group."""
    return ProcessExecutor()
