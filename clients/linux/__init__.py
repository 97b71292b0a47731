"""Linux adapter for the crc daemon: platform defaults, executor factory and the systemd unit."""

from clients.linux.platform import LINUX, make_executor

__all__ = ["LINUX", "make_executor"]
