"""Where the daemon keeps its config, state and hosts file on Windows, resolved from (fake) environments."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path, PureWindowsPath

import pytest

from clients.windows.paths import restrict_to_admins, windows_paths
from clients.windows.platform import WINDOWS


def test_paths_come_from_programdata_and_systemroot() -> None:
    paths = windows_paths({"PROGRAMDATA": r"D:\Data", "SystemRoot": r"E:\WINNT"})
    assert paths.base_dir == PureWindowsPath(r"D:\Data\crc")
    assert paths.config_file == PureWindowsPath(r"D:\Data\crc\daemon.toml")
    assert paths.state_dir == PureWindowsPath(r"D:\Data\crc\state")
    assert paths.hosts_file == PureWindowsPath(r"E:\WINNT\System32\drivers\etc\hosts")


def test_variable_names_match_case_insensitively_like_on_windows() -> None:
    paths = windows_paths({"ProgramData": r"D:\Data", "SYSTEMROOT": r"E:\Win"})
    assert paths.config_file == PureWindowsPath(r"D:\Data\crc\daemon.toml")
    assert paths.hosts_file == PureWindowsPath(r"E:\Win\System32\drivers\etc\hosts")


def test_allusersprofile_and_windir_are_the_fallbacks() -> None:
    paths = windows_paths({"ALLUSERSPROFILE": r"F:\All", "windir": r"G:\Windows"})
    assert paths.state_dir == PureWindowsPath(r"F:\All\crc\state")
    assert paths.hosts_file == PureWindowsPath(r"G:\Windows\System32\drivers\etc\hosts")


@pytest.mark.parametrize("env", [{}, {"PROGRAMDATA": "", "SYSTEMROOT": ""}])
def test_without_the_variables_the_standard_locations_are_used(env: dict[str, str]) -> None:
    paths = windows_paths(env)
    assert paths.config_file == PureWindowsPath(r"C:\ProgramData\crc\daemon.toml")
    assert paths.state_dir == PureWindowsPath(r"C:\ProgramData\crc\state")
    assert paths.hosts_file == PureWindowsPath(r"C:\Windows\System32\drivers\etc\hosts")


def test_the_windows_platform_defaults_use_these_paths_and_crlf() -> None:
    paths = windows_paths()
    assert str(WINDOWS.config_file) == str(paths.config_file)
    assert str(WINDOWS.state_dir) == str(paths.state_dir)
    assert str(WINDOWS.hosts_file) == str(paths.hosts_file)
    assert WINDOWS.newline == "\r\n"


@pytest.mark.skipif(sys.platform == "win32", reason="the no-op is for systems other than Windows")
def test_restricting_to_admins_changes_nothing_off_windows(tmp_path: Path) -> None:
    config = tmp_path / "daemon.toml"
    config.write_text("hub = 'x'\n")
    os.chmod(config, 0o600)
    restrict_to_admins(config)
    restrict_to_admins(tmp_path)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert config.read_text() == "hub = 'x'\n"
