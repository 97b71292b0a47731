"""Stored jobs: named scripts a master keeps on the hub (``crc job add``), each master seeing only its own.

The hub only keeps them. Playing one is an ordinary EXEC order that the master signs with the script in its body
(the hub cannot sign, so daemons never run a script just because the hub has it), marked with the job's name and
version so its runs can be listed per job and machine. Each version is the master's signed
``protocol.jobs.JobStatement``, kept with its signature: the master runs only a statement that verifies against
its own key, so what the hub stores cannot change what runs. The hub checks the signature too, only so that a
master's mistake is answered at once rather than found when the job is played.
"""

from __future__ import annotations

import time

from protocol import Envelope, ErrorCode, ProtocolError
from protocol.jobs import JobStatement
from protocol.messages import JobDelete, JobList, JobPut, JobShow, Response
from protocol.order_bodies import SHELLS
from server.core import stores
from server.core.connection import Connection
from server.core.dispatch import HandlerTable
from server.core.errors import RequestError, check_name
from server.core.feature import Feature
from server.core.hub import Hub

handlers = HandlerTable()

MAX_SCRIPT = 256 * 1024


@handlers.on(JobPut)
async def job_put(hub: Hub, conn: Connection, env: Envelope, body: JobPut) -> None:
    try:
        statement = JobStatement.from_wire(body.statement, body.signature)
        statement.verify(conn.peer.public_key, statement.name)
    except ProtocolError as exc:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a job must be signed by its master: {exc.message}") from None
    check_name("job", statement.name)
    if statement.shell not in SHELLS:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"a job's shell is one of {', '.join(SHELLS)}, not {statement.shell!r}"
        )
    if len(statement.script.encode()) > MAX_SCRIPT:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a job's script is at most {MAX_SCRIPT // 1024} KiB")
    # The version is the master's (signed): the hub keeps it as given, even below the stored one, so a master can
    # replace a copy the hub altered or one stored before jobs were signed.
    job = await stores.jobs(hub).put_job(
        conn.id, statement.name, statement.shell, statement.script, time.time(), version=statement.version,
        statement=statement.unsigned_wire(), signature=statement.signature,
    )  # fmt: skip
    conn.send(Response(job.to_wire()), reply_to=env.id)


@handlers.on(JobList)
async def job_list(hub: Hub, conn: Connection, env: Envelope, body: JobList) -> None:
    jobs = [
        {**job.to_wire(), "script": None, "statement": None, "signature": b"", "size": len(job.script)}
        for job in await stores.jobs(hub).jobs(conn.id)
    ]
    conn.send(Response({"jobs": jobs}), reply_to=env.id)


@handlers.on(JobShow)
async def job_show(hub: Hub, conn: Connection, env: Envelope, body: JobShow) -> None:
    job = await stores.jobs(hub).job(conn.id, body.name)
    if job is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no job named {body.name!r}", job=body.name)
    conn.send(Response(job.to_wire()), reply_to=env.id)


@handlers.on(JobDelete)
async def job_delete(hub: Hub, conn: Connection, env: Envelope, body: JobDelete) -> None:
    if not await stores.jobs(hub).delete_job(conn.id, body.name):
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no job named {body.name!r}", job=body.name)
    conn.send(Response({"deleted": body.name}), reply_to=env.id)


FEATURE = Feature("jobs", handlers)
