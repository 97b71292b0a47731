"""Where ``crc up`` remembers which provider holds a scenario's machines, so ``crc down NAME`` needs no file.

One small JSON file per scenario under ``$CRC_STATE_DIR`` (default ``~/.local/state/crc``)/scenarios. It holds
no secret: the provider kind and its settings. It is written before any machine is created, so a ``crc up``
that crashed half-way can still be undone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def state_home() -> Path:
    if os.environ.get("CRC_STATE_DIR"):
        return Path(os.environ["CRC_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "crc"


@dataclass
class ScenarioRecord:
    name: str
    provider: str
    hub: str
    settings: dict[str, Any] = field(default_factory=dict)


def _path(name: str, home: Path | None = None) -> Path:
    return (home or state_home()) / "scenarios" / f"{name}.json"


def save_record(record: ScenarioRecord, home: Path | None = None) -> Path:
    path = _path(record.name, home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(record), indent=2))
    return path


def load_record(name: str, home: Path | None = None) -> ScenarioRecord | None:
    try:
        return ScenarioRecord(**json.loads(_path(name, home).read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def forget_record(name: str, home: Path | None = None) -> None:
    _path(name, home).unlink(missing_ok=True)
