"""The master's side of a sealed put (clients/master/sealed_puts.py): the content sealed once, as it is read, and
each machine's body carrying the content key sealed to that machine, for its order and path alone."""

from __future__ import annotations

import hashlib
import io
import secrets

import pytest

from clients.master.models import MachineInfo
from clients.master.sealed_puts import SealedPut
from protocol import Identity
from protocol.order_bodies import PutFileBody, file_context, parse_body
from protocol.orders import OrderKind
from protocol.sealed_files import ContentKey, open_content
from protocol.sealing import sealing_key, unseal

WEB, DB = Identity.generate(secrets.token_bytes), Identity.generate(secrets.token_bytes)
CONTENT = b"api_key = 'k3y-in-a-file'\n" * 30  # 810 bytes: 4 chunks of 256


def machine(identity: Identity, name: str, key: str | None = None) -> MachineInfo:
    sealing = sealing_key(identity).to_text() if key is None else key
    return MachineInfo(identity.id, name, "linux", name, identity.public.to_text(), "ready", sealing_key=sealing)


def test_each_machine_opens_the_one_upload_with_the_key_sealed_to_it_for_its_order_and_path() -> None:
    put = SealedPut("/etc/app/key.conf", 0o600, len(CONTENT), secrets.token_bytes, chunk_size=256)
    chunks = list(put.chunks(io.BytesIO(CONTENT).read))
    assert len(chunks) == 4 and all(b"k3y" not in chunk for chunk in chunks)
    for identity, name, order_id in ((WEB, "web", "order-web"), (DB, "db", "order-db")):
        body = parse_body(OrderKind.PUT_FILE, put.body("shop", machine(identity, name), order_id))
        assert isinstance(body, PutFileBody) and body.sealed is not None
        # What the hub checks the upload against: the ciphertext, exactly as uploaded.
        assert (body.sha256, body.size, body.chunks) == (
            hashlib.sha256(b"".join(chunks)).hexdigest(), sum(map(len, chunks)), len(chunks)
        )  # fmt: skip
        context = file_context("shop", identity.id, order_id, "/etc/app/key.conf")
        key = ContentKey.from_bytes(unseal(identity, body.sealed.key, context))
        assert key.sha256 == hashlib.sha256(CONTENT).digest()
        assert open_content(key.key, body.sealed.put, body.sealed.size, chunks, 256) == CONTENT
    assert put.upload_id == f"sealed-{put.put_id.hex()}"


def test_a_machine_without_a_usable_sealing_key_is_refused_as_for_secrets() -> None:
    put = SealedPut("/x", 0o644, 3, secrets.token_bytes)
    refusal = put.refusal("shop", [machine(WEB, "web"), machine(DB, "db", key="")])
    assert refusal is not None and "machine 'db' of 'shop' has no sealing key" in refusal
    assert "crc machine rotate-key shop db" in refusal
    assert "unusable sealing key" in (put.refusal("shop", [machine(DB, "db", key="x25519:AAAA")]) or "")
    assert put.refusal("shop", [machine(WEB, "web")]) is None


def test_a_content_that_changes_while_it_is_read_or_is_not_sealed_whole_is_never_signed() -> None:
    shorter = SealedPut("/x", 0o644, 600, secrets.token_bytes, chunk_size=256)
    with pytest.raises(ValueError, match="not the 600 bytes"):
        list(shorter.chunks(io.BytesIO(b"y" * 500).read))
    longer = SealedPut("/x", 0o644, 600, secrets.token_bytes, chunk_size=256)
    with pytest.raises(ValueError, match="longer than the 600 bytes"):
        list(longer.chunks(io.BytesIO(b"y" * 601).read))
    with pytest.raises(ValueError, match="only once its whole content is sealed"):
        SealedPut("/x", 0o644, 600, secrets.token_bytes).body("shop", machine(WEB, "web"), "order-1")
