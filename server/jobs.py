"""Stored jobs: named scripts a master keeps on the hub (``crc job add``), each master seeing only its own.

The hub only keeps them. Playing one is an ordinary EXEC order that the master signs with the script in its body
(the hub cannot sign, so daemons never run a script just because the hub has it), marked with the job's name and
version so its runs can be listed per job and machine.
"""

from __future__ import annotations

import time

from protocol import Envelope, ErrorCode
from protocol.messages import JobDelete, JobList, JobPut, JobShow, Response
from server.connection import Connection
from server.errors import RequestError, check_name
from server.hub import Hub

SHELLS = ("sh", "powershell")
MAX_SCRIPT = 256 * 1024


async def job_put(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, JobPut)
    check_name("job", body.name)
    if body.shell not in SHELLS:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"a job's shell is one of {', '.join(SHELLS)}, not {body.shell!r}"
        )
    if len(body.script.encode()) > MAX_SCRIPT:
        raise RequestError(ErrorCode.INVALID_REQUEST, f"a job's script is at most {MAX_SCRIPT // 1024} KiB")
    job = await hub.store.put_job(conn.id, body.name, body.shell, body.script, time.time())
    conn.send(Response(job.to_wire()), reply_to=env.id)


async def job_list(hub: Hub, conn: Connection, env: Envelope) -> None:
    assert isinstance(env.body, JobList)
    jobs = [{**job.to_wire(), "script": None, "size": len(job.script)} for job in await hub.store.jobs(conn.id)]
    conn.send(Response({"jobs": jobs}), reply_to=env.id)


async def job_show(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, JobShow)
    job = await hub.store.job(conn.id, body.name)
    if job is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no job named {body.name!r}", job=body.name)
    conn.send(Response(job.to_wire()), reply_to=env.id)


async def job_delete(hub: Hub, conn: Connection, env: Envelope) -> None:
    body = env.body
    assert isinstance(body, JobDelete)
    if not await hub.store.delete_job(conn.id, body.name):
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no job named {body.name!r}", job=body.name)
    conn.send(Response({"deleted": body.name}), reply_to=env.id)
