"""Where a master's private key lives, and writing private keys safely (0600, never logged)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from protocol import CrcError, Identity, ProtocolError


class KeyFileError(CrcError):
    """A key file is missing, unreadable or not a key; the message says which file and what to do."""


def default_key_path(env: Mapping[str, str] | None = None) -> Path:
    """``CRC_KEY`` if set, else ``$XDG_CONFIG_HOME/crc/master.key`` (``~/.config/crc/master.key``)."""
    env = os.environ if env is None else env
    if env.get("CRC_KEY"):
        return Path(env["CRC_KEY"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "crc" / "master.key"


def write_private_key(path: Path, identity: Identity, *, overwrite: bool = False) -> None:
    """Write a private key readable by its owner only; refuses to replace an existing key unless asked."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists already; pass --force to replace it (the old key stops working)") from None
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(identity.private_text() + "\n")


def load_master_key(path: Path | str | None = None) -> Identity:
    """Load the master key from ``path`` (default: ``default_key_path()``)."""
    key_path = Path(path) if path else default_key_path()
    try:
        text = key_path.read_text()
    except FileNotFoundError:
        raise KeyFileError(f"no master key at {key_path}: run `crc keygen` (or pass --key / set CRC_KEY)") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read the master key {key_path}: {exc.strerror}") from None
    try:
        return Identity.from_private_text(text)
    except ProtocolError as exc:
        raise KeyFileError(f"{key_path} is not a crc private key: {exc.message}") from None


def load_or_create_master_key(path: Path | str | None = None) -> tuple[Identity, Path]:
    key_path = Path(path) if path else default_key_path()
    if not key_path.exists():
        write_private_key(key_path, Identity.generate(secrets.token_bytes))
    return load_master_key(key_path), key_path
