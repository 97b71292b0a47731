"""The one-line installers for existing machines (issue 20): ``install.sh`` (Linux) and ``install.ps1`` (Windows).

They are static files, the same for every machine and master, served as they are by the hub
(``GET /v1/install.sh``, ``GET /v1/install.ps1``: ``server/install.py``). Everything a machine needs comes
as arguments, so a master hashes its *own* packaged copy and the one-liner it prints refuses any other bytes the
hub may serve (``provisioning/install_command.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class Installer:
    """One installer: the OS it is for, and its file name (also its path under ``HUB/v1/``)."""

    os: str
    name: str

    def data(self) -> bytes:
        """The packaged bytes, exactly what the hub serves."""
        return resources.files(__name__).joinpath(self.name).read_bytes()

    def sha256(self) -> str:
        return hashlib.sha256(self.data()).hexdigest()


LINUX = Installer("linux", "install.sh")
WINDOWS = Installer("windows", "install.ps1")
INSTALLERS: dict[str, Installer] = {LINUX.os: LINUX, WINDOWS.os: WINDOWS}
