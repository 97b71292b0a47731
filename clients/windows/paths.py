"""Where the daemon keeps things on Windows, and locking its config down to SYSTEM and Administrators."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from clients.windows._pywin32 import is_windows, load

__all__ = ["WindowsPaths", "restrict_to_admins", "windows_paths"]

_DEFAULT_PROGRAM_DATA = r"C:\ProgramData"
_DEFAULT_SYSTEM_ROOT = r"C:\Windows"


@dataclass(frozen=True)
class WindowsPaths:
    """The daemon's locations on one Windows machine (as Windows paths, whatever system computes them)."""

    base_dir: PureWindowsPath
    """``%ProgramData%\\crc``: config, state and journal live below it."""
    config_file: PureWindowsPath
    state_dir: PureWindowsPath
    hosts_file: PureWindowsPath


def _lookup(env: Mapping[str, str], *names: str) -> str | None:
    """The first non-empty variable among ``names``, matched case-insensitively as Windows does."""
    folded = {key.upper(): value for key, value in env.items()}
    for name in names:
        value = folded.get(name.upper())
        if value:
            return value
    return None


def windows_paths(env: Mapping[str, str] | None = None) -> WindowsPaths:
    """Resolve the daemon's paths from ``env`` (default: this process's environment).

    ``%ProgramData%`` falls back to ``%ALLUSERSPROFILE%`` and then ``C:\\ProgramData``;
    ``%SystemRoot%`` falls back to ``%windir%`` and then ``C:\\Windows``.
    """
    env = os.environ if env is None else env
    program_data = PureWindowsPath(_lookup(env, "PROGRAMDATA", "ALLUSERSPROFILE") or _DEFAULT_PROGRAM_DATA)
    system_root = PureWindowsPath(_lookup(env, "SYSTEMROOT", "WINDIR") or _DEFAULT_SYSTEM_ROOT)
    base = program_data / "crc"
    return WindowsPaths(
        base_dir=base,
        config_file=base / "daemon.toml",
        state_dir=base / "state",
        hosts_file=system_root / "System32" / "drivers" / "etc" / "hosts",
    )


def restrict_to_admins(path: str | Path) -> None:
    """Make ``path`` accessible to SYSTEM and BUILTIN\\Administrators only (full control each).

    On Windows this replaces the DACL and removes inherited entries, so no other account (not even
    the file's owner, unless an administrator) can read the machine's private key. Directories get
    entries that their future children inherit. On every other system this does nothing: POSIX
    permissions are set by the caller (for example ``write_config`` creates files with mode 0600).
    """
    if not is_windows():
        return
    security = load("win32security")
    con = load("ntsecuritycon")
    inherit = con.OBJECT_INHERIT_ACE | con.CONTAINER_INHERIT_ACE if os.path.isdir(path) else 0
    dacl = security.ACL()
    for well_known in (security.WinLocalSystemSid, security.WinBuiltinAdministratorsSid):
        sid = security.CreateWellKnownSid(well_known, None)
        dacl.AddAccessAllowedAceEx(security.ACL_REVISION, inherit, con.FILE_ALL_ACCESS, sid)
    security.SetNamedSecurityInfo(
        str(path),
        security.SE_FILE_OBJECT,
        security.DACL_SECURITY_INFORMATION | security.PROTECTED_DACL_SECURITY_INFORMATION,
        None,
        None,
        dacl,
        None,
    )
