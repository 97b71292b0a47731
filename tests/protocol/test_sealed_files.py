"""Sealed file contents (protocol/sealed_files.py): the STREAM-style chunk AEAD opens a content whole, in order,
under its own put's key and id only; and a sealed PutFileBody binds the ciphertext's size and chunk count to the
content's."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace

import pytest

from protocol import Identity, ProtocolError
from protocol.errors import ErrorCode
from protocol.order_bodies import SEALED_CONTENT_KEY, PutFileBody, SealedContent, file_context, parse_body
from protocol.orders import FILE_CHUNK_SIZE, OrderKind, file_chunks
from protocol.sealed_files import (
    CHUNK_BYTES,
    TAG_BYTES,
    ContentKey,
    ContentOpener,
    ContentSealer,
    chunk_count,
    open_content,
    seal_content,
    sealed_size,
)
from protocol.sealing import seal, sealing_key, unseal

KEY, OTHER_KEY = secrets.token_bytes(32), secrets.token_bytes(32)
PUT, OTHER_PUT = secrets.token_bytes(16), secrets.token_bytes(16)
SMALL = 64  # chunk size for the tests: several chunks from a few hundred bytes


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL, 5 * SMALL + 7])
def test_a_content_of_any_size_opens_whole_and_grows_by_one_tag_per_chunk(size: int) -> None:
    data = secrets.token_bytes(size)
    chunks = seal_content(KEY, PUT, data, SMALL)
    assert len(chunks) == chunk_count(size, SMALL) == max(1, -(-size // SMALL))
    assert sum(map(len, chunks)) == sealed_size(size, SMALL) == size + TAG_BYTES * len(chunks)
    assert open_content(KEY, PUT, size, chunks, SMALL) == data


def test_each_chunk_of_the_default_size_is_one_frame_of_a_plain_upload() -> None:
    data = secrets.token_bytes(2 * CHUNK_BYTES + 5)
    chunks = seal_content(KEY, PUT, data)
    # The upload (file_chunks of the ciphertext, as the hub and daemons cut it) is the stream's chunks one to one.
    assert file_chunks(b"".join(chunks)) == chunks and all(len(c) == FILE_CHUNK_SIZE for c in chunks[:-1])
    assert open_content(KEY, PUT, len(data), chunks) == data


def _refused(chunks: list[bytes], size: int, key: bytes = KEY, put: bytes = PUT) -> str:
    with pytest.raises(ProtocolError) as caught:
        open_content(key, put, size, chunks, SMALL)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE
    return caught.value.message


def test_chunks_reordered_dropped_repeated_cut_short_or_extended_do_not_open() -> None:
    data = secrets.token_bytes(4 * SMALL + 9)
    c = seal_content(KEY, PUT, data, SMALL)
    assert "chunk 2 of 5" in _refused([c[0], c[2], c[1], c[3], c[4]], len(data))  # reordered
    assert "chunk 2 of 5" in _refused([c[0], c[2], c[3], c[4]], len(data))  # one dropped
    assert "chunk 3 of 5" in _refused([c[0], c[1], c[1], c[2], c[3]], len(data))  # one repeated
    assert "cut short: 4 of its 5 chunks" in _refused(c[:4], len(data))  # the last dropped: truncated
    assert "past its 5 chunks" in _refused([*c, c[4]], len(data))  # one too many
    # A stream cut at a chunk boundary does not pass for a shorter content: the count is in every chunk.
    assert "chunk 1 of 4" in _refused(c[:4], 4 * SMALL)


def test_a_chunk_from_another_put_or_under_another_key_does_not_open() -> None:
    data = b"A" * (3 * SMALL)
    mine, other_put, other_key = (seal_content(k, p, data, SMALL) for k, p in
                                  [(KEY, PUT), (KEY, OTHER_PUT), (OTHER_KEY, PUT)])  # fmt: skip
    assert "chunk 2 of 3" in _refused([mine[0], other_put[1], mine[2]], len(data))
    assert "chunk 3 of 3" in _refused([mine[0], mine[1], other_key[2]], len(data))
    assert "chunk 1 of 3" in _refused(mine, len(data), put=OTHER_PUT)
    assert "chunk 1 of 3" in _refused(mine, len(data), key=OTHER_KEY)


@pytest.mark.parametrize("where", [0, 1, SMALL, SMALL + TAG_BYTES - 1, 2 * (SMALL + TAG_BYTES) + 3])
def test_any_bit_flipped_in_the_ciphertext_is_refused(where: int) -> None:
    data = secrets.token_bytes(2 * SMALL + 10)
    stream = bytearray(b"".join(seal_content(KEY, PUT, data, SMALL)))
    stream[where] ^= 0x01
    size = SMALL + TAG_BYTES
    assert "does not open" in _refused([bytes(stream[i : i + size]) for i in range(0, len(stream), size)], len(data))


def test_the_sealer_refuses_a_content_that_is_not_the_size_it_was_said_to_be() -> None:
    sealer = ContentSealer(KEY, PUT, 2 * SMALL, SMALL)
    with pytest.raises(ValueError, match="holds 10 bytes, not 64"):
        sealer.seal(b"x" * 10)
    sealer.seal(b"x" * SMALL), sealer.seal(b"x" * SMALL)
    with pytest.raises(ValueError, match="sealed already"):
        sealer.seal(b"")
    with pytest.raises(ProtocolError, match="content key is 32 bytes"):
        ContentOpener(b"short", PUT, 0)


def test_the_content_key_opens_only_for_its_machine_order_and_path() -> None:
    machine, other = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
    content_key = ContentKey(KEY, hashlib.sha256(b"content").digest())
    assert repr(content_key) == "ContentKey(...)"  # never key material in a log line
    context = file_context("shop", machine.id, "order-1", "/etc/shop/db.conf")
    sealed = seal(sealing_key(machine), content_key.to_bytes(), context)
    assert len(sealed) == SEALED_CONTENT_KEY
    assert ContentKey.from_bytes(unseal(machine, sealed, context)) == content_key
    for moved in (replace(context, machine=other.id), replace(context, order="order-2"),
                  replace(context, name="/etc/other"), replace(context, purpose="secret")):  # fmt: skip
        with pytest.raises(ProtocolError, match="does not open on this machine"):
            unseal(machine, sealed, moved)
    with pytest.raises(ProtocolError, match="does not open on this machine"):
        unseal(other, sealed, context)


def test_a_sealed_file_body_survives_the_wire_and_binds_the_ciphertexts_layout() -> None:
    content = SealedContent(b"k" * SEALED_CONTENT_KEY, PUT, 3 * SMALL + 1, SMALL)
    body = PutFileBody.for_sealed("/etc/db.conf", 0o600, content, "ab" * 32)
    assert (body.size, body.chunks) == (3 * SMALL + 1 + 4 * TAG_BYTES, 4)
    wire = body.to_wire()
    assert wire["sealed"] == {"key": content.key, "put": PUT, "size": 3 * SMALL + 1, "chunk_size": SMALL}
    assert parse_body(OrderKind.PUT_FILE, wire) == body
    # A plain file's body is as it was before sealed files: older daemons take it.
    assert set(PutFileBody.for_content("/x", b"y", 0o644).to_wire()) == {"path", "mode", "size", "sha256", "chunks"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"chunks": 5}, "travels as 4 chunks"),
        ({"size": 1}, "travels as 4 chunks"),
        ({"sealed": {"key": b"k" * 10}}, "'key' must be a sealed content key"),
        ({"sealed": {"put": b"p"}}, "'put' must be a put id of 16 bytes"),
        ({"sealed": {"chunk_size": 0}}, "'chunk_size' must be a chunk size"),
        ({"sealed": {"extra": 1}}, "does not know: extra"),
        ({"sealed": "yes"}, "'sealed' must be a map"),
    ],
)
def test_a_sealed_file_body_that_does_not_add_up_is_refused(change: dict[str, object], fragment: str) -> None:
    content = SealedContent(b"k" * SEALED_CONTENT_KEY, PUT, 3 * SMALL + 1, SMALL)
    wire = PutFileBody.for_sealed("/etc/db.conf", 0o600, content, "ab" * 32).to_wire()
    for name, value in change.items():
        wire[name] = {**wire["sealed"], **value} if isinstance(value, dict) else value
    with pytest.raises(ProtocolError, match=fragment) as caught:
        parse_body(OrderKind.PUT_FILE, wire)
    assert caught.value.code is ErrorCode.BAD_FIELD
