"""Lazy access to pywin32, so the Windows adapter can be imported (and mostly tested) on any system."""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["WindowsOnly", "is_windows", "load"]


class WindowsOnly(RuntimeError):
    """Raised when something that needs Windows (and pywin32) is used on another system."""


def is_windows() -> bool:
    return sys.platform == "win32"


def load(module: str) -> Any:
    """Import a pywin32 module (``win32job``, ``win32security``, ...) or raise :class:`WindowsOnly`.

    Returned as ``Any``: pywin32 ships no type stubs here, and this keeps mypy clean everywhere.
    """
    if not is_windows():
        raise WindowsOnly(f"{module} is only available on Windows (this is {sys.platform})")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise WindowsOnly(f"{module} is missing: install pywin32 (pip install 'pywin32>=306')") from exc
