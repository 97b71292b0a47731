"""Sealed file contents: a file the hub stores and delivers without being able to read it, uploaded once for every
target machine.

A put marked secret (``crc put --secret``, ``Master.put_file(..., sealed=True)``) is encrypted once, by the
master, under a *content key* K of 32 random bytes made for that put alone. K travels to each target machine
sealed to that machine (``protocol.sealing``: HPKE, purpose ``Purpose.FILE``, bound to the scenario, machine,
order and path) inside the order the master signs for it, so one upload serves every target while each machine
opens only the K of its own order.

The content is encrypted in chunks as the STREAM construction has it (Hoang, Reyhanitabar, Rogaway and Vizar,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015, section 7; age's payload,
C2SP age "Payload", is the same construction): each chunk is sealed on its own with ChaCha20-Poly1305 (RFC 8439,
``cryptography``'s AEAD) under a nonce that is the chunk's index (96 bits, big-endian), so each chunk is
authenticated before a byte of it is written, and a file of any size streams through a fixed amount of memory.
STREAM marks the last chunk with a flag in the nonce; here the chunk count is known before the first chunk (the
master signs it into the order), and it is bound into every chunk's associated data along with a random id of
the put and the chunk's index, which does the same: a stream cut short, or with a chunk dropped, repeated or
moved, or a chunk of another put (another K, another id) does not open. K is fresh for every put, so no nonce
is ever used twice under one key.

What the machine is sealed (``ContentKey``) is K together with the content's SHA-256, checked once every chunk
has opened. The digest is sealed rather than signed in the clear, since a hub could test guesses of a short
content (a PIN, a password file) against a plain SHA-256. Sizes are not hidden: a ciphertext is
``TAG_BYTES`` longer per chunk than its content.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.orders import FILE_CHUNK_SIZE

KEY_BYTES = 32
DIGEST_BYTES = 32  # SHA-256
PUT_ID_BYTES = 16
TAG_BYTES = 16  # Poly1305's
# Content bytes per chunk, so that each encrypted chunk is exactly one FILE_CHUNK, as a plain put's chunk is: the
# upload and the delivery carry chunk i of the stream as frame i, and a daemon can open chunks as they come.
CHUNK_BYTES = FILE_CHUNK_SIZE - TAG_BYTES
MAX_CHUNK_BYTES = 1024 * 1024  # what a daemon accepts (it reads one encrypted chunk at a time into memory)
_AAD_LABEL = "crc-sealed-file-v1"


def chunk_count(size: int, chunk_size: int = CHUNK_BYTES) -> int:
    """How many chunks a content of ``size`` bytes is sealed in (at least one: an empty file is one tag)."""
    return max(1, -(-size // chunk_size))


def sealed_size(size: int, chunk_size: int = CHUNK_BYTES) -> int:
    """The size of the sealed stream of a content of ``size`` bytes: each chunk grows by its tag."""
    return size + TAG_BYTES * chunk_count(size, chunk_size)


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _associated(put_id: bytes, index: int, count: int) -> bytes:
    return pack([_AAD_LABEL, put_id, index, count])


def _check_layout(key: bytes, put_id: bytes, size: int, chunk_size: int) -> None:
    if len(key) != KEY_BYTES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"a content key is {KEY_BYTES} bytes", size=len(key))
    if len(put_id) != PUT_ID_BYTES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"a put id is {PUT_ID_BYTES} bytes", size=len(put_id))
    if not 0 < chunk_size <= MAX_CHUNK_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_FIELD, f"a sealed file's chunks hold 1 to {MAX_CHUNK_BYTES} bytes", size=chunk_size
        )
    if size < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, "a content size is not negative", size=size)


@dataclass(frozen=True)
class ContentKey:
    """What each target machine is sealed: the put's content key K and the content's SHA-256 (raw)."""

    key: bytes
    sha256: bytes

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES or len(self.sha256) != DIGEST_BYTES:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"a sealed content key is {KEY_BYTES + DIGEST_BYTES} bytes", field="sealed"
            )

    def to_bytes(self) -> bytes:
        return self.key + self.sha256

    @classmethod
    def from_bytes(cls, raw: bytes) -> ContentKey:
        """Raises ProtocolError BAD_FIELD for bytes that ``to_bytes`` did not make."""
        if len(raw) != KEY_BYTES + DIGEST_BYTES:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"a sealed content key is {KEY_BYTES + DIGEST_BYTES} bytes", field="sealed"
            )
        return cls(raw[:KEY_BYTES], raw[KEY_BYTES:])

    def __repr__(self) -> str:  # never print key material
        return "ContentKey(...)"


class ContentSealer:
    """Seals one put's content chunk by chunk, in order (the master's side)."""

    def __init__(self, key: bytes, put_id: bytes, size: int, chunk_size: int = CHUNK_BYTES) -> None:
        _check_layout(key, put_id, size, chunk_size)
        self._aead = ChaCha20Poly1305(key)
        self.put_id, self.size, self.chunk_size = put_id, size, chunk_size
        self.count = chunk_count(size, chunk_size)
        self.sealed = 0  # chunks sealed so far

    def expected(self, index: int) -> int:
        """How many content bytes chunk ``index`` holds (all are full but the last)."""
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def seal(self, chunk: bytes) -> bytes:
        """The next chunk, encrypted and authenticated in its place.

        Raises:
            ValueError: the chunk is not as long as its place in a content of ``size`` bytes says (the content
                changed while it was read), or every chunk was sealed already.
        """
        index = self.sealed
        if index >= self.count:
            raise ValueError(f"all {self.count} chunks of this content are sealed already")
        if len(chunk) != self.expected(index):
            raise ValueError(
                f"chunk {index} holds {len(chunk)} bytes, not {self.expected(index)}: the content is not the "
                f"{self.size} bytes it was said to be (did the file change while it was read?)"
            )
        self.sealed += 1
        return self._aead.encrypt(_nonce(index), chunk, _associated(self.put_id, index, self.count))


class ContentOpener:
    """Opens one put's sealed chunks in order and says when the stream is whole (the daemon's side)."""

    def __init__(self, key: bytes, put_id: bytes, size: int, chunk_size: int = CHUNK_BYTES) -> None:
        _check_layout(key, put_id, size, chunk_size)
        self._aead = ChaCha20Poly1305(key)
        self.put_id, self.size, self.chunk_size = put_id, size, chunk_size
        self.count = chunk_count(size, chunk_size)
        self.opened = 0  # chunks opened so far

    def open(self, sealed: bytes) -> bytes:
        """The content of the next chunk, once it proves to be that very chunk of this put.

        Raises:
            ProtocolError: BAD_SIGNATURE: it does not open here (altered, moved, from another put, or the stream
                goes on past its last chunk).
        """
        index = self.opened
        if index >= self.count:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, f"the sealed file goes on past its {self.count} chunks", index=index
            )
        try:
            chunk = self._aead.decrypt(_nonce(index), sealed, _associated(self.put_id, index, self.count))
        except InvalidTag:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"chunk {index + 1} of {self.count} of the sealed file does not open: it was altered, moved, "
                "repeated or taken from another put on the way",
                index=index,
            ) from None
        self.opened += 1
        return chunk

    def finish(self) -> None:
        """Check that every chunk came.

        Raises:
            ProtocolError: BAD_SIGNATURE: the stream was cut short.
        """
        if self.opened != self.count:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"the sealed file was cut short: {self.opened} of its {self.count} chunks came",
                index=self.opened,
            )


def seal_content(key: bytes, put_id: bytes, data: bytes, chunk_size: int = CHUNK_BYTES) -> list[bytes]:
    """``data`` sealed, as its list of chunks (``ContentSealer`` streams it instead)."""
    sealer = ContentSealer(key, put_id, len(data), chunk_size)
    return [sealer.seal(data[i * chunk_size : (i + 1) * chunk_size]) for i in range(sealer.count)]


def open_content(key: bytes, put_id: bytes, size: int, chunks: list[bytes], chunk_size: int = CHUNK_BYTES) -> bytes:
    """What ``seal_content`` sealed, once every chunk opened in its place and none is missing.

    Raises:
        ProtocolError: BAD_SIGNATURE as ``ContentOpener`` has it.
    """
    opener = ContentOpener(key, put_id, size, chunk_size)
    opened = b"".join(opener.open(chunk) for chunk in chunks)
    opener.finish()
    return opened
