"""Access tokens for the REST API and the dashboard: their text form, their hash, and sealing an operator
token's delegate key under its secret.

A token reads ``crc_<id>.<secret>``: the id is public (lists, revocation); only the SHA-256 of the secret is
stored. An operator token's delegate signing key (see ``protocol.delegation``) is kept on the hub encrypted
(AES-256-GCM) under a key derived from the secret, so a copy of the hub's database cannot sign anything: the hub
can open the key only while a request presents the token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity

TOKEN_PREFIX = "crc_"
TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")
SECRET_BYTES = 32
NONCE_BYTES = 12


class TokenRole(StrEnum):
    VIEWER = "viewer"  # reads: scenarios, machines, events, results, plans
    OPERATOR = "operator"  # also acts: commands, plans (signing through its delegation)


@dataclass(frozen=True)
class AccessToken:
    id: str
    secret: bytes

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes]) -> AccessToken:
        return cls(random_bytes(8).hex(), random_bytes(SECRET_BYTES))

    def text(self) -> str:
        return f"{TOKEN_PREFIX}{self.id}.{base64.urlsafe_b64encode(self.secret).decode().rstrip('=')}"

    @classmethod
    def parse(cls, text: str) -> AccessToken:
        """Raises ProtocolError BAD_FIELD if ``text`` is not a token."""
        text = text.strip()
        token_id, _, secret = text.removeprefix(TOKEN_PREFIX).partition(".")
        if not text.startswith(TOKEN_PREFIX) or not TOKEN_ID.match(token_id) or not secret:
            raise ProtocolError(ErrorCode.BAD_FIELD, "not an access token (they read crc_<id>.<secret>)")
        try:
            raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
        except (binascii.Error, ValueError):
            raise ProtocolError(ErrorCode.BAD_FIELD, "an access token's secret is not base64") from None
        if len(raw) != SECRET_BYTES:
            raise ProtocolError(ErrorCode.BAD_FIELD, "an access token's secret has the wrong length")
        return cls(token_id, raw)

    @property
    def secret_hash(self) -> str:
        return hashlib.sha256(b"crc-token-v1:" + self.secret).hexdigest()

    def matches(self, secret_hash: str) -> bool:
        return hmac.compare_digest(self.secret_hash, secret_hash)

    def _sealing_key(self) -> bytes:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"crc-token-seal-v1:" + self.id.encode())
        return hkdf.derive(self.secret)

    def seal(self, delegate: Identity, random_bytes: Callable[[int], bytes]) -> bytes:
        """The delegate's private key encrypted under this token (nonce + ciphertext)."""
        nonce = random_bytes(NONCE_BYTES)
        sealed = AESGCM(self._sealing_key()).encrypt(nonce, delegate.private_text().encode(), self.id.encode())
        return nonce + sealed

    def open(self, sealed: bytes) -> Identity:
        """Raises ProtocolError BAD_SIGNATURE if ``sealed`` was not sealed under this token."""
        try:
            plain = AESGCM(self._sealing_key()).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self.id.encode())
        except (InvalidTag, ValueError):
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "this token cannot open its signing key") from None
        return Identity.from_private_text(plain.decode())
