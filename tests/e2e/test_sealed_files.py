"""Sealed files end to end (``crc put --secret``, ``Master.put_file(..., sealed=True)``): a real hub and daemons.

The content is uploaded once, encrypted, for every target; each machine opens it with the key sealed to it for
its own order and installs the exact file, while the hub's SQLite files (WAL included), its log, the events and
the stored results hold none of it. A hub that swaps the stored chunks of two sealed puts, or their keys between
two orders, gets nothing installed (the store is edited while the machine is offline, then it starts). A machine
without a sealing key is refused before anything is uploaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgpack
import pytest

from clients.daemon.files import TEMP_PREFIX
from clients.master.sdk import Master, MasterError
from protocol import PublicKey
from protocol.messages import MachineCertify
from protocol.sealed_files import CHUNK_BYTES
from tests.e2e.support import Deployment, HubProcess, assert_one_line_error, run_crc, wait_results
from tests.e2e.test_metrics import scrape

Deploy = Callable[..., Awaitable[Deployment]]
MARK = b"Sw0rdf1sh-sealed-content"
# Recognisable in every chunk: a line with the mark every 64 bytes, over three chunks.
CONTENT = b"".join(b"%s line %028d\n" % (MARK, i) for i in range((2 * CHUNK_BYTES + 4321) // 64))


def files_holding(folder: Path, needle: bytes) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and needle in path.read_bytes()]


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


async def test_crc_put_secret_gives_both_machines_the_exact_file_and_the_hub_never_holds_its_content(
    hub: HubProcess, deploy: Deploy, tmp_path: Path
) -> None:
    deployment = await deploy("vault", "web", "db")
    local = tmp_path / "db.conf"
    local.write_bytes(CONTENT)
    target = tmp_path / "installed" / "db.conf"

    put = await asyncio.to_thread(run_crc, hub, "put", "vault", "all", str(local), str(target), "--mode", "600",
                                  "--secret", "--timeout", "30")  # fmt: skip

    assert put.returncode == 0, put.stderr
    assert target.read_bytes() == CONTENT and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not [p for p in target.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    stored = run_crc(hub, "--json", "results", "vault")
    assert stored.returncode == 0 and stored.stdout.count('"status": "succeeded"') == 2, stored.stdout
    # The hub stored the orders (path, sizes) and the ciphertext, never the content nor its digest. The chunks are
    # deleted once the results came; their old pages and the WAL are still in the files grepped below (an
    # unsealed put's content is found there).
    with _db(hub) as db:
        assert db.execute("SELECT COUNT(*) FROM order_chunks").fetchone() == (0,)
    digest = hashlib.sha256(CONTENT).hexdigest().encode()
    for needle in (MARK, digest):
        assert files_holding(hub.data_dir, needle) == []  # the SQLite database and its WAL
        assert needle not in hub.log_text().encode()
        for daemon in deployment.running.values():  # its journal and spool hold ciphertext only
            assert files_holding(daemon.state_dir, needle) == [] and needle not in daemon.log_text().encode()
    assert any(files_holding(hub.data_dir, str(target).encode())), "the path is the hub's to see"
    events = run_crc(hub, "--json", "watch", "vault", "--no-follow")
    assert events.returncode == 0 and str(target) in events.stdout
    assert MARK.decode() not in events.stdout + stored.stdout and digest.decode() not in events.stdout + stored.stdout


async def test_a_sealed_file_of_many_chunks_reaches_every_machine_intact(
    master: Master, deploy: Deploy, tmp_path: Path
) -> None:
    await deploy("bigseal", "a", "b")
    data = os.urandom(3 * 1024 * 1024 + 17)  # 13 chunks, an odd tail
    target = tmp_path / "delivered" / "blob.bin"
    results = await master.put_file("bigseal", "all", data, str(target), mode=0o640, wait_timeout=60, sealed=True)
    assert [(r.machine, r.status, r.verified) for r in results] == [("a", "succeeded", True), ("b", "succeeded", True)]
    assert target.read_bytes() == data and stat.S_IMODE(target.stat().st_mode) == 0o640


def _order_ids(hub: HubProcess, paths: list[Path]) -> list[str]:
    with _db(hub) as db:
        rows = db.execute("SELECT id, body FROM orders WHERE kind = 'put_file'").fetchall()
    by_path = {msgpack.unpackb(body, raw=False)["body"]["path"]: order_id for order_id, body in rows}
    return [by_path[str(path)] for path in paths]


async def test_a_hub_swapping_the_chunks_of_two_sealed_puts_or_their_keys_gets_nothing_installed(
    hub: HubProcess, master: Master, deploy: Deploy, tmp_path: Path
) -> None:
    box = await deploy("tamper", "box", start=False)  # offline while its orders are tampered with
    paths = [tmp_path / "out" / name for name in ("one", "two", "three", "four")]
    contents = [bytes([65 + i]) * (CHUNK_BYTES + 100) + MARK for i in range(4)]  # two chunks each, same layout
    for path, content in zip(paths, contents, strict=True):
        (queued,) = await master.put_file("tamper", "box", content, str(path), wait_timeout=0.2, sealed=True)
        assert queued.status == "queued"
    one, two, three, four = _order_ids(hub, paths)

    with _db(hub) as db:
        # The chunks of one and two change places: each order names the other's ciphertext.
        db.execute("UPDATE order_chunks SET order_id = 'moving' WHERE order_id = ?", (one,))
        db.execute("UPDATE order_chunks SET order_id = ? WHERE order_id = ?", (one, two))
        db.execute("UPDATE order_chunks SET order_id = ? WHERE order_id = 'moving'", (two,))
        # Three and four swap their sealed content keys (all else as signed).
        bodies = {i: msgpack.unpackb(db.execute("SELECT body FROM orders WHERE id = ?", (i,)).fetchone()[0],
                                     raw=False) for i in (three, four)}  # fmt: skip
        bodies[three]["body"]["sealed"], bodies[four]["body"]["sealed"] = (
            bodies[four]["body"]["sealed"], bodies[three]["body"]["sealed"],
        )  # fmt: skip
        for order_id, wire in bodies.items():
            db.execute("UPDATE orders SET body = ? WHERE id = ?", (msgpack.packb(wire, use_bin_type=True), order_id))

    box.start("box")
    results = {r.order_id: r for r in await wait_results(master, "tamper", [one, two, three, four], timeout=30)}
    assert {r.status for r in results.values()} == {"rejected"}, results
    assert "does not open" in results[one].error or "not the one the master signed" in results[one].error
    assert "does not open" in results[two].error or "not the one the master signed" in results[two].error
    assert all("signature does not verify" in results[i].error for i in (three, four)), results
    assert not paths[0].parent.exists() or list(paths[0].parent.iterdir()) == []  # nothing, not even a temp file
    assert files_holding(box.daemon("box").state_dir, MARK) == []


async def test_a_machine_without_a_sealing_key_is_refused_before_anything_is_uploaded(
    hub: HubProcess, master: Master, deploy: Deploy, tmp_path: Path
) -> None:
    await deploy("older", "box")
    box = (await master.scenario("older")).machine("box")
    # What a crc from before sealing keys certified: the same machine, without one.
    v1 = master._certify("older", "box", PublicKey.from_text(box.public_key), "linux", "box", {})
    await master.request(MachineCertify("older", [v1.to_wire()]), scenario="older")
    assert (await master.scenario("older")).machine("box").sealing_key == ""
    target = tmp_path / "never"

    with pytest.raises(MasterError) as refused:
        await master.put_file("older", "box", CONTENT, str(target), sealed=True, wait_timeout=15)
    assert "nothing was sent" in str(refused.value) and "crc machine rotate-key older box" in str(refused.value)
    local = tmp_path / "db.conf"
    local.write_bytes(CONTENT)
    cli = await asyncio.to_thread(run_crc, hub, "put", "older", "box", str(local), str(target), "--secret")
    assert_one_line_error(cli, 1, "nothing was sent", "has no sealing key", "crc machine rotate-key older box")
    await master.scenarios()  # a round trip: the hub handled whatever was sent before it
    assert (await scrape(hub))["crc_upload_bytes"][()] == 0, "no chunk was uploaded"
    assert [r for r in await master.results("older") if r.kind == "put_file"] == [] and not target.exists()
    missing = await asyncio.to_thread(run_crc, hub, "put", "older", "box", str(tmp_path / "nope"), "/x", "--secret")
    assert_one_line_error(missing, 2, "crc put: cannot read", "nope")
