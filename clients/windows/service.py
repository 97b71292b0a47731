"""The ``crc-daemon`` Windows service: a supervisor in an asyncio loop on a thread, running the daemon build that
should run as its child process (so an UPDATE order can move the machine to a new build, and a failed one is
rolled back: ``clients/daemon/supervisor.py``).

Importable on every system (pywin32 is loaded lazily); everything that touches the Service
Control Manager raises :class:`WindowsOnly` off Windows. ``crc-daemon service install|uninstall|
start|stop`` calls the functions here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from clients.daemon.supervisor import STOP_GRACE_SECONDS, Supervision, supervise
from clients.windows._pywin32 import WindowsOnly, is_windows, load

__all__ = [
    "DESCRIPTION",
    "DISPLAY_NAME",
    "SERVICE_NAME",
    "CrcDaemonService",
    "DaemonRunner",
    "WindowsOnly",
    "ending",
    "failure_actions_argv",
    "failure_flag_argv",
    "install",
    "start",
    "stop",
    "supervision",
    "uninstall",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "crc-daemon"
DISPLAY_NAME = "CloudRemoteControl daemon"
DESCRIPTION = "Connects out to the CloudRemoteControl hub and runs the orders its master signed."
_CONFIG_OPTION = "config"
_VENV_OPTION = "venv"
_CLASS_PATH = "clients.windows.service.CrcDaemonService"  # what pythonservice.exe imports

DaemonMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""Runs the daemon until the event is set (``Daemon.run``)."""


class DaemonRunner:
    """Runs a daemon's ``run(stop)`` in its own asyncio loop on a thread, and stops it from any thread."""

    def __init__(self, main: DaemonMain) -> None:
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stop_requested = False
        self._lock = threading.Lock()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="crc-daemon", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        """Ask the daemon to finish; safe to call from any thread, more than once, or before it started."""
        with self._lock:
            self._stop_requested = True
            if self._loop is not None and self._stop is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the daemon to end; True when it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        stop = asyncio.Event()
        with self._lock:
            self._loop, self._stop = asyncio.get_running_loop(), stop
            if self._stop_requested:
                stop.set()
        self._ready.set()
        try:
            await self._main(stop)
        finally:
            with self._lock:
                self._loop = None


def supervision(config_path: Path, venv: Path) -> Supervision:
    """What the service runs: the daemon build the update state names, as a child of the service's process
    (``clients/daemon/supervisor.py``: a service cannot exec into a new build). ``venv`` is the service's own.

    Raises:
        ConfigError: the config is unusable (said once in the event log rather than by every child).
    """
    from clients.daemon.config import load_config
    from clients.windows.platform import WINDOWS

    load_config(config_path)
    return Supervision(
        state_dir=WINDOWS.state_dir,
        base_venv=venv,
        argv=("--config", str(config_path)),
        log_file=WINDOWS.state_dir.parent / "logs" / "daemon.log",
    )


def ending(status: int) -> tuple[str, bool]:
    """What the service says when its daemon ended with ``status``, and whether it must end like a crash so the
    Service Control Manager's failure actions start it again."""
    from clients.daemon.cli import EXIT_REVOKED

    if status == 0:
        return "stopped", False
    if status == EXIT_REVOKED:
        # A revocation sealed inside the authenticated session: restarting would only hammer the hub.
        return "this machine was revoked by its master; stopping (no restart)", False
    return f"the daemon ended with exit status {status}", True


def _framework_base() -> Any:
    """pywin32's ServiceFramework on Windows; a plain base elsewhere so this module still imports."""
    try:
        return load("win32serviceutil").ServiceFramework
    except WindowsOnly:
        return object


class CrcDaemonService(_framework_base()):  # type: ignore[misc]
    """The Windows service: SvcDoRun runs the daemon until SvcStop asks it to finish."""

    _svc_name_ = SERVICE_NAME
    _svc_display_name_ = DISPLAY_NAME
    _svc_description_ = DESCRIPTION

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self._runner: DaemonRunner | None = None

    def SvcStop(self) -> None:  # pywin32's name
        # The child gets STOP_GRACE_SECONDS to finish before it is killed: tell the SCM to wait that long.
        wait_ms = int((STOP_GRACE_SECONDS + 5) * 1000)
        self.ReportServiceStatus(load("win32service").SERVICE_STOP_PENDING, waitHint=wait_ms)
        if self._runner is not None:
            self._runner.stop()

    def SvcDoRun(self) -> None:  # pywin32's name
        from clients.daemon.config import ConfigError
        from clients.windows.platform import WINDOWS

        servicemanager = load("servicemanager")
        serviceutil = load("win32serviceutil")
        config = serviceutil.GetServiceCustomOption(SERVICE_NAME, _CONFIG_OPTION, str(WINDOWS.config_file))
        venv = serviceutil.GetServiceCustomOption(SERVICE_NAME, _VENV_OPTION, sys.prefix)
        _log_to_file(WINDOWS.state_dir.parent / "logs" / "service.log")
        try:
            plan = supervision(Path(config), Path(venv))
        except ConfigError as exc:
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: {exc}")
            return
        statuses: list[int] = []

        async def main(stop: asyncio.Event) -> None:
            statuses.append(await supervise(plan, stop))

        self._runner = DaemonRunner(main)
        servicemanager.LogInfoMsg(f"{SERVICE_NAME}: starting with {config} (builds beside {venv})")
        self._runner.start()
        self._runner.join()
        if self._runner.error is not None:
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: stopped by an error: {self._runner.error!r}")
            os._exit(1)  # like a crash, so the Service Control Manager applies the restart actions
        message, crash = ending(statuses[0] if statuses else 0)
        if crash:
            servicemanager.LogErrorMsg(f"{SERVICE_NAME}: {message}")
            os._exit(1)
        servicemanager.LogInfoMsg(f"{SERVICE_NAME}: {message}")


def _log_to_file(path: Path) -> None:
    """The supervisor's own lines (which build it starts, and why); each daemon writes daemon.log beside it."""
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s crc-daemon-service %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)


def failure_actions_argv(restart_delay_ms: int = 5000, reset_seconds: int = 86400) -> list[str]:
    """``sc.exe failure`` arguments: restart after every failure, counting failures over a day.

    sc.exe wants each ``name=`` and its value as separate words.
    """
    delay = str(restart_delay_ms)
    actions = "/".join(["restart", delay] * 3)
    return ["sc.exe", "failure", SERVICE_NAME, "reset=", str(reset_seconds), "actions=", actions]


def failure_flag_argv() -> list[str]:
    """``sc.exe failureflag``: apply the failure actions also when the service stops with an error code."""
    return ["sc.exe", "failureflag", SERVICE_NAME, "1"]


def install(config: Path | None = None) -> None:
    """Register the service (automatic start, restart on failure) with ``config`` as its config file.

    The config is checked first (``ConfigError`` names the problem); the config file and
    ``%ProgramData%\\crc`` are then restricted to SYSTEM and Administrators.
    """
    from clients.daemon.config import load_config
    from clients.windows.paths import restrict_to_admins
    from clients.windows.platform import WINDOWS

    serviceutil = load("win32serviceutil")
    win32service = load("win32service")
    config = Path(config or WINDOWS.config_file).absolute()  # the service starts in System32
    load_config(config)
    serviceutil.InstallService(
        _CLASS_PATH,
        SERVICE_NAME,
        DISPLAY_NAME,
        startType=win32service.SERVICE_AUTO_START,
        description=DESCRIPTION,
    )
    serviceutil.SetServiceCustomOption(SERVICE_NAME, _CONFIG_OPTION, str(config))
    # The build the service itself runs from (run by this venv's crc-daemon.exe); updates go beside it.
    serviceutil.SetServiceCustomOption(SERVICE_NAME, _VENV_OPTION, sys.prefix)
    subprocess.run(failure_actions_argv(), check=True, capture_output=True)
    subprocess.run(failure_flag_argv(), check=True, capture_output=True)
    base = WINDOWS.state_dir.parent
    base.mkdir(parents=True, exist_ok=True)
    restrict_to_admins(base)
    if config.exists():
        restrict_to_admins(config)


def uninstall() -> None:
    """Stop the service if it runs, then remove it."""
    serviceutil = load("win32serviceutil")
    try:
        serviceutil.StopService(SERVICE_NAME)
    except Exception:
        log.debug("service was not running", exc_info=True)
    serviceutil.RemoveService(SERVICE_NAME)


def start() -> None:
    load("win32serviceutil").StartService(SERVICE_NAME)


def stop() -> None:
    load("win32serviceutil").StopService(SERVICE_NAME)


if __name__ == "__main__" and is_windows():  # pythonservice.exe and debugging: python -m clients.windows.service
    load("win32serviceutil").HandleCommandLine(CrcDaemonService)
