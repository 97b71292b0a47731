"""The tokens this master revoked, remembered on its own computer (``<key file>.revoked-tokens``).

The master renews its operator tokens' delegations from what the hub lists; a hostile hub could list a revoked
token as live to have its delegation renewed, and keep signing with the delegate key it was once handed. So the
master never renews a token it remembers revoking, whatever the hub says. (Another computer holding the same key
learns of a revocation only from the hub: revoke from each, or rotate the master key.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from protocol import CrcError


class RevokedTokens:
    """A small JSON list of token ids, written whole (0600) on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def beside(cls, key_path: Path) -> RevokedTokens:
        return cls(key_path.with_name(key_path.name + ".revoked-tokens"))

    def ids(self) -> frozenset[str]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return frozenset()
        except (OSError, ValueError):
            # Unreadable memory must not let a revoked token be renewed: renew nothing until it is fixed.
            raise RevocationMemoryError(
                f"cannot read {self.path}, the tokens this master revoked: fix or remove it"
            ) from None
        if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
            raise RevocationMemoryError(f"{self.path} is not a list of token ids: fix or remove it")
        return frozenset(raw)

    def add(self, token_id: str) -> None:
        ids = sorted(self.ids() | {token_id})
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(ids, f)
        os.replace(tmp, self.path)


class RevocationMemoryError(CrcError):
    """The file of revoked tokens cannot be read; the message names it."""
