"""The files of a hub's dist folder: which names it serves, and adding one a master sent (``dist.put``)."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*\.(whl|tar\.gz|zip|lock)$")


class DistConflict(ValueError):
    """The folder holds other content under that name."""


def put_file(folder: Path, name: str, content: bytes) -> bool:
    """Add ``content`` as ``name`` (atomically); False when that very content is there already.

    Raises:
        ValueError: not a file name the folder serves. DistConflict: other content has that name.
    """
    if not FILE_NAME.match(name) or "/" in name or "\\" in name:
        raise ValueError(f"{name!r} is not a file name the dist folder serves (wheel, sdist or lock)")
    path = folder / name
    if path.is_file():
        if hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(content).digest():
            return False
        raise DistConflict(f"the hub's dist folder holds another file named {name!r}")
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.{time.monotonic_ns()}.tmp"
    temp.write_bytes(content)
    temp.replace(path)
    return True
