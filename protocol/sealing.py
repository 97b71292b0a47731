"""Sealing: encrypting a value so that only one machine can read it, however many hubs carry it.

A machine's *sealing key* is an X25519 key pair derived from its Ed25519 identity (``Identity.derive`` with its
own label, so it is a separate secret of the same seed, as RFC 5869 key separation has it): the machine stores
and carries nothing more, and a rotated machine has a new one with its new identity. Its public half travels as
``x25519:<base64>`` inside what the master signs about the machine (its certificate, or the signed result of a
key rotation), so a hub cannot hand a master a sealing key of its own.

``seal`` is RFC 9180 HPKE in base mode (DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) as
``cryptography`` implements it; nothing here composes primitives by hand. The HPKE ``info`` is a ``SealContext``
packed: what the value is for (purpose), scenario, machine, order and the value's name. A ciphertext opens only
under the same context, so a hub moving one to another machine, another order or another name makes ``unseal``
fail, as does any bit it changes. (The ephemeral key HPKE makes for each seal comes from the library's own
random source: that is the one thing here not passed in by the caller.)
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity

SEALING_KEY_PREFIX = "x25519:"
SEALING_PRIVATE_PREFIX = "x25519-private:"
SEALING_LABEL = b"crc-seal-v1"
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
OVERHEAD = 32 + 16  # HPKE's encapsulated key (X25519) and the AEAD tag


class Purpose:
    """What a sealed value is for; part of its context, so a value sealed for one use never opens for another."""

    SECRET = "secret"  # a secret parameter of a command (``ExecBody.secrets``)
    FILE = "file"  # a sealed file's content key (``PutFileBody.sealed``, ``protocol.sealed_files``)


@dataclass(frozen=True)
class SealingKey:
    """A machine's (or, later, a master's) public sealing key: 32 raw X25519 bytes."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise ProtocolError(ErrorCode.BAD_FIELD, "an X25519 public key is 32 bytes", size=len(self.raw))

    def to_text(self) -> str:
        """``x25519:<base64>``: the form in certificates, registrations and rotation results."""
        return SEALING_KEY_PREFIX + base64.b64encode(self.raw).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> SealingKey:
        """Raises ProtocolError BAD_FIELD for text that is not ``x25519:<base64 of 32 bytes>``."""
        if not isinstance(text, str) or not text.startswith(SEALING_KEY_PREFIX):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a sealing key starts with {SEALING_KEY_PREFIX!r}")
        try:
            raw = base64.b64decode(text[len(SEALING_KEY_PREFIX) :], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"sealing key is not valid base64: {exc}") from None
        return cls(raw)


class SealingPrivateKey:
    """The private half of a sealing key: what opens values sealed to it. A daemon keeps the one of its key
    before a rotation (not that key itself) for orders sealed before the rotation and run after it."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ProtocolError(ErrorCode.BAD_FIELD, "an X25519 private key is 32 bytes", size=len(raw))
        self._key = X25519PrivateKey.from_private_bytes(raw)
        self._raw = raw

    @classmethod
    def of(cls, identity: Identity) -> SealingPrivateKey:
        """The sealing key derived from ``identity`` (its own label: a secret of its own, RFC 5869 style)."""
        return cls(identity.derive(SEALING_LABEL))

    @property
    def public(self) -> SealingKey:
        return SealingKey(
            self._key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        )

    def private_text(self) -> str:
        return SEALING_PRIVATE_PREFIX + base64.b64encode(self._raw).decode("ascii")

    @classmethod
    def from_private_text(cls, text: str) -> SealingPrivateKey:
        """Raises ProtocolError BAD_FIELD for text that ``private_text`` did not write."""
        if not isinstance(text, str) or not text.startswith(SEALING_PRIVATE_PREFIX):
            raise ProtocolError(ErrorCode.BAD_FIELD, f"a private sealing key starts with {SEALING_PRIVATE_PREFIX!r}")
        try:
            return cls(base64.b64decode(text[len(SEALING_PRIVATE_PREFIX) :], validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a private sealing key is base64") from None

    def __repr__(self) -> str:  # never print key material
        return f"SealingPrivateKey(public={self.public.to_text()!r})"


def sealing_key(identity: Identity) -> SealingKey:
    """The public sealing key of ``identity`` (only its holder can open what is sealed to it)."""
    return SealingPrivateKey.of(identity).public


@dataclass(frozen=True)
class SealContext:
    """Where a sealed value belongs. Every field is bound into the ciphertext (HPKE ``info``)."""

    purpose: str
    scenario: str
    machine: str  # the id of the machine it is sealed to
    order: str  # the id of the order that carries it
    name: str  # the value's own name (a secret's variable name)

    def info(self) -> bytes:
        return pack(["crc-seal-context-v1", self.purpose, self.scenario, self.machine, self.order, self.name])

    def describe(self) -> str:
        return f"{self.purpose} {self.name!r}"


def seal(public: SealingKey, plaintext: bytes, context: SealContext) -> bytes:
    """``plaintext`` encrypted to ``public`` for ``context``: HPKE's encapsulated key followed by the ciphertext
    (``OVERHEAD`` bytes more than the plaintext)."""
    return SUITE.encrypt(plaintext, X25519PublicKey.from_public_bytes(public.raw), info=context.info())


def unseal_any(keys: Sequence[Identity | SealingPrivateKey], ciphertext: bytes, context: SealContext) -> bytes:
    """``unseal`` with the first of ``keys`` that opens it (current key first: a machine keeps the sealing key of
    the key a rotation replaced, a master those of its former keys).

    Raises:
        ProtocolError: none opens it (the first key's error, which says why it may not).
    """
    refusal: ProtocolError | None = None
    for key in keys:
        try:
            return unseal(key, ciphertext, context)
        except ProtocolError as exc:
            refusal = refusal or exc
    raise refusal or ProtocolError(ErrorCode.BAD_SIGNATURE, f"no key to open {context.describe()} with")


def unseal(key: Identity | SealingPrivateKey, ciphertext: bytes, context: SealContext) -> bytes:
    """Open what ``seal`` made for this identity's sealing key (or this sealing key) and ``context``. (Named so as
    not to shadow the builtin ``open``.)

    Raises:
        ProtocolError: BAD_SIGNATURE when it does not open: sealed to another machine (or to a key this machine
            had before a rotation), for another order, scenario or name, or changed on the way.
    """
    try:
        private = key if isinstance(key, SealingPrivateKey) else SealingPrivateKey.of(key)
        return SUITE.decrypt(ciphertext, private._key, info=context.info())
    except (InvalidTag, ValueError):
        named = "another path" if context.purpose == Purpose.FILE else "another name"
        raise ProtocolError(
            ErrorCode.BAD_SIGNATURE,
            f"{context.describe()} does not open on this machine: it was sealed for another machine (or this "
            f"machine's key before a rotation), another order or {named}, or it was altered on the way",
            name=context.name,
        ) from None
