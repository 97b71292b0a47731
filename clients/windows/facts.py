"""Windows-only facts: edition, version and build, and the domain or workgroup the machine belongs to.

Nothing here runs a program (no ``wmic``); everything comes from the ``platform`` module, the
environment and ``NetGetJoinInformation``. Off Windows :func:`windows_facts` returns ``{}``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping
from typing import Any

from clients.windows._pywin32 import is_windows

__all__ = ["describe_join", "windows_facts"]

log = logging.getLogger(__name__)

# NETSETUP_JOIN_STATUS
_JOIN_STATES = {0: "unknown", 1: "unjoined", 2: "workgroup", 3: "domain"}


def windows_facts() -> dict[str, Any]:
    """``{"windows": {...}}`` on Windows, ``{}`` elsewhere; a fact that cannot be read is ``None``."""
    if not is_windows():
        return {}
    release, version, service_pack, product_type = platform.win32_ver()
    build = version.rsplit(".", 1)[-1] if version else None
    return {
        "windows": {
            "edition": platform.win32_edition() or None,
            "release": release or None,
            "version": version or None,
            "build": int(build) if build and build.isdigit() else None,
            "service_pack": service_pack or None,
            "product_type": product_type or None,
            **_join_information(),
        }
    }


def describe_join(status: int | None, name: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    """The ``join`` kind (domain, workgroup, ...) and its ``domain`` or ``workgroup`` name.

    ``status`` and ``name`` come from ``NetGetJoinInformation`` (``None`` when it failed); then the
    environment's ``USERDNSDOMAIN`` / ``USERDOMAIN`` are the best remaining guess.
    """
    if status is None:
        dns_domain = env.get("USERDNSDOMAIN")
        if dns_domain:
            return {"join": "domain", "domain": dns_domain, "workgroup": None}
        return {"join": "unknown", "domain": env.get("USERDOMAIN") or None, "workgroup": None}
    kind = _JOIN_STATES.get(status, "unknown")
    return {
        "join": kind,
        "domain": (env.get("USERDNSDOMAIN") or name) if kind == "domain" else None,
        "workgroup": name if kind == "workgroup" else None,
    }


def _join_information() -> dict[str, Any]:
    status: int | None = None
    name: str | None = None
    try:
        status, name = _net_get_join_information()
    except Exception:
        log.debug("NetGetJoinInformation failed", exc_info=True)
    return describe_join(status, name, os.environ)


def _net_get_join_information() -> tuple[int, str | None]:
    windll: Any = getattr(ctypes, "windll")  # noqa: B009 - only on Windows; typeshed hides it elsewhere
    netapi32 = windll.netapi32
    buffer = ctypes.c_wchar_p()
    status = ctypes.c_int()
    error = netapi32.NetGetJoinInformation(None, ctypes.byref(buffer), ctypes.byref(status))
    if error != 0:
        raise OSError(error, "NetGetJoinInformation failed")
    try:
        return status.value, buffer.value
    finally:
        netapi32.NetApiBufferFree(buffer)
