"""The Windows service module: importable everywhere, Windows-only where it matters, and a runner that stops cleanly."""

from __future__ import annotations

import asyncio
import importlib
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from clients.daemon import cli
from clients.windows import service

off_windows = pytest.mark.skipif(sys.platform == "win32", reason="checks the behaviour on other systems")


def test_the_service_module_imports_on_any_system() -> None:
    module = importlib.reload(service)
    assert module.CrcDaemonService._svc_name_ == "crc-daemon"
    assert module.CrcDaemonService._svc_display_name_ == "CloudRemoteControl daemon"


@off_windows
@pytest.mark.parametrize(
    "action", [lambda: service.install(Path("daemon.toml")), service.uninstall, service.start, service.stop]
)
def test_managing_the_service_raises_windows_only_off_windows(action: object) -> None:
    with pytest.raises(service.WindowsOnly, match="only available on Windows"):
        action()  # type: ignore[operator]


def test_failed_services_are_restarted_by_the_service_control_manager() -> None:
    argv = service.failure_actions_argv(restart_delay_ms=5000, reset_seconds=86400)
    assert argv == [
        "sc.exe",
        "failure",
        "crc-daemon",
        "reset=",
        "86400",
        "actions=",
        "restart/5000/restart/5000/restart/5000",
    ]
    assert service.failure_flag_argv() == ["sc.exe", "failureflag", "crc-daemon", "1"]


def test_the_runner_runs_the_daemon_on_a_thread_and_stop_ends_it() -> None:
    seen: dict[str, object] = {}

    async def daemon(stop: asyncio.Event) -> None:
        seen["thread"] = threading.current_thread().name
        await stop.wait()
        seen["stopped"] = True

    runner = service.DaemonRunner(daemon)
    runner.start()
    assert not runner.join(0.05), "the daemon keeps running until asked to stop"
    runner.stop()
    assert runner.join(5)
    assert seen == {"thread": "crc-daemon", "stopped": True}
    assert runner.error is None
    runner.stop()  # a second stop after the end is harmless


def test_a_stop_before_the_loop_runs_is_not_lost() -> None:
    async def daemon(stop: asyncio.Event) -> None:
        await asyncio.wait_for(stop.wait(), 5)

    runner = service.DaemonRunner(daemon)
    runner.stop()
    runner.start()
    assert runner.join(5)
    assert runner.error is None


def test_the_runner_keeps_the_daemons_error_for_the_service_to_report() -> None:
    async def daemon(stop: asyncio.Event) -> None:
        raise RuntimeError("hub config broken")

    runner = service.DaemonRunner(daemon)
    runner.start()
    assert runner.join(5)
    assert isinstance(runner.error, RuntimeError)


@off_windows
@pytest.mark.parametrize("action", ["install", "uninstall", "start", "stop"])
def test_crc_daemon_service_exits_2_off_windows_with_a_clear_message(
    action: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["service", action, *(["--config", "x.toml"] if action == "install" else [])]) == 2
    err = capsys.readouterr().err
    assert f"'service {action}' works only on Windows" in err


@off_windows
def test_the_installed_crc_daemon_command_refuses_service_install_off_windows() -> None:
    command = Path(sys.executable).parent / "crc-daemon"
    if not command.exists():
        pytest.skip(f"crc-daemon is not installed next to {sys.executable}")
    done = subprocess.run(
        [str(command), "service", "install", "--config", "daemon.toml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "works only on Windows" in done.stderr


def test_an_unknown_service_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["service", "restart-everything"])
    assert exit_info.value.code == 2


def test_the_class_path_given_to_the_service_manager_names_the_service_class() -> None:
    module, _, name = service._CLASS_PATH.rpartition(".")
    assert getattr(importlib.import_module(module), name) is service.CrcDaemonService


def test_the_service_supervises_the_daemon_build_beside_its_own_venv(tmp_path: Path) -> None:
    from clients.daemon.config import DaemonConfig, write_config
    from clients.windows.platform import WINDOWS
    from protocol import Identity

    config = tmp_path / "daemon.toml"
    machine, master = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    write_config(config, DaemonConfig("http://127.0.0.1:9", "s", "m", machine, master.public))
    plan = service.supervision(config, tmp_path / "venv")
    assert plan.base_venv == tmp_path / "venv" and plan.state_dir == WINDOWS.state_dir
    assert plan.argv == ("--config", str(config))  # the rest are the Windows defaults, in every build
    assert plan.log_file == WINDOWS.state_dir.parent / "logs" / "daemon.log"


def test_a_bad_config_is_said_once_by_the_service_not_by_every_child(tmp_path: Path) -> None:
    from clients.daemon.config import ConfigError

    with pytest.raises(ConfigError, match="no daemon config"):
        service.supervision(tmp_path / "missing.toml", tmp_path / "venv")


@pytest.mark.parametrize(
    ("status", "crash", "says"),
    [(0, False, "stopped"), (3, False, "revoked"), (1, True, "exit status 1"), (-6, True, "exit status -6")],
)
def test_how_the_service_ends_after_its_daemon(status: int, crash: bool, says: str) -> None:
    """A crash ends the service like a crash, so the Service Control Manager's failure actions restart it; a
    revocation (exit 3, sealed in the session) and a requested stop end it cleanly."""
    message, ends_like_a_crash = service.ending(status)
    assert ends_like_a_crash is crash and says in message
