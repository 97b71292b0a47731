"""Secret parameters end to end (``crc run --secret``, ``Master.run(secrets=...)``): a real hub and real daemons.

A command that prints its secret plainly, base64- and URL-encoded: the value reaches the command's environment
and nowhere else. Not the master's results or live output (the daemon redacts them before they leave the
machine, and says how often), not the hub's SQLite files or log, not the events, not the daemons' logs or state
dirs, and not the process list of the machine while it runs (``ps -eo args``). Machines certified before sealing
keys are refused until their key is rotated; the CLI takes secrets from a file or a variable, never from the
command line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from clients.master.fanout import FanOut
from clients.master.models import CommandResult, OutputChunk
from clients.master.sdk import Master, MasterError
from protocol import PublicKey
from protocol.messages import MachineCertify
from protocol.parameters import parse_spec
from tests.e2e.support import Daemons, Deployment, HubProcess, assert_one_line_error, eventually, run_crc
from tests.e2e.test_enrollment import enroll

SECRET = "Tr0ub4dor&3 p@ss/w+rd?="
VALUE = SECRET.encode()
FORMS = [
    VALUE,
    base64.b64encode(VALUE),
    base64.b64encode(VALUE).rstrip(b"="),
    base64.urlsafe_b64encode(VALUE),
    urllib.parse.quote(SECRET, safe="").encode(),
    urllib.parse.quote_plus(SECRET).encode(),
]
ECHO = (
    'printf "plain=%s\\n" "$DB_PASSWORD"; '
    'printf "b64=%s\\n" "$(printf %s "$DB_PASSWORD" | base64 -w0)"; '
    'python3 -c \'import os, urllib.parse as u; v = os.environ["DB_PASSWORD"]; '
    'print("url=" + u.quote(v, safe="")); print("plus=" + u.quote_plus(v))\'; '
    'sleep 1.5; echo "$DB_PASSWORD" >&2'
)


def leaks(data: bytes | str) -> list[bytes]:
    raw = data.encode() if isinstance(data, str) else data
    return [form for form in FORMS if form in raw]


def files_leaking(folder: Path) -> list[str]:
    return [str(path) for path in folder.rglob("*") if path.is_file() and leaks(path.read_bytes())]


async def sample_processes(stop: asyncio.Event, samples: list[str]) -> None:
    """``ps -eo args`` of this computer (where the daemons run) every 50 ms until ``stop``."""
    while not stop.is_set():
        listed = await asyncio.to_thread(subprocess.run, ["ps", "-eo", "args"], capture_output=True, text=True)
        samples.append(listed.stdout)
        await asyncio.sleep(0.05)


async def test_a_secret_the_command_echoes_never_leaves_the_machine_unredacted(
    master: Master, deploy: Callable[..., Awaitable[Deployment]], hub: HubProcess, daemons: Daemons
) -> None:
    deployment = await deploy("vault", "web", "db")
    chunks: list[OutputChunk] = []
    samples: list[str] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_processes(stop, samples))
    try:
        results = await master.run(
            "vault", "all", ECHO, secrets={"DB_PASSWORD": SECRET}, on_output=chunks.append, wait_timeout=30
        )
    finally:
        stop.set()
        await sampler

    assert sorted(r.machine for r in results) == ["db", "web"]
    for r in results:
        assert (r.status, r.verified, r.redacted) == ("succeeded", True, 5), r
        assert r.stdout == b"plain=***\nb64=***\nurl=***\nplus=***\n" and r.stderr == b"***\n"
    live = b"".join(chunk.data for chunk in chunks)
    assert b"plain=***" in live and not leaks(live)
    # The command ran while the process list was sampled (its sleep shows), and no sample holds the value.
    assert any("sleep 1.5" in sample for sample in samples)
    assert not [sample for sample in samples if leaks(sample)]

    stored_files = [path.read_bytes() for path in hub.data_dir.rglob("*") if path.is_file()]
    assert any(b"DB_PASSWORD" in data for data in stored_files), "the orders (names, ciphertexts) are stored here"
    assert files_leaking(hub.data_dir) == []  # the SQLite database and its WAL
    assert not leaks(hub.log_text())
    for daemon in deployment.running.values():
        assert not leaks(daemon.log_text()) and files_leaking(daemon.state_dir) == []
    events = run_crc(hub, "--json", "watch", "vault", "--no-follow")
    assert events.returncode == 0 and "command_queued" in events.stdout and not leaks(events.stdout)
    stored = run_crc(hub, "--json", "results", "vault")
    assert stored.returncode == 0 and not leaks(stored.stdout)
    assert sorted(item["redacted"] for item in json.loads(stored.stdout)) == [5, 5]

    # Rolling dispatch (one machine at a time) seals each machine's order when it goes out, just the same.
    rolled = await master.run("vault", "all", 'echo "$DB_PASSWORD"', secrets={"DB_PASSWORD": SECRET},
                              fanout=FanOut(1, None, None), wait_timeout=30)  # fmt: skip
    assert [(r.status, r.stdout, r.redacted) for r in rolled] == [("succeeded", b"***\n", 1)] * 2


async def test_a_machine_certified_before_sealing_keys_is_refused_until_its_key_is_rotated(
    master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("older", "box")
    box = (await master.scenario("older")).machine("box")
    assert box.sealing_key and box.certificate is not None
    # What a crc from before sealing keys certified: the same machine, without one.
    v1 = master._certify("older", "box", PublicKey.from_text(box.public_key), "linux", "box", {})
    await master.request(MachineCertify("older", [v1.to_wire()]), scenario="older")
    assert (await master.scenario("older")).machine("box").sealing_key == ""
    marker = tmp_path / "ran"

    with pytest.raises(MasterError) as refused:
        await master.run("older", "box", f"touch {marker}", secrets={"TOKEN": "abcd1234"}, wait_timeout=15)
    assert "nothing was sent" in str(refused.value) and "crc machine rotate-key older box" in str(refused.value)
    assert [r for r in await master.results("older") if r.kind == "exec"] == [] and not marker.exists()

    await master.rotate_machine_key("older", "box", timeout=30)  # the new key's sealing key comes signed with it
    assert (await master.scenario("older")).machine("box").sealing_key
    (result,) = await master.run("older", "box", 'echo "$TOKEN"', secrets={"TOKEN": "abcd1234"}, wait_timeout=15)
    assert (result.status, result.verified, result.stdout, result.redacted) == ("succeeded", True, b"***\n", 1)


async def test_crc_run_takes_secrets_from_a_file_or_a_variable_and_never_from_the_command_line(
    hub: HubProcess, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("cli", "box")
    secret_file = tmp_path / "db-password"
    secret_file.write_text("file-secret-42\n")  # the newline an editor adds is not part of it
    command = 'echo "$DB $API"; printf %s "$DB" | wc -c'
    ran = await asyncio.to_thread(
        run_crc, hub, "run", "cli", "box", "--secret", f"DB=@{secret_file}", "--secret", "API=env:MY_API_TOKEN",
        "--", command, env={"MY_API_TOKEN": "env-secret-43"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["***", "***", "14"]
    assert "box: 2 secret value(s) redacted from the output" in ran.stderr
    assert "file-secret-42" not in ran.stdout + ran.stderr and "env-secret-43" not in ran.stdout + ran.stderr

    on_line = await asyncio.to_thread(run_crc, hub, "run", "cli", "box", "--secret", "DB=hunter2-typed", "--", "true")
    line = assert_one_line_error(on_line, 2, "--secret DB=...", "visible to every user", "DB=@FILE", "DB=env:VAR")
    assert "hunter2-typed" not in line
    for bad, fragment in [
        (["--secret", f"DB=@{tmp_path / 'missing'}"], "cannot read"),
        (["--secret", "DB=env:CRC_TEST_UNSET_VARIABLE"], "is not set"),
        (["--secret", "1DB=env:MY_API_TOKEN"], "not an environment variable name"),
        (["--secret", "DB=env:SHORT"], "at least 4 are needed"),
        (["--secret", "DB=env:MY_API_TOKEN", "--env", "DB=x"], "both as a plain variable"),
        (["--secret", "no-equals-sign"], "NAME=@FILE or NAME=env:VAR"),
    ]:
        refused = await asyncio.to_thread(
            run_crc, hub, "run", "cli", "box", *bad, "--", "true", env={"MY_API_TOKEN": "env-secret-43", "SHORT": "abc"}
        )
        assert_one_line_error(refused, 2, fragment)


async def test_a_machine_that_joined_with_a_token_is_sent_secrets_sealed_to_the_key_it_registered(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await master.create_scenario("farm", [("db", "linux", "db")])
    token = await master.create_enrollment("farm", "workers")
    joined = await enroll(hub, token.text(), "w0", tmp_path / "w0.toml")
    assert joined.returncode == 0, joined.stderr
    daemons.start(tmp_path / "w0.toml")
    worker = (await master.scenario("farm")).machine("w0")  # certified, with the sealing key its MAC covers
    assert worker.trusted and worker.sealing_key

    async def answered() -> CommandResult | None:
        (result,) = await master.run(
            "farm", "w0", 'echo "$TOKEN"', secrets={"TOKEN": b"joiner-secret"}, wait_timeout=10
        )
        return result if result.final else None

    result = await eventually(answered, timeout=30, what="the joiner to run a command with a secret")
    assert (result.status, result.verified, result.stdout, result.redacted) == ("succeeded", True, b"***\n", 1)


async def test_a_jobs_secret_parameter_is_given_with_secret_sealed_and_redacted(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("jobs", "box")
    script = tmp_path / "login.sh"
    script.write_text('echo "login $user with $token"\n')
    added = await asyncio.to_thread(run_crc, hub, "job", "add", "login", str(script), "--param", "user",
                                    "--param", "token:secret")  # fmt: skip
    assert added.returncode == 0, added.stderr
    token_file = tmp_path / "token"
    token_file.write_text("s3cr3t-token-value\n")

    ran = await asyncio.to_thread(run_crc, hub, "job", "run", "jobs", "box", "login", "--param", "user=ana",
                                  "--secret", f"token=@{token_file}")  # fmt: skip

    assert ran.returncode == 0 and ran.stdout.strip() == "login ana with ***", ran.stdout + ran.stderr
    assert "box: 1 secret value(s) redacted" in ran.stderr
    [run] = [r for r in await master.job_runs("jobs", "login")]
    assert run.result.redacted == 1 and b"s3cr3t" not in run.result.stdout
    missing = await asyncio.to_thread(run_crc, hub, "job", "run", "jobs", "box", "login", "--param", "user=ana")
    assert_one_line_error(missing, 1, "secret parameter token is required")
    plain = await asyncio.to_thread(run_crc, hub, "job", "run", "jobs", "box", "login", "--param", "user=ana",
                                    "--param", "token=s3cr3t-token-value")  # fmt: skip
    line = assert_one_line_error(plain, 1, "is a secret: give it with --secret")
    assert "s3cr3t" not in line
    assigned = await asyncio.to_thread(run_crc, hub, "job", "assign", "jobs", "box", "login", "--param", "user=ana")
    assert_one_line_error(assigned, 1, "only crc job run and plans can give them")


async def test_a_plans_steps_get_their_secrets_sealed_to_each_machine(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]], tmp_path: Path
) -> None:
    await deploy("plans", "web", "db")
    await master.put_job("login", 'echo "login with $token"', parameters=[parse_spec("token:secret")])
    plan = {"name": "p", "steps": [
        {"id": "job", "target": "all", "job": "login"},
        {"id": "cmd", "target": "db", "command": 'echo "api $API"', "secrets": ["API"], "depends_on": ["job"]},
    ]}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "token").write_text("plan-token-secret-1\n")

    ran = await asyncio.to_thread(run_crc, hub, "plan", "run", "plans", str(tmp_path / "plan.json"), "--follow",
                                  "--timeout", "30", "--secret", f"token=@{tmp_path / 'token'}", "--secret",
                                  "API=env:PLAN_API", env={"PLAN_API": "plan-api-secret-2"}, timeout=60)  # fmt: skip

    assert ran.returncode == 0, ran.stdout + ran.stderr
    outputs = sorted((r.machine, r.stdout, r.redacted) for r in await master.results("plans") if r.ok)
    assert outputs == [("db", b"api ***\n", 1), ("db", b"login with ***\n", 1), ("web", b"login with ***\n", 1)]
    stored = b"".join(path.read_bytes() for path in hub.data_dir.rglob("*") if path.is_file())
    assert b"plan-token-secret-1" not in stored and b"plan-api-secret-2" not in stored
    api = {"PLAN_API": "plan-api-secret-2"}
    plan_file = str(tmp_path / "plan.json")
    missing = await asyncio.to_thread(run_crc, hub, "plan", "run", "plans", plan_file, "--secret", "API=env:PLAN_API",
                                      env=api)  # fmt: skip
    assert_one_line_error(missing, 1, "secret parameter token is required")
    unused = await asyncio.to_thread(run_crc, hub, "plan", "run", "plans", plan_file, "--secret",
                                     f"token=@{tmp_path / 'token'}", "--secret", "API=env:PLAN_API", "--secret",
                                     "EXTRA=env:PLAN_API", env=api)  # fmt: skip
    assert_one_line_error(unused, 1, "no step of the plan uses secret EXTRA")
