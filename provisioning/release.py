"""The daemon build a master vouches for: a wheel it holds or builds itself, and its own dependency lock.

Machines install what a master signed (the wheel's and the lock's SHA-256, in startup scripts and UPDATE
orders), so those hashes must come from something the hub does not control: never from the hub's
``/v1/dist/index.json``. The master takes the wheel given (``--wheel FILE``) or builds one from its own
installation, and the lock it ships with (``provisioning/runtime.lock``), and publishes both into the hub's
dist folder (``dist.put``) so machines can fetch them; they check every byte against the signed hashes, and pip
installs dependencies only from the lock, with ``--no-index --require-hashes``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clients.master.sdk import Master
from protocol import RemoteError
from provisioning.dist import DISTRIBUTION, SKIPPED, DistError, build_dist, source_tree
from provisioning.hubinfo import HubInfoError, served_hashes
from provisioning.startup import LockRef, WheelRef

WHEEL_PARTS = re.compile(r"^(?P<dist>[^-]+)-(?P<version>[^-]+)(?:-\d[^-]*)?-(?P<tags>[^-]+-[^-]+-[^-]+)\.whl$")


class ReleaseError(RuntimeError):
    """No daemon build to vouch for (the wheel cannot be read or built, or the hub refused it)."""


@dataclass(frozen=True)
class DaemonRelease:
    wheel: WheelRef
    lock: LockRef


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==[^\s;]+\s*(;)?")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def locked_hashes(lock_text: str) -> dict[str, set[str]]:
    """Package name -> the SHA-256s the lock accepts, for packages every platform needs (no marker)."""
    locked: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in lock_text.splitlines():
        pin = _PIN.match(line)
        if pin:
            current = None if pin.group(2) else locked.setdefault(pin.group(1), set())
        elif current is not None:
            current.update(_HASH.findall(line))
    return locked


def content_named(name: str, digest: str) -> str:
    """The wheel's name with a build tag made of its hash: builds of one version never share a name on the hub."""
    match = WHEEL_PARTS.match(name)
    if match is None:
        raise ReleaseError(f"{name!r} is not a wheel file name")
    return f"{match['dist']}-{match['version']}-0{digest[:12]}-{match['tags']}.whl"


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "crc" / "daemon-wheels"


def _tree_fingerprint(tree: Path) -> str:
    """A digest of the files a wheel of ``tree`` is built from, so an unchanged checkout is built once."""
    ignored = shutil.ignore_patterns(*SKIPPED)
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(tree):
        skip = ignored(folder, [*dirs, *files])
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(f for f in files if f not in skip):
            path = Path(folder) / name
            digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def _build_own_wheel() -> Path:
    """This installation's daemon wheel, built (or, installed from an index, downloaded) once and cached."""
    tree = source_tree()
    key = _tree_fingerprint(tree) if tree is not None else "installed"
    folder = _cache_dir() / key
    found = sorted(folder.glob(f"{DISTRIBUTION}-*.whl"))
    if tree is not None and found:
        return found[-1]
    with tempfile.TemporaryDirectory(prefix="crc-wheel-") as scratch:
        try:
            build_dist(Path(scratch), dependencies=False)
        except DistError as exc:
            raise ReleaseError(f"cannot build the daemon wheel here: {exc}") from exc
        [built] = sorted(Path(scratch).glob(f"{DISTRIBUTION}-*.whl"))
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / built.name
        shutil.copyfile(built, target)
    return target


async def publish_release(master: Master, wheel_file: Path | None = None) -> DaemonRelease:
    """Vouch for ``wheel_file`` (default: this installation's own build) and this master's lock, and put both in
    the hub's dist folder for machines to fetch.

    Raises:
        ReleaseError: the wheel cannot be read or built, or the hub would not take it.
    """
    try:
        path = wheel_file if wheel_file is not None else await asyncio.to_thread(_build_own_wheel)
        data = await asyncio.to_thread(path.read_bytes)
    except OSError as exc:
        raise ReleaseError(f"cannot read the daemon wheel {wheel_file}: {exc.strerror}") from None
    digest = hashlib.sha256(data).hexdigest()
    wheel = WheelRef(content_named(path.name, digest), digest)
    lock = LockRef.local()
    try:
        await master.publish(wheel.name, data)
        await master.publish(lock.name, LockRef.local_text())
    except RemoteError as exc:
        raise ReleaseError(f"the hub did not take the daemon build: {exc.message}") from None
    try:
        served = await served_hashes(master.url, pin=master.pin, ca_file=master.ca_file)
    except HubInfoError as exc:
        raise ReleaseError(str(exc)) from None
    locked = locked_hashes(LockRef.local_text().decode())
    missing = sorted(name for name, hashes in locked.items() if not hashes & served)
    if missing:
        raise ReleaseError(
            f"the hub's dist folder lacks locked dependencies ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}) that machines install from it: run `crc hub dist` on the hub's "
            "machine (add the hub's --data-dir if it has one), then try again"
        )
    return DaemonRelease(wheel, lock)
