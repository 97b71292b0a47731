"""Fill a hub's dist folder with the daemon's wheel and its dependencies (``crc hub dist``).

Machines install the daemon from ``HUB/v1/dist/`` (``server/dist.py``) and nothing else: no package index. The
dependencies are exactly those of ``provisioning/runtime.lock`` (pip checks their hashes while downloading, and
machines check them again, against the lock their master signed), for this machine's platform.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from provisioning.startup import LockRef

DISTRIBUTION = "cloudremotecontrol"
SKIPPED = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "tests", "bench")


class DistError(RuntimeError):
    """pip could not build or fetch a wheel; the message carries pip's last lines."""


def source_tree() -> Path | None:
    """The project's source folder when running from a checkout (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "provisioning").is_dir() else None


def _pip(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise DistError(f"pip {args[0]} failed (exit {done.returncode}):\n{tail}")


def build_dist(folder: Path, *, dependencies: bool = True) -> list[str]:
    """Put the daemon wheel (built from the checkout, else downloaded at the installed version) and, unless
    ``dependencies`` is False, wheels of everything it needs on this platform into ``folder``.

    Returns:
        the names of the wheels now in the folder.

    Raises:
        DistError: with pip's output.
    """
    folder.mkdir(parents=True, exist_ok=True)
    deps = ["--no-deps"]
    tree = source_tree()
    if tree is not None:
        for old in folder.glob(f"{DISTRIBUTION}-*.whl"):
            old.unlink()  # a rebuilt wheel keeps its version number: never serve a stale one beside it
        with tempfile.TemporaryDirectory(prefix="crc-dist-") as scratch:
            # Built from a copy: setuptools leaves build/ and *.egg-info in the tree it builds.
            copy = Path(scratch) / "src"
            shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(*SKIPPED))
            _pip(["wheel", "-w", str(folder), *deps, str(copy)])
    else:
        version = metadata.version(DISTRIBUTION)
        _pip(["download", "-d", str(folder), "--only-binary=:all:", *deps, f"{DISTRIBUTION}=={version}"])
    if dependencies:
        lock = LockRef.local()
        (folder / lock.name).write_bytes(LockRef.local_text())
        _pip(["download", "-d", str(folder), "--require-hashes", "-r", str(folder / lock.name)])
    return sorted(p.name for p in folder.glob("*.whl"))
