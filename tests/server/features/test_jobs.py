"""Stored jobs in process: kept, shown, listed and deleted per master, only as their master signed them
(harness.HubContext)."""

from __future__ import annotations

import os
import time

from protocol import ErrorCode, Identity
from protocol.jobs import ANY_SCENARIO, JobStatement
from protocol.messages import JobDelete, JobList, JobPut, JobShow
from server.features.jobs import MAX_SCRIPT
from tests.server.features.harness import HubContext, Peer


def job_put(master: Peer, name: str, script: str = "echo hi", *, shell: str = "sh", version: int = 1,
            signer: Identity | None = None) -> JobPut:  # fmt: skip
    """What ``Master.put_job`` sends: the statement the master signed, and its signature apart."""
    statement = JobStatement(master.id, ANY_SCENARIO, name, version, shell, script, time.time())
    signed = statement.signed(signer or master.identity)
    if signer is not None:  # signed by another key, but claiming to be this master's
        signed = JobStatement(**{**signed.__dict__, "master": master.id})
    return JobPut(signed.unsigned_wire(), signed.signature)


async def test_a_job_is_kept_shown_listed_without_its_script_and_deleted(ctx: HubContext) -> None:
    ana = await ctx.master("ana")

    stored = await ctx.ok(ana, job_put(ana, "report", "./report.sh"))
    shown = await ctx.ok(ana, JobShow("report"))
    [listed] = (await ctx.ok(ana, JobList()))["jobs"]
    deleted = await ctx.ok(ana, JobDelete("report"))

    assert stored["version"] == 1 and stored["signed"] is True
    JobStatement.from_wire(shown["statement"], shown["signature"]).verify(ana.identity.public, "report")
    assert shown["script"] == "./report.sh"
    assert (listed["name"], listed["script"], listed["size"]) == ("report", None, len("./report.sh"))
    assert deleted == {"deleted": "report"}
    assert (await ctx.ok(ana, JobList()))["jobs"] == []


async def test_a_new_version_replaces_the_job(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    await ctx.ok(ana, job_put(ana, "report", "v1"))

    await ctx.ok(ana, job_put(ana, "report", "v2", version=2))

    shown = await ctx.ok(ana, JobShow("report"))
    assert (shown["version"], shown["script"]) == (2, "v2")


async def test_another_master_never_sees_nor_deletes_a_job(ctx: HubContext) -> None:
    ana, bob = await ctx.master("ana"), await ctx.master("bob")
    await ctx.ok(ana, job_put(ana, "report"))

    assert (await ctx.ok(bob, JobList()))["jobs"] == []
    for body in (JobShow("report"), JobDelete("report")):
        assert (await ctx.refused(bob, body)).code == ErrorCode.NOT_FOUND.value
    assert (await ctx.ok(ana, JobShow("report")))["name"] == "report"


async def test_jobs_not_signed_by_their_master_or_malformed_are_refused(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    cases = [
        job_put(ana, "report", signer=Identity.generate(os.urandom)),
        job_put(ana, "bad name"),
        job_put(ana, "report", shell="bash"),
        job_put(ana, "report", "x" * (MAX_SCRIPT + 1)),
        JobPut({"name": "report"}, b""),
    ]
    for body in cases:
        assert (await ctx.refused(ana, body)).code == ErrorCode.INVALID_REQUEST.value, body
    assert (await ctx.ok(ana, JobList()))["jobs"] == []


async def test_unknown_jobs_are_not_found(ctx: HubContext) -> None:
    ana = await ctx.master("ana")

    for body in (JobShow("nope"), JobDelete("nope")):
        error = await ctx.refused(ana, body)
        assert error.code == ErrorCode.NOT_FOUND.value and "no job named 'nope'" in error.message


async def test_a_machine_may_not_keep_jobs(ctx: HubContext) -> None:
    ana = await ctx.master("ana")
    db = await ctx.daemon((await ctx.create_scenario(ana, "shop"))["db"])

    for body in (job_put(db, "report"), JobList()):
        error = await ctx.refused(db, body)
        assert error.code == ErrorCode.INVALID_REQUEST.value and "a daemon may not send" in error.message
