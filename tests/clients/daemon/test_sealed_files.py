"""A daemon installs a sealed file only when its content key was sealed to it, for this very order and path, and
every chunk opens in its place; anything else is refused (REJECTED) with nothing written and no partial file
left, the old content kept. Neither the key nor the content ever reaches its journal or spool. Real ``Daemon``,
journal and files; only the hub link is a stand-in, holding only what a hub holds: signed orders, ciphertexts."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from clients.daemon import keys
from clients.daemon.agent import Daemon
from clients.daemon.files import TEMP_PREFIX
from protocol import Envelope, Identity, Order, OrderKind
from protocol.messages import FileChunk
from protocol.order_bodies import PutFileBody, SealedContent, file_context
from protocol.sealed_files import ContentKey, seal_content
from protocol.sealing import seal, sealing_key
from tests.clients.daemon.test_secrets import DB, MASTER, SCENARIO, WEB, _daemon, deliver, hub_of

CONTENT = b"db_password = 'Sw0rdf1sh-sealed'\n" * 40  # recognisable, and several chunks of CHUNK
CHUNK = 256  # content bytes per chunk here (the master uses CHUNK_BYTES): 1320 bytes make 6 chunks
_ids = itertools.count()


@pytest.fixture
async def web(tmp_path: Path) -> Any:
    daemon, worker = await _daemon(tmp_path, WEB)
    yield daemon
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    daemon.journal.close()


class Put:
    """A sealed put as a master makes it: content key, put id, the chunks (shared) and one order per machine."""

    def __init__(self, data: bytes = CONTENT) -> None:
        self.data = data
        self.key, self.put = secrets.token_bytes(32), secrets.token_bytes(16)
        self.chunks = seal_content(self.key, self.put, data, CHUNK)

    def order(
        self,
        machine: Identity,
        path: Path,
        sealed_for: tuple[Identity, str, str] | None = None,
        digest: bytes | None = None,
        chunks: list[bytes] | None = None,
    ) -> Order:
        """The signed order for ``machine``; its content key sealed to (identity, order id, path) as given, by
        default to ``machine`` for this order and ``path``: what the master does."""
        order_id = f"put-{next(_ids)}"
        to, for_order, for_path = sealed_for or (machine, order_id, str(path))
        content_key = ContentKey(self.key, digest or hashlib.sha256(self.data).digest())
        sealed_key = seal(sealing_key(to), content_key.to_bytes(),
                          file_context(SCENARIO, to.id, for_order or order_id, for_path))  # fmt: skip
        travelled = hashlib.sha256(b"".join(chunks or self.chunks)).hexdigest()
        body = PutFileBody.for_sealed(str(path), 0o640, SealedContent(sealed_key, self.put, len(self.data), CHUNK),
                                      travelled)  # fmt: skip
        wire = body.to_wire()
        return Order(order_id, SCENARIO, machine.id, OrderKind.PUT_FILE, wire, time.time() + 3600, MASTER.id).signed(
            MASTER
        )


async def put(daemon: Daemon, order: Order, chunks: list[bytes]) -> dict[str, Any]:
    """Deliver the order, then its chunks, as a hub does; the signed result."""
    task = asyncio.create_task(deliver(daemon, order))
    await asyncio.sleep(0)  # the order is taken first, then its chunks follow
    for index, chunk in enumerate(chunks):
        envelope = Envelope(f"chunk-{next(_ids)}", "hub", daemon.config.machine_id, SCENARIO, time.time(),
                            FileChunk(order.id, index, chunk))  # fmt: skip
        await daemon._on_file_chunk(envelope)
    return await task


def nothing_left_beside(path: Path) -> bool:
    return not [p for p in path.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]


def holds_nothing_secret(daemon: Daemon, sealed: Put) -> None:
    for found in daemon.options.state_dir.rglob("*"):
        if found.is_file():
            raw = found.read_bytes()
            assert b"Sw0rdf1sh" not in raw and sealed.key not in raw, found
    sent = repr(hub_of(daemon).sent).encode()
    assert b"Sw0rdf1sh" not in sent and hashlib.sha256(sealed.data).hexdigest().encode() not in sent


async def test_a_file_sealed_for_this_order_is_installed_and_neither_its_key_nor_its_content_is_kept(
    web: Daemon, tmp_path: Path
) -> None:
    target = tmp_path / "etc" / "db.conf"
    sealed = Put()
    order = sealed.order(WEB, target)
    assert len(sealed.chunks) == 6 and order.body["chunks"] == 6

    result = await put(web, order, sealed.chunks)

    assert result["status"] == "succeeded", result["error"]
    assert target.read_bytes() == CONTENT and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert result["extra"] == {"path": str(target), "sealed": True}  # no digest of the content for the hub
    assert nothing_left_beside(target) and list(web.spool_dir.iterdir()) == []
    holds_nothing_secret(web, sealed)


async def test_an_empty_sealed_file_is_one_chunk_and_installs(web: Daemon, tmp_path: Path) -> None:
    sealed = Put(b"")
    result = await put(web, sealed.order(WEB, tmp_path / "empty"), sealed.chunks)
    assert result["status"] == "succeeded", result["error"]
    assert (tmp_path / "empty").read_bytes() == b""


@pytest.mark.parametrize(
    "sealed_for",
    [(DB, "", "{target}"), (WEB, "put-elsewhere", "{target}"), (WEB, "", "/etc/another/path")],
    ids=["another-machine", "another-order", "another-path"],
)
async def test_a_file_key_sealed_for_another_machine_order_or_path_is_refused_and_nothing_is_written(
    web: Daemon, tmp_path: Path, sealed_for: tuple[Identity, str, str]
) -> None:
    target = tmp_path / "db.conf"
    target.write_bytes(b"old content\n")
    to, for_order, for_path = sealed_for
    sealed = Put()
    # Signed by the master as it stands (as if its signature had not caught the move): sealing refuses it alone.
    order = sealed.order(WEB, target, (to, for_order, for_path.format(target=target)))

    result = await put(web, order, sealed.chunks)

    assert result["status"] == "rejected"
    assert f"file {str(target)!r} does not open on this machine" in result["error"]
    assert "another order or another path" in result["error"]
    assert target.read_bytes() == b"old content\n" and nothing_left_beside(target)
    entry = web.journal.get(order.id)  # refused before it was taken: only its signed refusal is kept
    assert entry is not None and entry.result is not None and entry.result["status"] == "rejected"
    assert list(web.spool_dir.iterdir()) == []
    holds_nothing_secret(web, sealed)


def _tampered(chunks: list[bytes], other: list[bytes], how: str) -> list[bytes]:
    c = list(chunks)
    if how == "bit-flipped":
        c[3] = c[3][:10] + bytes([c[3][10] ^ 1]) + c[3][11:]
    elif how == "reordered":
        c[1], c[2] = c[2], c[1]
    elif how == "dropped-and-repeated":
        c[4] = c[3]
    elif how == "from-another-put":
        c[2] = other[2]
    elif how == "all-from-another-put":
        c = list(other)
    elif how == "last-cut-short":
        c[-1] = c[-1][:-5]
    return c


@pytest.mark.parametrize(
    "how",
    ["bit-flipped", "reordered", "dropped-and-repeated", "from-another-put", "all-from-another-put", "last-cut-short"],
)
async def test_chunks_a_hub_alters_reorders_swaps_or_cuts_install_nothing(
    web: Daemon, tmp_path: Path, how: str
) -> None:
    target = tmp_path / "db.conf"
    target.write_bytes(b"old content\n")
    sealed, other = Put(), Put(b"x" * len(CONTENT))
    chunks = _tampered(sealed.chunks, other.chunks, how)
    # Even with the tampered ciphertext's own SHA-256 signed (a hub cannot do that: it would need the master's
    # key), no chunk opens out of its place, and nothing is written.
    for order in (sealed.order(WEB, target), sealed.order(WEB, target, chunks=chunks)):
        result = await put(web, order, chunks)
        assert result["status"] == "rejected", result
        assert result["error"].startswith("refused by the daemon: ") and "nothing was written" in result["error"]
        assert "the master signed" in result["error"] or "does not open" in result["error"]
    assert target.read_bytes() == b"old content\n" and nothing_left_beside(target)
    assert list(web.spool_dir.iterdir()) == []
    holds_nothing_secret(web, sealed)


async def test_a_content_that_is_not_the_one_whose_digest_was_sealed_is_refused(web: Daemon, tmp_path: Path) -> None:
    sealed = Put()
    order = sealed.order(WEB, tmp_path / "db.conf", digest=hashlib.sha256(b"another content").digest())
    result = await put(web, order, sealed.chunks)
    assert result["status"] == "rejected" and "not the one sealed with its key" in result["error"]
    assert not (tmp_path / "db.conf").exists() and nothing_left_beside(tmp_path / "db.conf")


async def test_a_file_sealed_before_a_key_rotation_still_opens_after_it(web: Daemon, tmp_path: Path) -> None:
    sealed = Put()
    order = sealed.order(WEB, tmp_path / "db.conf")  # queued before the rotation, sealed to the old key
    keys.make_pending(web.config, web.options.state_dir)  # what ROTATE_KEY does, then the reconnect:
    rotated = keys.pending_config(web.config, web.options.state_dir)
    assert rotated is not None
    keys.promote_pending(rotated, web.options.state_dir, previous=web.config.identity)
    web.config = rotated
    result = await put(web, order, sealed.chunks)
    assert result["status"] == "succeeded", result["error"]
    assert (tmp_path / "db.conf").read_bytes() == CONTENT
