"""Windows adapter for the crc daemon: PowerShell executor, paths and ACLs, facts, and the Windows service.

The shared daemon core lives in :mod:`clients.daemon`; this package holds only what differs on Windows.
pywin32 is imported lazily, so every module here imports (and most of it is tested) on any system.
"""

from clients.windows._pywin32 import WindowsOnly
from clients.windows.platform import WINDOWS, make_executor

__all__ = ["WINDOWS", "WindowsOnly", "make_executor"]
