"""Self-update: install another daemon build beside the running one, restart into it, roll back if it fails.

Files in ``STATE_DIR/update/``:

- ``pending.json``: a build installed by an UPDATE order, not yet proven (``venv``, ``version``, ``attempts``);
- ``current.json``: the build that last proved itself by connecting to the hub; the launcher starts it;
- ``rolled_back.json``: why a pending build was given up, reported to the hub once the daemon is connected.

``launch`` runs first in every ``crc-daemon`` start (Linux; the service manager always starts the build that was
installed first, which acts as the launcher; on Windows the service's supervisor makes the same choices, ``choose``,
and starts each build as a child process):

1. a process started by the launcher (a trial or the current build) just runs;
2. a pending build never tried: mark it tried and exec it as a *trial*;
3. a pending build tried already: it did not reconnect (it crashed, or gave up after ``TRIAL_SECONDS``), so it
   is rolled back: forgotten, with a note for the hub;
4. a confirmed current build other than this one: exec it;
5. otherwise: run this build.

A trial that connects writes ``current.json`` (``confirm``); one that cannot within ``TRIAL_SECONDS`` exits
non-zero, and the restart that follows rolls it back. The old build's venv is kept, so rolling back is instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from clients.daemon.config import DaemonConfig
from clients.daemon.reports import client_ssl
from clients.link import PinMismatch, hub_http_url, pinned_self_signed_pem

EXIT_RESTART = 75  # "restart me": systemd (Restart=always) and the process-mode supervisor both do
TRIAL_ENV = "CRC_DAEMON_TRIAL"
LAUNCHED_ENV = "CRC_DAEMON_LAUNCHED"
TRIAL_SECONDS_ENV = "CRC_UPDATE_TRIAL_SECONDS"
DEFAULT_TRIAL_SECONDS = 90.0
MAX_WHEEL_BYTES = 200 * 1024 * 1024


class UpdateError(RuntimeError):
    """The new build could not be fetched, checked or installed; the running build is untouched."""


@dataclass
class Build:
    venv: str
    wheel: str
    version: str
    attempts: int = 0
    order_id: str = ""
    installed: float = 0.0


def update_dir(state_dir: Path) -> Path:
    return state_dir / "update"


def trial_seconds() -> float:
    with contextlib.suppress(ValueError):
        return float(os.environ.get(TRIAL_SECONDS_ENV, DEFAULT_TRIAL_SECONDS))
    return DEFAULT_TRIAL_SECONDS


def in_trial() -> bool:
    return bool(os.environ.get(TRIAL_ENV))


def can_restart_into_a_new_build() -> bool:
    """Whether exiting with ``EXIT_RESTART`` starts the next build: on Linux the launcher (``launch``) does, under
    systemd or the startup script's loop; on Windows only a daemon the service's supervisor started."""
    return sys.platform != "win32" or bool(os.environ.get(TRIAL_ENV) or os.environ.get(LAUNCHED_ENV))


def venv_daemon(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "crc-daemon.exe"
    return venv / "bin" / "crc-daemon"


def venv_python(venv: Path) -> Path:
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _read(path: Path) -> Build | None:
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
        return Build(**json.loads(path.read_text()))
    return None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data))
    os.replace(temp, path)


# --- launching -------------------------------------------------------------------------------------------


def choose(state_dir: Path, this_venv: Path) -> tuple[Path, str]:
    """The build to start next and its marker (``TRIAL_ENV`` or ``LAUNCHED_ENV``), per steps 2-5 of the module doc;
    records a trial about to start, or a rollback. ``this_venv`` is the launcher's own build."""
    folder = update_dir(state_dir)
    pending = _read(folder / "pending.json")
    if pending is not None:
        if pending.attempts == 0 and venv_daemon(Path(pending.venv)).exists():
            pending.attempts = 1
            _write(folder / "pending.json", asdict(pending))
            return Path(pending.venv), TRIAL_ENV
        reason = (
            "the new build did not reconnect to the hub (it crashed or timed out)"
            if pending.attempts
            else f"the new build is missing from {pending.venv}"
        )
        _write(folder / "rolled_back.json", {**asdict(pending), "reason": reason, "at": time.time()})
        (folder / "pending.json").unlink(missing_ok=True)
    current = _read(folder / "current.json")
    if current is not None and Path(current.venv).resolve() != this_venv.resolve():
        if venv_daemon(Path(current.venv)).exists():
            return Path(current.venv), LAUNCHED_ENV
        (folder / "current.json").unlink(missing_ok=True)  # gone: run this build
    return this_venv, LAUNCHED_ENV


def cannot_start(state_dir: Path, marker: str) -> None:
    """The chosen build could not be started at all: a trial is rolled back by the next ``choose``; a confirmed
    build is forgotten, so the next ``choose`` falls back to the launcher's own."""
    if marker == LAUNCHED_ENV:
        (update_dir(state_dir) / "current.json").unlink(missing_ok=True)


def launch(state_dir: Path, argv: list[str]) -> None:
    """Exec the build that should run (see the module doc), or return to run this one.

    Linux only: a Windows service cannot exec, so there ``clients/daemon/supervisor.py`` starts each build as a
    child process instead, on the same decisions."""
    if sys.platform == "win32" or os.environ.get(TRIAL_ENV) or os.environ.get(LAUNCHED_ENV):
        return
    this_venv = Path(sys.prefix)
    for _ in range(3):  # each failed start removes what chose it: pending, then current
        venv, marker = choose(state_dir, this_venv)
        if venv.resolve() == this_venv.resolve():
            return
        try:
            _exec(venv, argv, marker)
        except OSError:  # not executable
            cannot_start(state_dir, marker)


def _exec(venv: Path, argv: list[str], marker: str) -> None:
    program = str(venv_daemon(venv))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(program, [program, *argv], {**os.environ, marker: "1"})


def confirm(state_dir: Path) -> Build | None:
    """Called once connected: a trial build becomes the current one. Returns it (None outside a trial)."""
    if not in_trial():
        return None
    folder = update_dir(state_dir)
    pending = _read(folder / "pending.json")
    if pending is None or Path(pending.venv).resolve() != Path(sys.prefix).resolve():
        return None
    _write(folder / "current.json", asdict(pending))
    (folder / "pending.json").unlink(missing_ok=True)
    return pending


def take_rollback_note(state_dir: Path) -> dict[str, Any] | None:
    """The reason a pending build was rolled back, once (the file is removed)."""
    path = update_dir(state_dir) / "rolled_back.json"
    try:
        note: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    path.unlink(missing_ok=True)
    return note


# --- installing ------------------------------------------------------------------------------------------


async def install(
    config: DaemonConfig, state_dir: Path, wheel: str, sha256: str, order_id: str, *, lock: str, lock_sha256: str
) -> Build:
    """Fetch ``wheel`` and the dependency ``lock`` from the hub, check both against the SHA-256s the master signed,
    install them into a new venv beside this one (only files the lock names, by hash, and only from the hub), and
    record it as pending. The running build is not touched.

    Raises:
        UpdateError: with what failed (and pip's last lines).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", wheel) or not re.fullmatch(r"crc-runtime-[0-9a-f]{16}\.lock", lock):
        raise UpdateError("the order names no wheel and dependency lock: update it from a newer master")
    base = hub_http_url(config.hub)
    venv = Path(sys.prefix).parent / f"venv-{sha256[:12]}"
    with tempfile.TemporaryDirectory(prefix="crc-update-", dir=state_dir) as scratch:
        wheel_path, lock_path = Path(scratch) / wheel, Path(scratch) / lock
        await _download(f"{base}/v1/dist/{wheel}", wheel_path, sha256, config)
        await _download(f"{base}/v1/dist/{lock}", lock_path, lock_sha256, config)
        pip_trust = await _pip_trust(config, Path(scratch))
        if not venv_daemon(venv).exists():
            python = getattr(sys, "_base_executable", "") or sys.executable
            await _run([python, "-m", "venv", "--clear", str(venv)], "creating the virtual environment")
            pip = [str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
            pip += [*pip_trust, "--timeout", "30", "--no-index", "--find-links", f"{base}/v1/dist/"]
            # No package index, no fallback: what the master's lock pins, with its hashes, or nothing.
            await _run([*pip, "--require-hashes", "-r", str(lock_path)], "installing the locked dependencies")
            await _run([*pip, "--no-deps", str(wheel_path)], "installing the daemon wheel")
    version = (await _run([str(venv_daemon(venv)), "--version"], "checking the new build")).split()[-1]
    build = Build(str(venv), wheel, version, 0, order_id, time.time())
    _write(update_dir(state_dir) / "pending.json", asdict(build))
    return build


async def _download(url: str, path: Path, sha256: str, config: DaemonConfig) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session,
            session.get(url, ssl=client_ssl(config)) as answer,
        ):
            if answer.status != 200:
                raise UpdateError(f"{url} answered {answer.status}")
            with path.open("wb") as out:
                async for chunk in answer.content.iter_chunked(1024 * 1024):
                    size += len(chunk)
                    if size > MAX_WHEEL_BYTES:
                        raise UpdateError(f"{url} is larger than {MAX_WHEEL_BYTES} bytes")
                    digest.update(chunk)
                    out.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise UpdateError(f"cannot download {url}: {exc}") from exc
    if digest.hexdigest() != sha256:
        raise UpdateError(f"SHA-256 mismatch for {path.name}: the order says {sha256}, got {digest.hexdigest()}")


async def _pip_trust(config: DaemonConfig, scratch: Path) -> list[str]:
    """pip's options to reach the hub: trust a plain-HTTP host, or its pinned self-signed certificate."""
    parts = urlsplit(hub_http_url(config.hub))
    if parts.scheme == "http":
        return ["--trusted-host", parts.hostname or ""]
    try:
        hub_pem = await pinned_self_signed_pem(config.hub, config.hub_pin)
    except PinMismatch:
        raise UpdateError("the hub's certificate does not match the pinned one; not installing anything") from None
    except (OSError, TimeoutError) as exc:
        raise UpdateError(f"cannot reach the hub for its certificate: {exc}") from exc
    if not hub_pem:
        return []  # no pin, or CA-signed: the system's CAs vouch for it
    pem = scratch / "hub.pem"
    pem.write_text(hub_pem)
    return ["--cert", str(pem)]


async def _run(argv: list[str], what: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 900)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise UpdateError(f"{what}: no answer after 900 s") from None
    text = output.decode("utf-8", "replace")
    if process.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise UpdateError(f"{what} failed (exit {process.returncode}):\n{tail}")
    return text.strip()
