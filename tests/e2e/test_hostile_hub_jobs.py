"""A hub whose store was tampered with cannot change, swap, plant or roll back a stored job (issue 15, item 8).

Every attack here edits the running hub's SQLite file directly, as someone holding the hub's data dir would; none
uses the master's private key. Each job's script would leave a mark in the test's folder if it ever ran, so "nothing
ran" is checked on the daemons' side as well as by counting the orders the hub was sent.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from clients.master.sdk import Master, MasterError, UnsignedJobError
from protocol import Identity
from protocol.jobs import JobStatement
from protocol.parameters import parse_spec
from tests.e2e.support import Deployment, HubProcess, run_crc

pytestmark = pytest.mark.asyncio

Deploy = Callable[..., Awaitable[Deployment]]
NOT_SIGNED = "nothing was sent: the hub's copy of job 'report' is not signed by this master"


def _db(hub: HubProcess) -> sqlite3.Connection:
    return sqlite3.connect(hub.data_dir / "hub.sqlite3", isolation_level=None)


def _pack(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _marking(marks: Path, label: str) -> str:
    """A script that leaves ``marks/label`` behind if it ever runs."""
    return f"echo ran >> {marks / label}\necho {label}\n"


def _row(hub: HubProcess, name: str) -> tuple[Any, ...]:
    with _db(hub) as db:
        row: tuple[Any, ...] = db.execute(
            "SELECT script, version, statement, signature FROM jobs WHERE name = ?", (name,)
        ).fetchone()
    return row


def _orders(hub: HubProcess) -> int:
    with _db(hub) as db:
        count: int = db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    return count


async def _refused_everywhere(
    hub: HubProcess,
    master: Master,
    marks: Path,
    message: str,
    *,
    name: str = "report",
    error: type[MasterError] = MasterError,
) -> None:
    """The SDK, the CLI and a plan all refuse job ``name`` with ``message`` (the CLI in one line, exit 1), and
    nothing is sent to a daemon, nor runs on one."""
    before = _orders(hub)
    with pytest.raises(error, match=re.escape(message)):
        await master.run_job("shop", "all", name, wait_timeout=20)
    with pytest.raises(error, match=re.escape(message)):
        await master.run_plan("shop", {"name": "p", "steps": [{"id": "s", "target": "all", "job": name}]})
    ran = await asyncio.to_thread(run_crc, hub, "job", "run", "shop", "all", name, "--timeout", "20")
    assert (ran.returncode, ran.stderr.strip().splitlines()) == (1, [f"crc: {message}"]), ran.stderr
    assert _orders(hub) == before, "nothing was sent to any daemon"
    with _db(hub) as db:
        assert db.execute("SELECT COUNT(*) FROM plans").fetchone()[0] == 0
    assert sorted(p.name for p in marks.iterdir()) == [], "nothing ran on any daemon"


async def _not_shown(hub: HubProcess, name: str = "report") -> None:
    shown = await asyncio.to_thread(run_crc, hub, "job", "show", name)
    assert shown.returncode == 1 and shown.stdout == "", shown.stdout
    assert shown.stderr.strip() == f"crc: the hub's copy of job {name!r} is not signed by this master"


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    folder = tmp_path / "marks"
    folder.mkdir()
    return folder


async def test_a_script_changed_in_the_store_with_its_version_unchanged_never_runs(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web", "db")
    await master.put_job("report", _marking(marks, "reviewed"))
    _, version, packed, _ = _row(hub, "report")
    statement = msgpack.unpackb(packed, raw=False)
    evil = _marking(marks, "evil")
    with _db(hub) as db:  # the attacker changes both copies of the script, and leaves the signature and version
        db.execute(
            "UPDATE jobs SET script = ?, statement = ? WHERE name = 'report'",
            (evil, _pack({**statement, "script": evil})),
        )
    assert _row(hub, "report")[1] == version == 1

    await _refused_everywhere(hub, master, marks, NOT_SIGNED)
    await _not_shown(hub)


async def test_only_the_script_column_changed_is_ignored_and_the_signed_script_runs(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web")
    await master.put_job("report", _marking(marks, "reviewed"))
    with _db(hub) as db:
        db.execute("UPDATE jobs SET script = ? WHERE name = 'report'", (_marking(marks, "evil"),))

    [result] = await master.run_job("shop", "web", "report", wait_timeout=20)
    assert result.ok and result.stdout == b"reviewed\n"
    assert sorted(p.name for p in marks.iterdir()) == ["reviewed"]


async def test_two_jobs_swapped_in_the_store_are_refused(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web", "db")
    await master.put_job("report", _marking(marks, "report"))
    await master.put_job("wipe", _marking(marks, "wipe"))
    report, wipe = _row(hub, "report"), _row(hub, "wipe")
    with _db(hub) as db:
        for name, (script, version, statement, signature) in (("report", wipe), ("wipe", report)):
            db.execute(
                "UPDATE jobs SET script = ?, version = ?, statement = ?, signature = ? WHERE name = ?",
                (script, version, statement, signature, name),
            )

    await _refused_everywhere(hub, master, marks, NOT_SIGNED)
    await _not_shown(hub)
    await _refused_everywhere(hub, master, marks, NOT_SIGNED.replace("'report'", "'wipe'"), name="wipe")
    await _not_shown(hub, "wipe")


async def test_a_job_the_master_never_added_is_refused(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    """The hub plants a job of its own: signed by a key that is not the master's, though claiming its id."""
    await deploy("shop", "web", "db")
    forger = Identity.generate(secrets.token_bytes)
    planted = JobStatement("", "", "report", 1, "sh", _marking(marks, "planted"), 1.0).signed(forger)
    claimed = {**planted.unsigned_wire(), "master": master.identity.id}
    with _db(hub) as db:
        db.execute(
            "INSERT INTO jobs (owner, name, shell, script, created, updated, version, statement, signature) "
            "VALUES (?, 'report', 'sh', ?, 1.0, 1.0, 1, ?, ?)",
            (master.identity.id, planted.script, _pack(claimed), planted.signature),
        )

    await _refused_everywhere(hub, master, marks, NOT_SIGNED)
    await _not_shown(hub)


async def test_an_older_signed_version_put_back_is_refused_and_adding_again_goes_on_from_the_newest(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path, tmp_path: Path
) -> None:
    await deploy("shop", "web", "db")
    script = tmp_path / "report.sh"
    script.write_text(_marking(marks, "v1"))
    assert "version 1" in (await asyncio.to_thread(run_crc, hub, "job", "add", "report", str(script))).stdout
    first = _row(hub, "report")
    script.write_text(_marking(marks, "v2"))
    assert "version 2" in (await asyncio.to_thread(run_crc, hub, "job", "add", "report", str(script))).stdout
    with _db(hub) as db:  # the attacker puts back the first version it kept, signature and all
        db.execute("UPDATE jobs SET script = ?, version = ?, statement = ?, signature = ? WHERE name = 'report'", first)

    older = (
        "nothing was sent: the hub's copy of job 'report' is version 1, older than version 2 this master signed: "
        "add it again (crc job add) if you mean to go back"
    )
    await _refused_everywhere(hub, master, marks, older)
    # A master that knows only what this answer shows (a bare key: no memory on its computer) still refuses it
    # once it has seen version 2 in its session, and numbers the next version above what it saw.
    async with await Master.connect(hub.url, master.identity, timeout=10) as elsewhere:
        with _db(hub) as db:
            db.execute("DELETE FROM jobs WHERE name = 'report'")
        third = await elsewhere.put_job("report", _marking(marks, "v3"))
        assert third["version"] == 1  # it never saw version 2: nothing to go on from
        assert (await master.put_job("report", _marking(marks, "v3")))["version"] == 3
        assert (await elsewhere.job("report"))["version"] == 3
        with _db(hub) as db:
            db.execute("UPDATE jobs SET script = ?, version = ?, statement = ?, signature = ? WHERE name = 'report'",
                       first)  # fmt: skip
        with pytest.raises(MasterError, match="is version 1, older than version 3"):
            await elsewhere.run_job("shop", "all", "report", wait=False)
    assert sorted(p.name for p in marks.iterdir()) == []


async def test_a_job_stored_before_signatures_is_shown_unsigned_and_refused_until_added_again(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path, tmp_path: Path
) -> None:
    await deploy("shop", "web")
    with _db(hub) as db:  # as a hub from before signed jobs left it
        db.execute(
            "INSERT INTO jobs (owner, name, shell, script, created, updated, version) "
            "VALUES (?, 'report', 'sh', ?, 1.0, 1.0, 4)",
            (master.identity.id, _marking(marks, "legacy")),
        )
    unsigned = (
        "nothing was sent: job 'report' was stored before jobs were signed: add it again "
        "(crc job add report FILE) to run it"
    )
    await _refused_everywhere(hub, master, marks, unsigned, error=UnsignedJobError)

    listed = await asyncio.to_thread(run_crc, hub, "job", "list")
    assert "unsigned" in listed.stdout
    shown = await asyncio.to_thread(run_crc, hub, "job", "show", "report")
    assert shown.returncode == 1 and "UNSIGNED" in shown.stdout and "crc job add" in shown.stderr
    with pytest.raises(UnsignedJobError):
        await master.job("report")

    script = tmp_path / "report.sh"
    script.write_text(_marking(marks, "signed"))
    added = await asyncio.to_thread(run_crc, hub, "job", "add", "report", str(script))
    assert added.returncode == 0 and "version 1, signed" in added.stdout, added.stderr
    ran = await asyncio.to_thread(run_crc, hub, "job", "run", "shop", "web", "report", "--timeout", "20")
    assert ran.returncode == 0 and "signed" in ran.stdout, ran.stderr
    assert sorted(p.name for p in marks.iterdir()) == ["signed"]


async def test_a_job_signed_for_one_scenario_does_not_run_in_another(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web")
    await deploy("prod", "web")
    await master.put_job("report", _marking(marks, "shop-only"), scenario="shop")
    before = _orders(hub)
    with pytest.raises(MasterError, match="nothing was sent: job 'report' is signed for scenario 'shop' only"):
        await master.run_job("prod", "all", "report", wait_timeout=20)
    assert _orders(hub) == before
    [result] = await master.run_job("shop", "web", "report", wait_timeout=20)
    assert result.ok and sorted(p.name for p in marks.iterdir()) == ["shop-only"]


async def test_a_plan_plays_the_signed_version_of_a_stored_job(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web")
    await master.put_job("report", _marking(marks, "planned"))
    await master.put_job("report", _marking(marks, "planned-v2"))
    submitted = await master.run_plan("shop", {"name": "p", "steps": [{"id": "s", "target": "web", "job": "report"}]})
    done = await master.wait_plan("shop", submitted["id"], timeout=60)
    assert done["done"]
    runs = await master.job_runs("shop", "report")
    assert [(r.version, r.result.status) for r in runs] == [(2, "succeeded")]
    assert sorted(p.name for p in marks.iterdir()) == ["planned-v2"]


async def test_a_version_asked_for_is_exactly_the_one_that_runs(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    await deploy("shop", "web")
    await master.put_job("report", _marking(marks, "v1"))
    first = _row(hub, "report")
    await master.put_job("report", _marking(marks, "v2"))
    ran = await asyncio.to_thread(
        run_crc, hub, "job", "run", "shop", "web", "report", "--version", "2", "--timeout", "20"
    )
    assert ran.returncode == 0 and "v2" in ran.stdout, ran.stderr
    with _db(hub) as db:  # the hub goes back to version 1 when version 2 is asked for
        db.execute("UPDATE jobs SET script = ?, version = ?, statement = ?, signature = ? WHERE name = 'report'", first)
    before = _orders(hub)
    ran = await asyncio.to_thread(
        run_crc, hub, "job", "run", "shop", "web", "report", "--version", "2", "--timeout", "20"
    )
    assert (ran.returncode, ran.stderr.strip().splitlines()) == (
        1, ["crc: nothing was sent: job 'report' is version 1, not version 2"],
    ), ran.stderr  # fmt: skip
    shown = await asyncio.to_thread(run_crc, hub, "job", "show", "report", "--version", "2")
    assert shown.returncode == 1 and shown.stdout == ""
    with pytest.raises(MasterError, match="nothing was sent: job 'report' is version 1, not version 2"):
        await master.run_job("shop", "web", "report", version=2, wait_timeout=20)
    assert _orders(hub) == before and sorted(p.name for p in marks.iterdir()) == ["v2"]


async def test_a_parameter_loosened_or_dropped_in_the_store_is_refused(
    hub: HubProcess, master: Master, deploy: Deploy, marks: Path
) -> None:
    """The parameters are signed with the script: a hub that widens a choice, drops a required parameter or
    turns a secret into a plain one (so its value would travel in the clear) makes the job not verify."""
    await deploy("shop", "web", "db")
    await master.put_job("report", _marking(marks, "reviewed"), parameters=[
        parse_spec("stage:choice(dev|prod)=dev"), parse_spec("release"), parse_spec("token?:secret"),
    ])  # fmt: skip
    _, _, packed, _ = _row(hub, "report")
    statement = msgpack.unpackb(packed, raw=False)
    stage, release, token = statement["parameters"]
    for loosened in ([{**stage, "choices": ["dev", "prod", "rm -rf"]}, release, token], [stage, token],
                     [stage, release, {**token, "type": "string"}]):  # fmt: skip
        with _db(hub) as db:
            db.execute("UPDATE jobs SET statement = ? WHERE name = 'report'",
                       (_pack({**statement, "parameters": loosened}),))  # fmt: skip
        await _refused_everywhere(hub, master, marks, NOT_SIGNED)
