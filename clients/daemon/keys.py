"""The machine's key and its master's key after rotations: kept in the state dir, so the config file (written by
provisioning, maybe read-only) never needs rewriting.

``STATE/machine-key.json`` (0600): ``{"machine": id, "private_key": ..., "previous_sealing_key": ...}`` the key in
use since the last rotation, and the sealing key (``protocol.sealing``, not the key itself) of the one it replaced,
kept to open secrets sealed to it for orders signed before the rotation and run after it (``opening_keys``);
``STATE/machine-key.pending.json``: a key made for a rotation the hub may not have registered yet. A daemon that
restarts uses the newest key the hub accepts: pending, then current, then the config's.
``STATE/master-key.json``: the master key this daemon obeys since a TRUST_MASTER order (signed by the master key
it obeyed until then) moved it, and that rotation's epoch; it replaces the config's ``master_public_key``. A file
from before epochs reads as epoch 0 (any later rotation moves it on).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import replace
from pathlib import Path

from clients.daemon.config import DaemonConfig
from protocol import Identity, ProtocolError, PublicKey
from protocol.sealing import SealingPrivateKey

CURRENT = "machine-key.json"
MASTER = "master-key.json"
PENDING = "machine-key.pending.json"


def _write_private(path: Path, data: dict[str, str | int]) -> None:
    temp = path.with_suffix(".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(temp, path)


def _read(path: Path, machine_id: str) -> Identity | None:
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, ProtocolError):
        data = json.loads(path.read_text())
        if data["machine"] == machine_id:
            return Identity.from_private_text(data["private_key"])
    return None


def current_config(config: DaemonConfig, state_dir: Path) -> DaemonConfig:
    """The config with the keys in use since the last rotations (the config file's own keys if none)."""
    rotated = _read(state_dir / CURRENT, config.machine_id)
    if rotated is not None:
        config = replace(config, identity=rotated, machine=config.machine_id)
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, ProtocolError):
        data = json.loads((state_dir / MASTER).read_text())
        if data["machine"] == config.machine_id:
            config = replace(config, master_key=PublicKey.from_text(data["master_public_key"]))
    return config


def master_epoch(config: DaemonConfig, state_dir: Path) -> int:
    """The epoch of the master rotation this daemon obeys (0: the config's own master, or a file before epochs)."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        data = json.loads((state_dir / MASTER).read_text())
        if data["machine"] == config.machine_id:
            epoch = data.get("epoch", 0)
            return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else 0
    return 0


def trust_master(config: DaemonConfig, state_dir: Path, master_key: PublicKey, epoch: int) -> DaemonConfig:
    """Obey ``master_key`` from now on, as of rotation ``epoch`` (saved before anything else is verified
    against it)."""
    record: dict[str, str | int] = {
        "machine": config.machine_id, "master_public_key": master_key.to_text(), "epoch": epoch,
    }  # fmt: skip
    _write_private(state_dir / MASTER, record)
    return replace(config, master_key=master_key)


def follow_master_rotation(
    config: DaemonConfig, state_dir: Path, master_key: PublicKey, epoch: int
) -> tuple[DaemonConfig, bool]:
    """Apply a verified master rotation once and never backwards: only an ``epoch`` greater than the one obeyed
    moves the key (saved first). Returns the config to use and whether it moved."""
    if epoch <= master_epoch(config, state_dir):
        return config, False
    return trust_master(config, state_dir, master_key, epoch), True


def make_pending(config: DaemonConfig, state_dir: Path) -> Identity:
    """A fresh key pair for a rotation, saved (0600) before its public half is reported."""
    identity = Identity.generate(secrets.token_bytes)
    _write_private(state_dir / PENDING, {"machine": config.machine_id, "private_key": identity.private_text()})
    return identity


def pending_config(config: DaemonConfig, state_dir: Path) -> DaemonConfig | None:
    """The config with the pending key, to try first when connecting; None without a pending rotation."""
    pending = _read(state_dir / PENDING, config.machine_id)
    return None if pending is None else replace(config, identity=pending, machine=config.machine_id)


def promote_pending(config: DaemonConfig, state_dir: Path, previous: Identity | None = None) -> None:
    """The hub accepted the pending key: it becomes the current one. Of ``previous`` (the key it replaces) only
    its sealing key is kept: the old key itself is gone from the machine."""
    record: dict[str, str | int] = {"machine": config.machine_id, "private_key": config.identity.private_text()}
    if previous is not None and previous.id != config.identity.id:
        record["previous_sealing_key"] = SealingPrivateKey.of(previous).private_text()
    _write_private(state_dir / CURRENT, record)
    (state_dir / PENDING).unlink(missing_ok=True)


def opening_keys(config: DaemonConfig, state_dir: Path) -> list[SealingPrivateKey]:
    """The sealing keys a secret for this machine may have been sealed to, current first: that of the key in use,
    that of a rotation the hub may have registered already (masters seal to it once they see the signed
    rotation), and that of the key the last rotation replaced (orders sealed before it, run after it)."""
    found = [SealingPrivateKey.of(config.identity)]
    pending = _read(state_dir / PENDING, config.machine_id)
    if pending is not None:
        found.append(SealingPrivateKey.of(pending))
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError, ProtocolError):
        data = json.loads((state_dir / CURRENT).read_text())
        if data["machine"] == config.machine_id and data.get("previous_sealing_key"):
            found.append(SealingPrivateKey.from_private_text(data["previous_sealing_key"]))
    return found
