"""What the daemon tells the hub about its machine when it connects."""

from __future__ import annotations

import ipaddress
import logging
import platform
import socket
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import psutil

__all__ = ["collect_facts"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def collect_facts(daemon_version: str) -> dict[str, Any]:
    """Describe this machine using only msgpack-serialisable plain types.

    Never raises: a fact that cannot be determined is ``None`` (or, inside lists, left out).
    """
    logical_cpus = _safe("cpus.logical", lambda: psutil.cpu_count(logical=True))
    physical_cpus = _safe("cpus.physical", lambda: psutil.cpu_count(logical=False))
    memory = _safe("memory", psutil.virtual_memory)
    interfaces = _safe("interfaces", _interfaces)
    facts: dict[str, Any] = {
        "hostname": _safe("hostname", socket.gethostname),
        "fqdn": _safe("fqdn", socket.getfqdn),
        "os": _safe("os", platform.system),
        "os_release": _safe("os_release", _os_release),
        "kernel": _safe("kernel", platform.release),
        "arch": _safe("arch", platform.machine),
        "python": _safe("python", platform.python_version),
        "cpus": {"logical": logical_cpus, "physical": physical_cpus},
        "memory_total": int(memory.total) if memory is not None else None,
        "memory_available": int(memory.available) if memory is not None else None,
        "disks": _safe("disks", _disks),
        "ips": _non_loopback(interfaces) if interfaces is not None else None,
        "interfaces": interfaces,
        "boot_time": _safe("boot_time", psutil.boot_time),
        "daemon_version": daemon_version,
    }
    if sys.platform == "win32":
        facts.update(_safe("windows", _windows_facts) or {})
    return facts


def _safe(name: str, fn: Callable[[], T]) -> T | None:
    try:
        return fn()
    except Exception:
        # One unreadable fact (odd container, missing /proc entry) must not cost all the others.
        log.debug("could not determine fact %s", name, exc_info=True)
        return None


def _windows_facts() -> dict[str, Any]:
    """Edition, build and domain or workgroup (clients/windows/facts.py); imported only on Windows."""
    from clients.windows.facts import windows_facts

    return windows_facts()


def _os_release() -> str | None:
    """PRETTY_NAME from os-release on Linux; the platform string elsewhere."""
    if sys.platform.startswith("linux"):
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME")
        except OSError:
            return None
    return platform.platform(terse=True)


def _disks() -> list[dict[str, Any]]:
    disks = []
    for partition in psutil.disk_partitions(all=False):
        try:
            usage = psutil.disk_usage(partition.mountpoint)
        except (OSError, RuntimeError):
            continue  # e.g. an empty CD drive or a mount we may not stat
        disks.append(
            {
                "mountpoint": partition.mountpoint,
                "fstype": partition.fstype,
                "total": int(usage.total),
                "free": int(usage.free),
            }
        )
    return disks


def _interfaces() -> dict[str, list[str]]:
    families = (socket.AF_INET, socket.AF_INET6)
    return {
        name: [addr.address for addr in addrs if addr.family in families]
        for name, addrs in psutil.net_if_addrs().items()
    }


def _non_loopback(interfaces: dict[str, list[str]]) -> list[str]:
    ips = []
    for addrs in interfaces.values():
        for addr in addrs:
            try:
                if ipaddress.ip_address(addr).is_loopback:
                    continue
            except ValueError:
                pass  # an odd format we cannot parse is still worth reporting
            if addr not in ips:
                ips.append(addr)
    return ips
