"""Installing the daemon as a systemd service on a machine that enrolled itself (``crc-daemon enroll``): the
packaged unit (``crc-daemon.service``), started from this installation's own ``crc-daemon`` and config."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

from protocol import CrcError

UNIT_PATH = Path("/etc/systemd/system/crc-daemon.service")


class ServiceError(CrcError):
    """The service could not be installed or started (no systemd, not root, systemctl failed)."""


def unit_text(config: Path) -> str:
    """The packaged unit, its ExecStart pointing at this installation and ``config``."""
    unit = resources.files("clients.linux").joinpath("crc-daemon.service").read_text()
    daemon = Path(sys.executable).parent / "crc-daemon"
    lines = [f"ExecStart={daemon} --config {config}" if line.startswith("ExecStart=") else line
             for line in unit.splitlines()]  # fmt: skip
    return "\n".join(lines) + "\n"


def install(config: Path, unit_path: Path = UNIT_PATH) -> None:
    """Write the unit, then enable and start it (``systemctl enable --now``)."""
    if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
        raise ServiceError("this machine does not run systemd: start `crc-daemon --config ...` with your own "
                           "service manager (enroll with --no-service)")  # fmt: skip
    try:
        unit_path.write_text(unit_text(config.resolve()))
    except OSError as exc:
        raise ServiceError(
            f"cannot write {unit_path} ({exc.strerror}): run as root, or enroll with --no-service"
        ) from None
    for command in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", "crc-daemon.service"]):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ServiceError(f"{' '.join(command)} failed: {done.stderr.strip() or done.returncode}")
