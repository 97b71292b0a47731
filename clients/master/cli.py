"""The master's commands of ``crc``, over the master SDK (``crc demo`` included). ``crc_cli.main`` joins them
with the hub's (``crc hub``), so that this package never imports the server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import os
import secrets
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from clients.daemon.config import DaemonConfig, write_config
from clients.link import LinkClosed, hub_ws_url
from clients.master.fanout import FanOut, Summary
from clients.master.keys import KeyFileError, default_key_path, load_master_key, write_private_key
from clients.master.models import CommandResult, EventInfo, NewMachine, OutputChunk, PlayOutcome
from clients.master.sdk import Master, MasterError, UnsignedJobError
from clients.master.secret_params import SecretRefused, checked_secrets
from crc_cli.logformat import LOG_FORMATS, configure_logging
from protocol import CrcError, Identity, ProtocolError, RemoteError
from protocol.boot import BootStatus
from protocol.delegation import DELEGATION_LIFETIME
from protocol.events import BootStep
from protocol.orders import MAX_ORDER_TTL
from protocol.parameters import JobParameter, parse_spec
from protocol.plans import Plan, PlanError, from_gorch, parse_plan

EXIT_USAGE = 2
EXIT_WAIT_TIMEOUT = 124


AddCommands = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]
"""Adds subcommands of another part beside the master's (``crc hub``, see ``crc_cli.main``)."""


def _hub_url(args: argparse.Namespace) -> str:
    url = args.hub or os.environ.get("CRC_HUB")
    if not url:
        raise MasterError("no hub given: pass --hub URL or set CRC_HUB (e.g. http://127.0.0.1:8750)")
    try:
        hub_ws_url(url)
    except ValueError as exc:
        raise MasterError(str(exc)) from None
    return str(url)


def _hub_pin(args: argparse.Namespace) -> str:
    return str(args.hub_fingerprint or os.environ.get("CRC_HUB_FINGERPRINT") or "")


async def _connect(args: argparse.Namespace) -> Master:
    return await Master.connect(_hub_url(args), args.key, pin=_hub_pin(args))


def _print_json(value: Any) -> None:
    def default(o: Any) -> Any:
        if isinstance(o, bytes):
            return o.decode("utf-8", "replace")
        raise TypeError(type(o).__name__)

    print(json.dumps(value, indent=2, default=default))


def _result_json(r: CommandResult) -> dict[str, Any]:
    return {
        "order_id": r.order_id, "machine": r.machine, "kind": r.kind, "status": r.status, "exit_code": r.exit_code,
        "error": r.error, "stdout": r.stdout, "stderr": r.stderr, "stdout_truncated": r.stdout_truncated,
        "stderr_truncated": r.stderr_truncated, "verified": r.verified, "started": r.started, "finished": r.finished,
        "redacted": r.redacted,
    }  # fmt: skip


# commands
def cmd_keygen(args: argparse.Namespace) -> int:
    path = Path(args.key) if args.key else default_key_path()
    identity = Identity.generate(secrets.token_bytes)
    write_private_key(path, identity, overwrite=args.force)
    print(f"wrote {path} (mode 0600); master id {identity.id}", file=sys.stderr)
    print(identity.public.to_text())
    return 0


async def cmd_rotate_key(args: argparse.Namespace) -> int:
    """New master key pair: machines are told to obey it, the hub moves this master to it, the file is replaced."""
    path = Path(args.key) if args.key else default_key_path()
    staged = path.with_name(path.name + ".new")
    new = Identity.generate(secrets.token_bytes)
    write_private_key(staged, new, overwrite=True)  # on disk before anything depends on it
    async with await _connect(args) as master:
        _, told = await master.rotate_key(new, timeout=args.timeout)
    os.replace(staged, path)
    waiting = [r.machine for r in told if not r.final]
    refused = [r.machine for r in told if r.final and not r.ok]
    print(f"master key rotated: {path} now holds {new.id}; {sum(r.ok for r in told)} machines switched")
    if waiting:
        print(f"  offline, will switch when they reconnect: {', '.join(waiting)}", file=sys.stderr)
    if refused:
        print(f"  REFUSED the new key (still obey the old one, which the hub no longer accepts): "
              f"{', '.join(refused)}", file=sys.stderr)  # fmt: skip
    print(new.public.to_text())
    return 0 if not refused else 1


def cmd_pubkey(args: argparse.Namespace) -> int:
    print(load_master_key(args.key).public.to_text())
    return 0


def _machine_decl(text: str) -> tuple[str, str, str]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise argparse.ArgumentTypeError(f"--machine {text!r} must be NAME:OS or NAME:OS:ROLE (OS linux|windows)")
    return (parts[0], parts[1], parts[2] if len(parts) == 3 else parts[0])


async def cmd_scenario_create(args: argparse.Namespace) -> int:
    if args.machine and not args.out:
        print("crc scenario create: --out DIR is needed for the machines' daemon configs", file=sys.stderr)
        return EXIT_USAGE
    async with await _connect(args) as master:
        minted = await master.create_scenario(args.name, args.machine, sealed=args.sealed)
    if minted:
        _write_daemon_configs(args, master, args.name, minted)
    else:
        print(f"scenario {args.name} created, with no machines yet (crc scenario add-machine, crc enroll create)")
    return 0


def _added_machine(text: str) -> tuple[str, str]:
    name, _, os_name = text.partition(":")
    if not name or os_name not in ("", "linux", "windows"):
        raise argparse.ArgumentTypeError(f"{text!r} must be NAME or NAME:OS (OS linux|windows)")
    return name, os_name or "linux"


def _parameter_spec(text: str) -> JobParameter:
    try:
        return parse_spec(text)
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _parameter_text(raw: dict[str, Any]) -> str:
    kind = raw["type"] + (f"({'|'.join(raw['choices'])})" if raw.get("choices") else "")
    default = "" if raw.get("default") is None else f"={raw['default']}"
    return f"{raw['name']}{'?' if raw.get('optional') else ''}:{kind}{default}"


def _param_value(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not name or not equals:
        raise argparse.ArgumentTypeError(f"--param {text!r} must be NAME=VALUE")
    return name, value


def _env_pair(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"--env {text!r} must be KEY=VALUE")
    return key, value


def _label(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not key or not equals:
        raise argparse.ArgumentTypeError(f"--label {text!r} must be KEY=VALUE")
    return key, value


async def cmd_scenario_add_machine(args: argparse.Namespace) -> int:
    labels = dict(args.label or [])
    declared = [(name, os_name, args.role or name, labels) for name, os_name in args.machines]
    async with await _connect(args) as master:
        _write_daemon_configs(args, master, args.scenario, await master.add_machines(args.scenario, declared))
    return 0


def _write_daemon_configs(args: argparse.Namespace, master: Master, scenario: str, machines: list[NewMachine]) -> None:
    """One daemon config per new machine in ``--out`` (0600: it holds the machine's private key)."""
    hub, out = _hub_url(args), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for m in machines:
        config = DaemonConfig(hub, scenario, m.name, m.identity, master.identity.public, hub_pin=_hub_pin(args),
                              sealed=m.sealed)  # fmt: skip
        write_config(out / f"{m.name}.toml", config)
        print(f"{m.name}: {m.id} -> {out / (m.name + '.toml')}")


async def cmd_scenario_list(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        items = await master.scenarios()
    if args.json:
        _print_json(items)
    else:
        for s in items:
            print(f"{s['name']:<24} {s['ready']}/{s['machines']} ready")
    return 0


async def cmd_scenario_show(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        sc = await master.scenario(args.name)
    if args.json:
        machines = [{k: v for k, v in m.__dict__.items() if k != "certificate"} for m in sc.machines]
        _print_json({"name": sc.name, "cursor": sc.cursor, "machines": machines})
        return 0
    print(f"scenario {sc.name} (events up to {sc.cursor})")
    for m in sc.machines:
        seen = time.strftime("%H:%M:%S", time.localtime(m.last_seen)) if m.last_seen else "never"
        print(f"  {m.name:<16} {m.status:<10} {m.os:<8} {','.join(m.ips) or '-':<20} last seen {seen}  {m.id}")
        if not m.trusted:
            print(f"  {'':<16} UNTRUSTED: {m.problem}; no order goes to it")
    return 0


async def cmd_scenario_adopt(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        certified = await master.adopt_scenario(args.name)
    print(f"certified {', '.join(certified)}" if certified else f"every machine of {args.name} is certified already")
    return 0


async def cmd_scenario_delete(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        data = await master.delete_scenario(args.name)
    print(f"deleted {args.name}; revoked {len(data['revoked'])} machine keys")
    return 0


async def cmd_machine_revoke(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        machine_id = await master.revoke_machine(args.scenario, args.name)
    print(f"revoked {args.name} ({machine_id}) from {args.scenario}")
    return 0


async def cmd_machine_rotate_key(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        key = await master.rotate_machine_key(args.scenario, args.name, timeout=args.timeout)
    print(f"{args.name} of {args.scenario} now uses {key}")
    return 0


async def cmd_wait(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        try:
            sc = await master.wait_ready(args.scenario, timeout=args.timeout)
        except MasterError as exc:
            print(f"crc wait: {exc}", file=sys.stderr)
            return 1
    print(f"{sc.name}: all {len(sc.machines)} machines ready")
    return 0


def _printer(multi: bool) -> Callable[[OutputChunk], None]:
    def show(chunk: OutputChunk) -> None:
        stream = sys.stdout if chunk.stream == "stdout" else sys.stderr
        text = chunk.data.decode("utf-8", "replace")
        if multi:
            text = "".join(f"[{chunk.machine}] {line}\n" for line in text.splitlines())
        stream.write(text)
        stream.flush()

    return show


def _exit_code(results: list[CommandResult]) -> int:
    if all(r.ok for r in results):
        return 0
    if any(not r.final for r in results):
        return EXIT_WAIT_TIMEOUT
    for r in results:
        if not r.ok:
            return r.exit_code if r.exit_code else 1
    return 1


def _report(results: list[CommandResult], *, json_out: bool, quiet_ok: bool) -> None:
    if json_out:
        _print_json([_result_json(r) for r in results])
        return
    for r in results:
        if r.ok and quiet_ok:
            continue
        detail = f"exit {r.exit_code}" if r.exit_code is not None else r.status
        note = f": {r.error}" if r.error else ""
        trust = "" if r.verified or not r.final else " (UNVERIFIED signature)"
        print(f"{r.machine}: {r.status} ({detail}){note}{trust}", file=sys.stderr)


def _secret(text: str) -> tuple[str, bytes]:
    """``NAME=@FILE`` (the file's bytes, less one trailing newline, as ``$(cat FILE)`` has it) or
    ``NAME=env:VAR`` (this process's variable VAR): never the value itself, which a command line would show to
    every user of this computer (``ps``) and keep in shell history.

    Raises:
        SecretRefused: any other form, a file that cannot be read, an unset variable.
    """
    name, equals, source = text.partition("=")
    if not name or not equals:
        # Not repeated: what was given may be a secret itself, typed without its name.
        raise SecretRefused("a --secret is NAME=@FILE or NAME=env:VAR (the value itself is never given here)")
    if source.startswith("@") and len(source) > 1:
        try:
            data = Path(source[1:]).read_bytes()
        except OSError as exc:
            raise SecretRefused(f"--secret {name}: cannot read {source[1:]}: {exc.strerror or exc}") from None
        return name, data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
    if source.startswith("env:") and len(source) > 4:
        value = os.environb.get(source[4:].encode()) if os.name != "nt" else _env_bytes(source[4:])
        if value is None:
            raise SecretRefused(f"--secret {name}: the variable {source[4:]} is not set")
        return name, value
    # The value is not repeated: it may be a real secret typed by mistake.
    raise SecretRefused(
        f"--secret {name}=...: a value on the command line is visible to every user here (ps) and stays in shell "
        f"history; use --secret {name}=@FILE or --secret {name}=env:VAR"
    )


def _env_bytes(name: str) -> bytes | None:
    value = os.environ.get(name)
    return None if value is None else value.encode("utf-8")


def _secrets(args: argparse.Namespace, env: dict[str, str]) -> dict[str, bytes]:
    """The ``--secret`` values, checked as the SDK will (SecretRefused: which and why)."""
    values: dict[str, bytes] = {}
    for text in args.secret:
        name, value = _secret(text)
        if name in values:
            raise SecretRefused(f"--secret {name} is given twice")
        values[name] = value
    return checked_secrets(values, env)


async def cmd_run(args: argparse.Namespace) -> int:
    # One word is a shell string as typed ('echo a; ls'); several are an argv, quoted so each stays one word.
    command = args.command[0] if len(args.command) == 1 else shlex.join(args.command)
    if not command:
        print("crc run: give the command after --", file=sys.stderr)
        return EXIT_USAGE
    env = dict(item.split("=", 1) for item in args.env)
    try:
        fanout = FanOut(args.concurrency, args.max_failures, args.target_timeout)
        secrets = _secrets(args, env)
    except ValueError as exc:
        print(f"crc run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with await _connect(args) as master:
        _, machines = await master.targets(args.scenario, args.target)
        results = await master.run(
            args.scenario, args.target, command, cwd=args.cwd, env=env, timeout=args.command_timeout,
            wait_timeout=args.timeout, wait=not args.no_wait,
            on_output=None if args.json else _printer(len(machines) > 1), fanout=fanout, secrets=secrets,
        )  # fmt: skip
    return _finish_run(args, results)


def _finish_run(args: argparse.Namespace, results: list[CommandResult]) -> int:
    """What ``crc run`` and ``crc job run`` print and exit with."""
    if args.no_wait:
        for r in results:
            print(f"{r.machine}\t{r.order_id}\t{r.status}")
        return 0
    _report(results, json_out=args.json, quiet_ok=True)
    if not args.json:
        for r in results:
            if r.redacted:
                print(f"{r.machine}: {r.redacted} secret value(s) redacted from the output", file=sys.stderr)
    if len(results) > 1 and not args.json:
        print(f"{args.target}: {Summary.of(results).line()}", file=sys.stderr)
    return _exit_code(results)


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float | None:
    """``90``, ``15m``, ``12h``, ``30d``, ``2w`` as seconds; ``never`` (or 0) as None."""
    text = text.strip().lower()
    if text in ("never", "0"):
        return None
    unit = DURATION_UNITS.get(text[-1:], 0)
    try:
        value = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (like 3600, 15m, 12h, 30d or never)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration is positive (or never)")
    return value


def order_ttl_refusal(ttl: float | None) -> str | None:
    """Why ``ttl`` cannot be an order's lifetime, or None: orders live at most ``MAX_ORDER_TTL`` (daemons refuse
    longer ones, which they could not tell from replays once they forget the order's id)."""
    if ttl is None or ttl > MAX_ORDER_TTL:
        asked = "never" if ttl is None else f"{ttl / 86400:g}d"
        return (
            f"--ttl {asked}: orders are valid for at most {MAX_ORDER_TTL / 86400:g}d (daemons could not tell a "
            "longer-lived one from a replay); nothing was sent"
        )
    return None


def _until(expires: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(expires)) if expires else "never"


async def cmd_token_create(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        text, record = await master.create_token(args.role, scenario=args.scenario or "", ttl=args.ttl,
                                                 label=args.label)  # fmt: skip
    if args.json:
        _print_json({**record, "token": text})
        return 0
    scope = f"scenario {record['scenario']}" if record["scenario"] else "all your scenarios"
    print(f"{record['role']} token {record['id']} for {scope}, expires {_until(record['expires'])}:", file=sys.stderr)
    print(text)
    print("keep it secret: it is shown only now (the hub keeps a hash). Use: Authorization: Bearer <token>",
          file=sys.stderr)  # fmt: skip
    return 0


def _enroll_ttl(text: str) -> float:
    value = duration(text)
    if value is None:
        raise argparse.ArgumentTypeError("an enrollment token expires: give a duration like 24h or 7d")
    return value


async def cmd_enroll_create(args: argparse.Namespace) -> int:
    from clients.master import enroll_install
    from provisioning.install_command import InstallCommandError
    from provisioning.release import ReleaseError

    async with await _connect(args) as master:
        install = None
        if args.print_install:
            try:
                install = await enroll_install.prepare(
                    master, os_name=args.print_install, hub=args.machine_hub or master.url, pin=_hub_pin(args),
                    token_path=args.token_path or "", wheel=args.wheel,
                )  # fmt: skip
            except InstallCommandError as exc:
                print(f"crc: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except ReleaseError as exc:
                print(f"crc: {exc}", file=sys.stderr)
                return 1
        token = await master.create_enrollment(args.scenario, args.role, labels=dict(args.label or []),
                                               uses=args.uses, ttl=args.ttl, approve=args.approve,
                                               sealed=True if args.sealed else None)  # fmt: skip
    claims = token.claims
    commands = enroll_install.lines(install, token.text(), args.print_install) if install else {}
    if args.json:
        extra = {"install": commands} if install else {}
        _print_json({**claims.to_wire(), "master_public_key": claims.master_key.to_text(), "token": token.text(),
                     **extra})  # fmt: skip
        return 0
    approval = "; each waits for `crc machine approve`" if claims.approve else ""
    print(f"enrollment token {claims.id}: up to {claims.uses} machines join {claims.scenario} as {claims.role} until "
          f"{_until(claims.expires)}{approval}:", file=sys.stderr)  # fmt: skip
    print(token.text(), flush=True)
    for os_name, line in commands.items():
        where = "as root, in sh or bash" if os_name == "linux" else "elevated, in cmd.exe or PowerShell"
        print(f"install on an existing {os_name} machine ({where}):", file=sys.stderr, flush=True)
        print(line, flush=True)
    if commands and not args.token_path:
        print("the token and these lines hold a secret: give them only to the machines", file=sys.stderr)
    else:
        print("it holds a secret: give it only to the machines (crc-daemon enroll --hub URL --token @FILE)",
              file=sys.stderr)  # fmt: skip
    return 0


async def cmd_enroll_list(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        tokens = await master.enrollments(args.scenario)
    if args.json:
        _print_json([dataclasses.asdict(t) | {"claims": t.claims.to_wire() if t.claims else None} for t in tokens])
        return 0
    for t in tokens:
        if t.claims is None:
            print(f"{t.id}  NOT YOURS: {t.problem}")
            continue
        state = "revoked" if t.revoked else ("expired" if t.claims.expires < time.time() else "active")
        print(f"{t.id}  {t.claims.role:<16} {t.used}/{t.claims.uses} used  {state:<8} until {_until(t.claims.expires)}"
              f"{'  (approve)' if t.claims.approve else ''}")  # fmt: skip
        for joiner in t.joiners:
            problem = f": {joiner.problem}" if joiner.problem else ""
            print(f"    {joiner.name:<24} {joiner.state.value}{problem}")
    return 0


async def cmd_enroll_revoke(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        await master.revoke_enrollment(args.scenario, args.id)
    print(f"revoked enrollment token {args.id}: no machine joins with it any more")
    return 0


async def cmd_machine_approve(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        certified = await master.certify_joined(args.scenario, approve=args.names)
    missing = sorted(set(args.names) - set(certified))
    for name in certified:
        print(f"approved {name}")
    if missing:
        print(f"crc: not waiting for approval in {args.scenario}: {', '.join(missing)} (see crc enroll list)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


async def cmd_token_list(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        tokens = await master.tokens()
    if args.json:
        _print_json(tokens)
        return 0
    for t in tokens:
        until = _until(t["expires"])
        state = "revoked" if t["revoked"] else ("expired" if t["expires"] and t["expires"] < time.time() else "active")
        print(f"{t['id']}  {t['role']:<8} {t['scenario'] or '*':<20} {state:<8} until {until}  {t['label']}")
    return 0


async def cmd_token_revoke(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        await master.revoke_token(args.id)
    print(f"revoked token {args.id}")
    return 0


async def cmd_token_renew(args: argparse.Namespace) -> int:
    """Renew the delegations of live operator tokens (once, or every ``--every`` seconds until interrupted)."""
    while True:
        async with await _connect(args) as master:
            renewal = await master.renew_tokens()
        for token_id in renewal.renewed:
            print(f"renewed token {token_id} for {DELEGATION_LIFETIME / 3600:.0f} h")
        for token_id, reason in renewal.refused.items():
            print(f"crc: token {token_id} not renewed: {reason}", file=sys.stderr)
        if not args.every:
            return 1 if renewal.refused else 0
        await asyncio.sleep(args.every)


async def cmd_job_add(args: argparse.Namespace) -> int:
    script = Path(args.file).read_text(encoding="utf-8")
    async with await _connect(args) as master:
        job = await master.put_job(args.name, script, shell=args.shell, scenario=args.scenario or "",
                                   parameters=args.param or [])  # fmt: skip
    scope = f", scenario {job['scenario']} only" if job["scenario"] else ""
    print(f"job {job['name']} ({job['shell']}, {len(script)} bytes{scope}): version {job['version']}, signed")
    return 0


async def cmd_job_list(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        jobs = await master.jobs()
    if args.json:
        _print_json(jobs)
    for job in [] if args.json else jobs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(job["updated"]))
        # Only "unsigned" is worth printing from the hub's word: "signed" is checked when the job is used.
        unsigned = "" if job.get("signed") else "  unsigned: crc job add it again"
        print(f"{job['name']:<24} {job['shell']:<10} v{job['version']:<4} {job['size']:>7} bytes  {when}{unsigned}")
    return 0


async def cmd_job_show(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        try:
            job = {**await master.job(args.name, version=args.version), "signed": True}
        except UnsignedJobError as exc:
            # Shown (marked) so its owner can review it and add it again; never run as it is.
            job = {k: exc.record.get(k) for k in ("name", "shell", "script", "version")} | {"signed": False}
            print(f"crc: {exc}", file=sys.stderr)
    if args.json:
        _print_json(job)
    else:
        state = "signed by this master" if job["signed"] else "UNSIGNED (not verified)"
        print(f"# job {job['name']} ({job['shell']}), version {job['version']}, {state}")
        for parameter in job.get("parameters") or []:
            print(f"# parameter {_parameter_text(parameter)}")
        print(job["script"], end="" if job["script"].endswith("\n") else "\n")
    return 0 if job["signed"] else 1


async def cmd_job_delete(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        await master.delete_job(args.name)
    print(f"deleted job {args.name}")
    return 0


async def cmd_job_run(args: argparse.Namespace) -> int:
    try:
        fanout = FanOut(args.concurrency, args.max_failures, args.target_timeout)
        secrets = _secrets(args, {})
    except ValueError as exc:
        print(f"crc job run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with await _connect(args) as master:
        _, machines = await master.targets(args.scenario, args.target)
        results = await master.run_job(
            args.scenario, args.target, args.name, version=args.version, params=dict(args.param or []),
            wait_timeout=args.timeout, wait=not args.no_wait, fanout=fanout, secrets=secrets,
            on_output=None if args.json else _printer(len(machines) > 1),
        )  # fmt: skip
    return _finish_run(args, results)


async def cmd_job_runs(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        runs = await master.job_runs(args.scenario, args.name)
    if args.json:
        _print_json([{"job": r.job, "version": r.version, "started_by": r.started_by, "duration": r.duration,
                      **_result_json(r.result)} for r in runs])  # fmt: skip
        return 0
    for run in runs:
        r = run.result
        code = "-" if r.exit_code is None else str(r.exit_code)
        took = "-" if run.duration is None else f"{run.duration:.1f}s"
        print(f"{run.job:<16} v{run.version:<3} {r.machine:<12} {r.status:<11} exit {code:<4} {took:>7}  "
              f"by {run.started_by}  {r.order_id}")  # fmt: skip
    return 0


async def cmd_job_assign(args: argparse.Namespace) -> int:
    env = dict(args.env or [])
    async with await _connect(args) as master:
        answer = await master.assign_job(
            args.scenario, args.target, args.name, version=args.version, params=dict(args.param or []), env=env,
            timeout=args.command_timeout,
            ttl=args.ttl,
        )  # fmt: skip
    if args.json:
        _print_json(answer)
        return 0
    if answer["unchanged"]:
        print(
            f"job {args.name} is assigned to {args.target} already, as it is now (composition {answer['composition']})"
        )
        return 0
    queued = ", ".join(answer["queued"]) or "no machine yet"
    print(f"assigned job {args.name} to {args.target} (composition {answer['composition']}): queued for {queued}; "
          "machines that join later play it when they connect")  # fmt: skip
    for name, why in answer["waiting"].items():
        print(f"  {name}: not queued yet ({why}); it is when it next connects")
    for replaced in answer["replaced"]:
        print(f"  replaces composition {replaced} (its members that have not played it will not)")
    return 0


async def cmd_job_unassign(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        answers = await master.unassign_job(args.scenario, args.name, target=args.target)
    for answer in answers:
        cancelled = ", ".join(answer["cancelled"])
        print(f"unassigned composition {answer['composition']}" + (f"; cancelled for {cancelled}" if cancelled else ""))
    return 0


async def cmd_job_assignments(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        compositions = await master.assignments(args.scenario)
    if args.json:
        _print_json([{"composition": c.id, "job": c.job, "version": c.job_version, "target": c.target,
                      "created": c.created, "expires": c.expires or None} for c in compositions])  # fmt: skip
        return 0
    for c in compositions:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.created))
        until = "never expires" if not c.expires else time.strftime("until %Y-%m-%d %H:%M", time.localtime(c.expires))
        print(f"{c.job:<16} v{c.job_version or '-':<3} {c.target:<20} {when}  {until}  {c.id}")
    return 0


async def cmd_job_performances(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        performances = await master.performances(args.scenario, args.name)
    if args.json:
        _print_json([{"composition": p.composition, "job": p.job, "version": p.version, "machine": p.machine,
                      "outcome": p.outcome.value, "duration": p.duration,
                      "result": None if p.result is None else _result_json(p.result)}
                     for p in performances])  # fmt: skip
        return 1 if any(p.outcome in (PlayOutcome.FAILED, PlayOutcome.UNVERIFIED) for p in performances) else 0
    counts: dict[str, int] = {}
    for p in performances:
        counts[p.outcome.value] = counts.get(p.outcome.value, 0) + 1
        r = p.result
        code = "-" if r is None or r.exit_code is None else str(r.exit_code)
        took = "-" if p.duration is None else f"{p.duration:.1f}s"
        when = "-" if r is None or r.finished is None else time.strftime("%m-%d %H:%M:%S", time.localtime(r.finished))
        tail = "" if r is None else (r.stdout or r.stderr).decode(errors="replace").strip().splitlines()[-1:]
        detail = (tail[0] if tail else "") if r is None or not r.error else r.error
        print(f"{p.machine:<16} v{p.version or '-':<3} {p.outcome.value:<10} exit {code:<4} {took:>7}  {when:<14}  "
              f"{detail[:80]}")  # fmt: skip
    print(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no machine is selected yet")
    return 1 if counts.get(PlayOutcome.FAILED.value) or counts.get(PlayOutcome.UNVERIFIED.value) else 0


def _load_plan(path: str) -> Plan:
    """A plan file: ours in JSON or YAML (``name`` + ``steps``), or gorchestrator's JSON (``digraph`` + ``nodes``)."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        try:
            yaml = importlib.import_module("yaml")  # optional: PyYAML
        except ImportError:
            raise PlanError("YAML plans need PyYAML (pip install pyyaml); or write the plan as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PlanError(f"{path} is not valid JSON: {exc}") from None
    return from_gorch(data) if isinstance(data, dict) and "digraph" in data else parse_plan(data)


def _print_plan(plan: dict[str, Any]) -> None:
    print(f"plan {plan['name']} ({plan['id']}): {'done' if plan['done'] else 'running'}")
    for step in plan["steps"]:
        after = f" after {', '.join(step['depends_on'])}" if step["depends_on"] else ""
        print(f"  {step['id']:<16} {step['state']:<10} on {step['target']}{after}")


async def cmd_plan_run(args: argparse.Namespace) -> int:
    try:
        plan = _load_plan(args.file)
    except (OSError, PlanError) as exc:
        print(f"crc plan run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if (refusal := order_ttl_refusal(args.ttl)) is not None:
        print(f"crc plan run: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    try:
        plan_secrets = _secrets(args, {})
    except ValueError as exc:
        print(f"crc plan run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with await _connect(args) as master:
        submitted = await master.run_plan(args.scenario, plan, ttl=args.ttl, secrets=plan_secrets)
        if not args.follow:
            print(submitted["id"])
            return 0
        print(f"plan {plan.name} ({submitted['id']}) running on the hub", file=sys.stderr)
        done = await master.wait_plan(args.scenario, submitted["id"], timeout=args.timeout)
    if args.json:
        _print_json(done)
    else:
        _print_plan(done)
    return 0 if all(s["state"] == "succeeded" for s in done["steps"]) else 1


async def cmd_plan_show(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        shown = await master.plan(args.scenario, args.plan_id)
    _print_json(shown) if args.json else _print_plan(shown)
    return 0


async def cmd_plan_list(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        plans = await master.plans(args.scenario)
    if args.json:
        _print_json(plans)
    for plan in [] if args.json else plans:
        states = [s["state"] for s in plan["steps"]]
        done = sum(s == "succeeded" for s in states)
        print(f"{plan['id']}  {plan['name']:<20} {'done' if plan['done'] else 'running':<8} {done}/{len(states)} ok")
    return 0


async def cmd_plan_cancel(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        shown = await master.cancel_plan(args.scenario, args.plan_id)
    _print_plan(shown)
    return 0


async def cmd_put(args: argparse.Namespace) -> int:
    local = Path(args.local)
    try:
        mode = int(args.mode, 8)
        with local.open("rb"):  # said before connecting, not as a failure to reach the hub
            pass
    except ValueError:
        print(f"crc put: --mode {args.mode!r} is not an octal file mode (like 644)", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"crc put: cannot read {args.local}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    async with await _connect(args) as master:
        results = await master.put_file(
            args.scenario, args.target, local, args.remote, mode=mode, wait_timeout=args.timeout, sealed=args.secret
        )
    _report(results, json_out=args.json, quiet_ok=False)
    return _exit_code(results)


async def cmd_hosts(args: argparse.Namespace) -> int:
    extra = dict(item.split("=", 1) for item in args.extra)
    async with await _connect(args) as master:
        results = await master.distribute_hosts(args.scenario, args.target, extra=extra, wait_timeout=args.timeout)
    _report(results, json_out=args.json, quiet_ok=False)
    return _exit_code(results)


async def cmd_ping(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        started = time.monotonic()
        results = await master.ping(args.scenario, args.target, timeout=args.timeout)
        took = time.monotonic() - started
    if args.json:
        _print_json([_result_json(r) for r in results])
    else:
        for r in results:
            trust = "" if r.verified or not r.final else " (UNVERIFIED signature)"
            print(f"{r.machine}: {'pong' if r.ok else r.status}{trust}")
        answered = sum(r.ok for r in results)
        print(f"{answered}/{len(results)} answered in {took:.2f} s", file=sys.stderr)
    return _exit_code(results)


def format_event(event: EventInfo) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event.ts))
    if isinstance(step := event.payload, BootStep):
        # A startup script's step; a failed one shows the end of its output under it.
        details = f"{step.step} {step.status}"
        if step.status == BootStatus.FAILED:
            tail = step.detail.strip().splitlines()[-10:]
            details += "".join(f"\n{'':>28}| {line}" for line in tail)
    else:
        details = " ".join(f"{k}={v}" for k, v in event.data.items() if k != "session")
    return f"{event.cursor:>5} {when} {event.machine or '-':<12} {event.kind:<22} {details}"


async def cmd_watch(args: argparse.Namespace) -> int:
    from clients.master import watch  # rich is loaded only here: every other crc call starts faster

    async with await _connect(args) as master:
        items = master.events(args.scenario, args.after, follow=not args.no_follow, output=args.output)
        if not args.json and sys.stdout.isatty():
            await watch.run_live(master, args.scenario, items)
            return 0
        async for item in items:
            if args.json:
                print(watch.json_line(item), flush=True)
            elif isinstance(item, OutputChunk):
                _printer(True)(item)
            else:
                print(format_event(item), flush=True)
    return 0


async def cmd_results(args: argparse.Namespace) -> int:
    async with await _connect(args) as master:
        results = await master.results(args.scenario, args.order_ids or None)
    if args.json:
        _print_json([_result_json(r) for r in results])
        return 0
    for r in results:
        code = "-" if r.exit_code is None else str(r.exit_code)
        trust = "verified" if r.verified else ""
        print(f"{r.order_id}  {r.machine:<12} {r.kind:<9} {r.status:<11} exit {code:<4} {trust}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from clients.master.demo import run_demo

    return asyncio.run(run_demo(verbose=args.verbose))


# parser
def build_parser(commands: Sequence[AddCommands] = ()) -> argparse.ArgumentParser:
    """The master's commands, and those ``commands`` add (``crc_cli.main`` adds ``crc hub``)."""
    parser = argparse.ArgumentParser(
        prog="crc", description="CloudRemoteControl: drive a scenario's machines through a hub."
    )
    parser.add_argument("--hub", help="hub URL (env CRC_HUB): http(s)://host:port or ws(s)://")
    parser.add_argument("--key", help="master private key file (env CRC_KEY; default ~/.config/crc/master.key)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("CRC_LOG_FORMAT") or "text",
        help="text (default) or json: one JSON object per log line on stderr (env CRC_LOG_FORMAT)",
    )
    parser.add_argument(
        "--hub-fingerprint",
        help="sha256:... of the hub's TLS certificate (env CRC_HUB_FINGERPRINT; `crc hub init-tls` prints it); "
        "only that certificate is accepted, and scenario create writes it into the daemon configs",
    )
    sub = parser.add_subparsers(dest="command_name", required=True)

    p = sub.add_parser("keygen", help="create the master key pair")
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.set_defaults(func=cmd_keygen)
    sub.add_parser("pubkey", help="print the master public key").set_defaults(func=cmd_pubkey)
    p = sub.add_parser(
        "rotate-key", help="replace the master key: machines are told (signed with the old key), then the hub"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for online machines (default 60)")
    p.set_defaults(func=cmd_rotate_key)

    for add_commands in commands:
        add_commands(sub)

    scenario = sub.add_parser("scenario", help="create, list, show or delete scenarios").add_subparsers(
        dest="scenario_action", required=True
    )
    p = scenario.add_parser("create", help="declare machines and write one daemon config per machine")
    p.add_argument("name")
    p.add_argument("--machine", action="append", type=_machine_decl, default=[],
                   help="NAME:OS[:ROLE] (none: an empty scenario, for machines that join with a token)")  # fmt: skip
    p.add_argument("--out", help="directory for the daemon configs (they hold private keys; needed with --machine)")
    p.add_argument("--sealed", action="store_true",
                   help="the hub never reads its commands, hosts entries, file contents or output")  # fmt: skip
    p.set_defaults(func=cmd_scenario_create)
    scenario.add_parser("list").set_defaults(func=cmd_scenario_list)
    p = scenario.add_parser("show")
    p.add_argument("name")
    p.set_defaults(func=cmd_scenario_show)
    p = scenario.add_parser(
        "adopt",
        help="certify the machines of a scenario made before certificates, as the hub shows them now (trust on "
        "first use: only against a hub you trust now)",
    )
    p.add_argument("name")
    p.set_defaults(func=cmd_scenario_adopt)
    p = scenario.add_parser("delete", help="delete it and revoke its machines' keys")
    p.add_argument("name")
    p.set_defaults(func=cmd_scenario_delete)
    p = scenario.add_parser("add-machine", help="add machines to it and write their daemon configs")
    p.add_argument("scenario")
    p.add_argument(
        "machines", nargs="+", type=_added_machine, metavar="NAME[:OS]", help="OS: linux (default) or windows"
    )
    p.add_argument("--role", help="their role (default: each machine's name)")
    p.add_argument("--label", action="append", type=_label, metavar="KEY=VALUE", help="a label for targeting")
    p.add_argument("--out", required=True, help="directory for the daemon configs (they hold private keys)")
    p.set_defaults(func=cmd_scenario_add_machine)
    p = scenario.add_parser("remove-machine", help="remove a machine: its key is revoked (as `crc machine revoke`)")
    p.add_argument("scenario")
    p.add_argument("name")
    p.set_defaults(func=cmd_machine_revoke)

    machine = sub.add_parser("machine", help="manage one machine of a scenario").add_subparsers(
        dest="machine_action", required=True
    )
    p = machine.add_parser("revoke", help="revoke its key: its daemon is disconnected and cannot come back")
    p.add_argument("scenario")
    p.add_argument("name")
    p.set_defaults(func=cmd_machine_revoke)
    p = machine.add_parser("approve", help="certify machines that joined with an --approve enrollment token")
    p.add_argument("scenario")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_machine_approve)
    p = machine.add_parser("rotate-key", help="the machine makes a new key pair and switches to it (id unchanged)")
    p.add_argument("scenario")
    p.add_argument("name")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(func=cmd_machine_rotate_key)

    p = sub.add_parser("wait", help="wait until every machine is ready")
    p.add_argument("scenario")
    p.add_argument("--timeout", type=float, default=300.0)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("run", help="run a shell command: crc run SCENARIO TARGET -- COMMAND")
    p.add_argument("scenario")
    p.add_argument("target", help="NAME, role:ROLE, label:KEY=VALUE, a glob (web-*), a comma list, or all")
    p.add_argument("command", nargs="*")
    p.add_argument("--concurrency", help="at most this many machines at once: N or N%% of the targets")
    p.add_argument("--max-failures", help="stop dispatching once more than N (or N%%) targets failed")
    p.add_argument("--target-timeout", type=float, help="cancel a target without a result after this many seconds")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for results (default: until done)")
    p.add_argument("--command-timeout", type=float, default=None, help="kill the command after this many seconds")
    p.add_argument("--cwd")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE")
    p.add_argument(
        "--secret", action="append", default=[], metavar="NAME=@FILE|NAME=env:VAR",
        help="a variable the hub never sees: sealed to each machine, redacted from the output (never NAME=value)",
    )  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="only queue; print the command ids")
    p.set_defaults(func=cmd_run)

    enroll = sub.add_parser("enroll", help="tokens with which machines join a scenario by themselves").add_subparsers(
        dest="enroll_action", required=True
    )
    p = enroll.add_parser("create", help="issue a token (printed once) for crc-daemon enroll")
    p.add_argument("scenario")
    p.add_argument("--role", required=True, help="the ensemble the machines join (their role)")
    p.add_argument("--label", action="append", type=_label, metavar="KEY=VALUE", help="a label they all get")
    p.add_argument("--uses", type=int, default=1, help="how many machines may join with it (default 1)")
    p.add_argument("--ttl", type=_enroll_ttl, default=24 * 3600.0, help="how long it lets machines join (default 24h)")
    p.add_argument("--approve", action="store_true", help="each machine waits for `crc machine approve`")
    p.add_argument("--sealed", action="store_true",
                   help="its scenario is sealed (implied when its machines are certified sealed)")  # fmt: skip
    p.add_argument("--print-install", choices=["linux", "windows", "all"],
                   help="also print the one-liner that installs crc-daemon on an existing machine and joins it: it "
                   "runs the hub's installer only if its SHA-256 is this master's, with the daemon build this master "
                   "publishes (as crc up does)")  # fmt: skip
    p.add_argument("--machine-hub", metavar="URL", help="with --print-install: the hub's URL as the machines reach "
                   "it (default: --hub)")  # fmt: skip
    p.add_argument("--token-path", metavar="PATH", help="with --print-install: the lines read the token from this "
                   "file on the machine instead of holding it (put the token there first)")  # fmt: skip
    p.add_argument("--wheel", type=Path, help="with --print-install: the daemon wheel machines install (default: "
                   "this installation's own build)")  # fmt: skip
    p.set_defaults(func=cmd_enroll_create)
    p = enroll.add_parser("list", help="the scenario's tokens and the machines that joined with each")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_enroll_list)
    p = enroll.add_parser("revoke", help="no machine joins with the token any more")
    p.add_argument("scenario")
    p.add_argument("id")
    p.set_defaults(func=cmd_enroll_revoke)

    token = sub.add_parser("token", help="access tokens for the REST API and dashboard").add_subparsers(
        dest="token_action", required=True
    )
    p = token.add_parser("create", help="make a token (printed once)")
    p.add_argument("--role", choices=["viewer", "operator"], default="viewer",
                   help="viewer: reads only; operator: also runs commands and plans")  # fmt: skip
    p.add_argument("--scenario", help="limit it to this scenario (default: all of yours)")
    p.add_argument("--ttl", type=duration, default=30 * 86400.0, help="lifetime: 3600, 12h, 30d (default), never")
    p.add_argument("--label", default="", help="a note to tell tokens apart")
    p.set_defaults(func=cmd_token_create)
    token.add_parser("list", help="your tokens (never their secrets)").set_defaults(func=cmd_token_list)
    p = token.add_parser("revoke", help="revoke a token at once")
    p.add_argument("id")
    p.set_defaults(func=cmd_token_revoke)
    p = token.add_parser(
        "renew",
        help=f"renew operator tokens' delegations: each signs for {DELEGATION_LIFETIME / 3600:.0f} h after its "
        "last renewal (run it from cron or a timer, or with --every)",
    )
    p.add_argument("--every", type=duration, default=0.0,
                   help="keep running, renewing every DURATION (e.g. 4h); default: once")  # fmt: skip
    p.set_defaults(func=cmd_token_renew)

    job = sub.add_parser("job", help="stored jobs: named scripts kept on the hub").add_subparsers(
        dest="job_action", required=True
    )
    p = job.add_parser("add", help="store (or replace) a job from a script file")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--shell", choices=["sh", "powershell"], default="sh")
    p.add_argument("--scenario", help="sign it for this scenario only (default: any of yours)")
    p.add_argument("--param", action="append", type=_parameter_spec, metavar="NAME[?][:TYPE][=DEFAULT]",
                   help="a parameter its runs are given as $NAME: TYPE string (default), integer, choice(a|b), "
                   "secret; no default: required (? : optional)")  # fmt: skip
    p.set_defaults(func=cmd_job_add)
    job.add_parser("list", help="your stored jobs").set_defaults(func=cmd_job_list)
    p = job.add_parser("show", help="a job's script, as this master signed it")
    p.add_argument("name")
    p.add_argument("--version", type=int, help="exactly this version (refused if the hub's copy is another)")
    p.set_defaults(func=cmd_job_show)
    p = job.add_parser("delete", help="forget a job (its past runs stay in the results)")
    p.add_argument("name")
    p.set_defaults(func=cmd_job_delete)
    p = job.add_parser("run", help="play a job on a target (offline machines run it when they connect)")
    p.add_argument("scenario")
    p.add_argument("target")
    p.add_argument("name")
    p.add_argument("--version", type=int, help="run exactly this version (refused if the hub's copy is another)")
    p.add_argument("--param", action="append", type=_param_value, metavar="NAME=VALUE", help="a parameter's value")
    p.add_argument("--secret", action="append", default=[], metavar="NAME=@FILE|NAME=env:VAR",
                   help="a secret parameter's value: sealed to each machine, redacted from the output")  # fmt: skip
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for results (default: until done)")
    p.add_argument("--no-wait", action="store_true", help="only queue; print the order ids")
    p.add_argument("--concurrency", help="at most this many machines at once: N or N%% of the targets")
    p.add_argument("--max-failures", help="stop dispatching once more than N (or N%%) targets failed")
    p.add_argument("--target-timeout", type=float, help="cancel a target without a result after this many seconds")
    p.set_defaults(func=cmd_job_run)
    p = job.add_parser("assign", help="every machine TARGET selects plays the job once, those joining later too")
    p.add_argument("scenario")
    p.add_argument("target", help="a machine, role:R, label:K=V, a glob, all, or a comma-separated list")
    p.add_argument("name")
    p.add_argument("--version", type=int, help="assign exactly this version (refused if the hub's copy is another)")
    p.add_argument("--param", action="append", type=_param_value, metavar="NAME=VALUE", help="a parameter's value")
    p.add_argument("--env", action="append", type=_env_pair, metavar="KEY=VALUE", help="set for the job's script")
    p.add_argument("--command-timeout", type=float, default=None, help="each play's time limit on the machine (s)")
    p.add_argument("--ttl", type=duration, default=None, help="no member starts it after this (default: never)")
    p.set_defaults(func=cmd_job_assign)
    p = job.add_parser("unassign", help="members that have not played the job yet will not")
    p.add_argument("scenario")
    p.add_argument("name")
    p.add_argument("--target", help="only its assignment to this target")
    p.set_defaults(func=cmd_job_unassign)
    p = job.add_parser("assignments", help="the jobs assigned in a scenario, to which targets")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_job_assignments)
    p = job.add_parser("performances", help="who played an assigned job, who failed, who has not yet")
    p.add_argument("scenario")
    p.add_argument("name")
    p.set_defaults(func=cmd_job_performances)
    p = job.add_parser("runs", help="each run of stored jobs in a scenario: machine, exit code, time, who")
    p.add_argument("scenario")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_job_runs)

    plan = sub.add_parser("plan", help="dependency graphs of steps, run by the hub").add_subparsers(
        dest="plan_action", required=True
    )
    p = plan.add_parser("run", help="hand a plan file (JSON/YAML, or gorchestrator's JSON) to the hub")
    p.add_argument("scenario")
    p.add_argument("file")
    p.add_argument("--follow", action="store_true", help="wait for the end and show every step's state")
    p.add_argument("--timeout", type=float, default=3600.0, help="with --follow: how long to wait")
    p.add_argument("--ttl", type=duration, default=24 * 3600.0,
                   help="how long the signed orders stay valid: 3600, 12h, 7d at most (default 24h)")  # fmt: skip
    p.add_argument("--secret", action="append", default=[], metavar="NAME=@FILE|NAME=env:VAR",
                   help="a secret for the steps using it (secrets: [NAME], or a job's secret parameter)")  # fmt: skip
    p.set_defaults(func=cmd_plan_run)
    for action, func, text in (("show", cmd_plan_show, "a plan's steps and states"),
                               ("cancel", cmd_plan_cancel, "cancel a plan (running steps' orders too)")):  # fmt: skip
        p = plan.add_parser(action, help=text)
        p.add_argument("scenario")
        p.add_argument("plan_id")
        p.set_defaults(func=func)
    p = plan.add_parser("list", help="the scenario's plans")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_plan_list)

    p = sub.add_parser("put", help="write a local file on the target machines")
    p.add_argument("scenario")
    p.add_argument("target")
    p.add_argument("local")
    p.add_argument("remote")
    p.add_argument("--mode", default="644", help="octal file mode (default 644)")
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument(
        "--secret", action="store_true", help="seal the content: the hub carries ciphertext only each machine opens"
    )
    p.set_defaults(func=cmd_put)

    p = sub.add_parser("ping", help="which machines are there and obeying: a signed no-op each answers at once")
    p.add_argument("scenario")
    p.add_argument("target", nargs="?", default="all")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for answers (default 30)")
    p.set_defaults(func=cmd_ping)
    p = sub.add_parser("hosts", help="write every machine's address into each machine's hosts file")
    p.add_argument("scenario")
    p.add_argument("--target", default="all")
    p.add_argument("--extra", action="append", default=[], help="NAME=IP entries to add")
    p.add_argument("--timeout", type=float, default=None)
    p.set_defaults(func=cmd_hosts)

    p = sub.add_parser("watch", help="follow the scenario's events live")
    p.add_argument("scenario")
    p.add_argument("--after", type=int, default=0, help="start after this event number (-1: only new)")
    p.add_argument("--output", action="store_true", help="also show live command output")
    p.add_argument("--no-follow", action="store_true", help="print the log so far and exit")
    # SUPPRESS: without it, the subcommand's default False would overwrite `crc --json watch`'s True.
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per event line")
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("results", help="stored results of the scenario's commands")
    p.add_argument("scenario")
    p.add_argument("order_ids", nargs="*")
    p.set_defaults(func=cmd_results)

    from clients.master.provision_cli import add_provision_parsers

    add_provision_parsers(sub, _connect)

    p = sub.add_parser("demo", help="run the shop scenario on local machines, end to end")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None, *, commands: Sequence[AddCommands] = ()) -> int:
    # `crc run S T [options] -- COMMAND`: split the command off first, or a trailing REMAINDER positional would
    # swallow the options given between TARGET and -- and run them on the machines as part of the command.
    argv = list(sys.argv[1:] if argv is None else argv)
    after_dashes: list[str] | None = None
    if "--" in argv:
        argv, after_dashes = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if after_dashes is not None:
        if not hasattr(args, "command"):
            parser.error("unrecognized arguments: -- " + " ".join(after_dashes))
        args.command = [*args.command, "--", *after_dashes] if args.command else after_dashes
    if args.log_format not in LOG_FORMATS:  # argparse checks choices on the command line, not in defaults
        parser.error(f"CRC_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
    if args.log_format == "json":
        # Text stays as it was (Python's bare last-resort handler); `crc hub` sets its own level and format.
        configure_logging(logging.WARNING, "json", "%(message)s")
    func: Callable[[argparse.Namespace], int | Awaitable[int]] = args.func
    try:
        outcome = func(args)
        if asyncio.iscoroutine(outcome):
            code: int = asyncio.run(outcome)
            return code
        assert isinstance(outcome, int)
        return outcome
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `crc watch | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter from complaining at exit
        return 0
    except (KeyFileError, MasterError) as exc:
        print(f"crc: {exc}", file=sys.stderr)
        return 1
    except RemoteError as exc:
        print(f"crc: the hub said {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except (LinkClosed, CrcError) as exc:
        print(f"crc: {exc}", file=sys.stderr)
        return 1
    except (TimeoutError, OSError) as exc:
        print(
            f"crc: cannot reach the hub at {getattr(args, 'hub', None) or os.environ.get('CRC_HUB')}: {exc}",
            file=sys.stderr,
        )
        return 1
