"""The sealing keys this master had before ``crc rotate-key``, kept on its own computer
(``<key file>.former-sealing-keys``, 0600), so that results and output of a sealed scenario sealed to the key it
had when it sent an order (an offline machine runs it later) still open after the rotation. The old Ed25519 key
itself is not kept: only its sealing half, which signs nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol import CrcError, ProtocolError
from protocol.sealing import SealingPrivateKey

MAX_KEPT = 16  # rotations remembered; results older than that many rotations stay sealed


class FormerSealingKeys:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def beside(cls, key_path: Path) -> FormerSealingKeys:
        return cls(key_path.with_name(key_path.name + ".former-sealing-keys"))

    def keys(self) -> list[SealingPrivateKey]:
        """Newest first; none if there is no file yet."""
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            return [SealingPrivateKey.from_private_text(text) for text in raw]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError, ProtocolError):
            raise FormerKeysError(
                f"cannot read {self.path}, this master's former sealing keys: fix or remove it"
            ) from None

    def add(self, key: SealingPrivateKey) -> None:
        kept = [key, *(k for k in self.keys() if k.public != key.public)][:MAX_KEPT]
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([k.private_text() for k in kept], f)
        os.replace(tmp, self.path)


class FormerKeysError(CrcError):
    """The file of former sealing keys cannot be read; the message names it."""
