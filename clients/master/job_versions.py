"""The highest version of each stored job this master signed or verified, remembered on its own computer
(``<key file>.job-versions``).

Every version of a job is signed, so a hub cannot change a script; but it could hand back an *older* signed
version it kept (a roll-back). The master refuses a version below the one it remembers, and numbers a new version
above it. (Another computer holding the same key knows only what it saw itself, and what one answer shows.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol import CrcError


class JobVersions:
    """A small JSON map of job name -> highest version, written whole (0600) whenever a version goes up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def beside(cls, key_path: Path) -> JobVersions:
        return cls(key_path.with_name(key_path.name + ".job-versions"))

    def highest(self) -> dict[str, int]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            # Unreadable memory must not let an older version through: use no job until it is fixed.
            raise JobVersionsError(
                f"cannot read {self.path}, the job versions this master signed: fix or remove it"
            ) from None
        if not isinstance(raw, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
            raise JobVersionsError(f"{self.path} is not a map of job names to versions: fix or remove it")
        return {str(k): v for k, v in raw.items()}

    def saw(self, name: str, version: int) -> None:
        known = self.highest()
        if known.get(name, 0) >= version:
            return
        known[name] = version
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(known.items())), f)
        os.replace(tmp, self.path)


class JobVersionsError(CrcError):
    """The file of job versions cannot be read; the message names it."""
