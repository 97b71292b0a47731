"""Ed25519 identities. A peer's id is a short fingerprint of its public key, so ids cannot be forged."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import ErrorCode, ProtocolError

PUBLIC_KEY_PREFIX = "ed25519:"
ID_LENGTH = 20


def fingerprint(public_raw: bytes) -> str:
    """The id of a public key: the first 100 bits of its SHA-256, base32, lower case (20 characters)."""
    digest = hashlib.sha256(b"crc-id-v1" + public_raw).digest()
    return base64.b32encode(digest).decode("ascii")[:ID_LENGTH].lower()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key (32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ProtocolError(ErrorCode.BAD_FIELD, "an Ed25519 public key is 32 bytes", size=len(self.raw))

    @property
    def id(self) -> str:
        return fingerprint(self.raw)

    def to_text(self) -> str:
        """The form used in configs, on the CLI and on the wire: ``ed25519:<base64>``."""
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Parse ``ed25519:<base64>``.

        Raises:
            ProtocolError: BAD_FIELD if the text is not a public key.
        """
        text = text.strip()
        if not text.startswith(PUBLIC_KEY_PREFIX):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a public key starts with {PUBLIC_KEY_PREFIX!r}")
        try:
            raw = base64.b64decode(text[len(PUBLIC_KEY_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"public key is not valid base64: {exc}") from exc
        return cls(raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Check an Ed25519 signature.

        Raises:
            ProtocolError: BAD_SIGNATURE if it does not verify.
        """
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except (InvalidSignature, ValueError) as exc:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, "signature does not verify", signer=self.id) from exc


class Identity:
    """An Ed25519 key pair: what a master, a machine or a hub proves itself with."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public = PublicKey(raw)

    @property
    def id(self) -> str:
        return self.public.id

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Build the identity whose private key is these 32 bytes."""
        if len(seed) != 32:
            raise ProtocolError(ErrorCode.BAD_FIELD, "an Ed25519 seed is 32 bytes", size=len(seed))
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes]) -> Identity:
        """A fresh identity from a caller-supplied randomness source (``secrets.token_bytes``)."""
        return cls.from_seed(random_bytes(32))

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def derive(self, label: bytes) -> bytes:
        """A 32-byte secret only the holder of this private key can compute, one per label (HMAC-SHA256)."""
        seed = self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return hmac.new(seed, b"crc-derive-v1:" + label, hashlib.sha256).digest()

    def private_text(self) -> str:
        """The private key as text for a key file or daemon config: ``ed25519-private:<base64 seed>``."""
        seed = self._private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return PRIVATE_KEY_PREFIX + base64.b64encode(seed).decode("ascii")

    @classmethod
    def from_private_text(cls, text: str) -> Identity:
        """Parse what ``private_text`` wrote.

        Raises:
            ProtocolError: BAD_FIELD if the text is not a private key.
        """
        text = text.strip()
        if not text.startswith(PRIVATE_KEY_PREFIX):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a private key starts with {PRIVATE_KEY_PREFIX!r}")
        try:
            seed = base64.b64decode(text[len(PRIVATE_KEY_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"private key is not valid base64: {exc}") from exc
        return cls.from_seed(seed)

    def __repr__(self) -> str:  # never print key material
        return f"Identity(id={self.id!r})"


PRIVATE_KEY_PREFIX = "ed25519-private:"
