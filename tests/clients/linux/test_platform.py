"""Platform defaults and the Linux adapter."""

from __future__ import annotations

import configparser
import importlib.resources
import sys
from pathlib import Path

import pytest

from clients.daemon.executor import ProcessExecutor
from clients.daemon.platform import current_platform
from clients.linux import LINUX, make_executor
from clients.windows.platform import WINDOWS


def test_linux_defaults():
    assert LINUX.name == "linux"
    assert LINUX.shell == ("/bin/sh", "-c")
    assert LINUX.state_dir == Path("/var/lib/crc")
    assert LINUX.hosts_file == Path("/etc/hosts")
    assert LINUX.config_file == Path("/etc/crc/daemon.toml")
    assert LINUX.newline == "\n"


def test_the_linux_executor_is_a_process_executor():
    assert isinstance(make_executor(), ProcessExecutor)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_posix_systems_get_the_linux_defaults():
    assert current_platform() is LINUX


def test_windows_defaults_use_powershell_and_crlf():
    assert WINDOWS.shell[0] == "powershell.exe"
    assert WINDOWS.shell[-1] == "-Command"
    assert WINDOWS.newline == "\r\n"
    assert str(WINDOWS.hosts_file).endswith(r"System32\drivers\etc\hosts")
    assert str(WINDOWS.state_dir).endswith(r"crc\state")


def test_the_systemd_unit_starts_the_daemon_and_kills_children_on_stop():
    text = importlib.resources.files("clients.linux").joinpath("crc-daemon.service").read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)

    service = unit["Service"]
    assert service["ExecStart"] == "/opt/crc/venv/bin/crc-daemon --config /etc/crc/daemon.toml"
    assert service["Restart"] == "always"
    assert service["KillMode"] == "mixed"
    assert service["StateDirectory"] == "crc"
    assert "ProtectSystem" not in service, "the daemon must be able to write /etc/hosts and any file"
    assert unit["Unit"]["Wants"] == "network-online.target"
