"""``crc up FILE`` and ``crc down NAME``: provision a scenario's machines from a scenario file, and remove them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from clients.master.sdk import Master
from provisioning.daemon_update import UpdateOutcome, update_daemons
from provisioning.hubinfo import HubInfoError
from provisioning.lifecycle import DEFAULT_QUIET_WARNING, MachineProgress, Outcome, UpError, UpPlan, down, up
from provisioning.providers import LocalProvider, Provider, ProviderError, VultrProvider
from provisioning.records import ScenarioRecord, forget_record, load_record, save_record, state_home
from provisioning.release import ReleaseError
from provisioning.scenario_file import ProviderSettings, ScenarioFileError, load_scenario
from provisioning.vultr import DEFAULT_BASE_URL, VultrClient, VultrError

VULTR_URL_ENV = "VULTR_API_URL"
# Real seconds per API second for every wait of the Vultr client (polls, locks, Retry-After): only for an
# emulator that compresses its own time by the same factor (tests); never set against the real API.
VULTR_TIME_SCALE_ENV = "CRC_VULTR_TIME_SCALE"


def make_provider(kind: str, settings: ProviderSettings, args: argparse.Namespace) -> Provider:
    if kind == "local":
        return LocalProvider(args.local_dir or state_home() / "local", netns=settings.netns)
    base_url = args.vultr_url or os.environ.get(VULTR_URL_ENV) or DEFAULT_BASE_URL
    return VultrProvider(VultrClient(base_url=base_url, time_scale=_time_scale()), settings)


def _time_scale() -> float:
    raw = os.environ.get(VULTR_TIME_SCALE_ENV, "")
    try:
        scale = float(raw) if raw else 1.0
    except ValueError:
        raise VultrError(0, f"{VULTR_TIME_SCALE_ENV} must be a positive number, not {raw!r}") from None
    if not 0 < scale <= 1:
        raise VultrError(0, f"{VULTR_TIME_SCALE_ENV} must be in (0, 1], not {raw!r}")
    return scale


def _settings_from(raw: dict[str, Any]) -> ProviderSettings:
    known = {f.name for f in dataclasses.fields(ProviderSettings)}
    values = {k: v for k, v in raw.items() if k in known}
    if "tags" in values:
        values["tags"] = tuple(values["tags"])
    return ProviderSettings(**values)


class Clock:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)


async def cmd_up(args: argparse.Namespace, master_for: Any) -> int:
    try:
        spec = load_scenario(args.file)
    except ScenarioFileError as exc:
        print(f"crc up: {exc}", file=sys.stderr)
        return 2
    kind = args.provider or spec.provider.kind
    settings = dataclasses.replace(spec.provider, kind=kind)
    if args.netns is not None:
        settings = dataclasses.replace(settings, netns=args.netns)
    if spec.hub and not args.hub and not os.environ.get("CRC_HUB"):
        args.hub = spec.hub
    if spec.hub_pin and not args.hub_fingerprint:
        args.hub_fingerprint = spec.hub_pin
    clock = Clock()
    width = max(len(m.name) for m in spec.machines)

    def progress(machine: MachineProgress, text: str) -> None:
        if not args.json:
            clock.line(f"{machine.name:<{width}}  {text}")

    def notice(text: str) -> None:
        print(f"crc up: {text}", file=sys.stderr, flush=True)

    def planned(plan: UpPlan) -> None:
        if plan.pruned:
            notice(f"removed {', '.join(plan.pruned)} (in scenario {spec.name} but no longer in {args.file})")
        elif plan.extra:
            notice(f"{', '.join(plan.extra)} of scenario {spec.name} are not in {args.file}: left as they are "
                   "(`crc up --prune` removes them)")  # fmt: skip
        if args.json:
            return
        if not plan.present:
            clock.line(f"scenario {spec.name}: creating {len(plan.creating)} machines with the {kind} provider")
        elif plan.creating:
            clock.line(f"scenario {spec.name}: adding {', '.join(plan.creating)} with the {kind} provider "
                       f"({len(plan.present)} present)")  # fmt: skip
        else:
            clock.line(f"scenario {spec.name}: nothing to add ({len(plan.present)} machines present)")

    try:
        provider = make_provider(kind, settings, args)
    except VultrError as exc:
        print(f"crc up: {exc}", file=sys.stderr)
        return 2
    try:
        master: Master = await master_for(args)
        async with master:
            save_record(ScenarioRecord(spec.name, kind, master.url, _settings_json(settings, args)))
            report = await up(
                master,
                spec,
                provider,
                wheel=args.wheel,
                timeout=args.timeout,
                progress=progress,
                notice=notice,
                quiet_warning=args.quiet_warning,
                prune=args.prune,
                planned=planned,
            )
    except (UpError, HubInfoError, ProviderError) as exc:
        print(f"crc up: {exc}", file=sys.stderr)
        return 1
    finally:
        await provider.close()
    if args.json:
        machines = [dataclasses.asdict(m) for m in report.machines.values()]
        summary = {"scenario": report.scenario, "ok": report.ok, "seconds": round(report.seconds, 1)}
        if report.plan is not None:
            summary |= {"present": report.plan.present, "extra": report.plan.extra, "pruned": report.plan.pruned}
        print(json.dumps({**summary, "machines": machines}, indent=2))
    elif report.machines:
        ready = sum(m.outcome is Outcome.READY for m in report.machines.values())
        clock.line(f"{ready}/{len(report.machines)} machines ready")
        for failed in report.failed:
            where = f" at step {failed.step!r}" if failed.step else ""
            print(f"  {failed.name}: {failed.outcome.value}{where}", file=sys.stderr)
            for line in failed.detail.strip().splitlines()[-20:]:
                print(f"    | {line}", file=sys.stderr)
        if not report.ok:
            print(f"crc up: not every machine is ready; `crc down {spec.name}` removes them all", file=sys.stderr)
    return 0 if report.ok else 1


def _settings_json(settings: ProviderSettings, args: argparse.Namespace) -> dict[str, Any]:
    data = dataclasses.asdict(settings)
    if args.local_dir:
        data["local_dir"] = str(args.local_dir)
    if args.vultr_url:
        data["vultr_url"] = args.vultr_url
    return data


async def cmd_down(args: argparse.Namespace, master_for: Any) -> int:
    record = load_record(args.name)
    kind = args.provider or (record.provider if record else "")
    if not kind:
        print(
            f"crc down: no record of where {args.name!r}'s machines are (crc up writes one in "
            f"{state_home() / 'scenarios'}); pass --provider vultr|local",
            file=sys.stderr,
        )
        return 2
    raw = dict(record.settings) if record and record.provider == kind else {}
    if not args.local_dir and raw.get("local_dir"):
        args.local_dir = Path(raw["local_dir"])
    if not args.vultr_url and raw.get("vultr_url"):
        args.vultr_url = raw["vultr_url"]
    if record and not args.hub and not os.environ.get("CRC_HUB"):
        args.hub = record.hub
    try:
        provider = make_provider(kind, _settings_from(raw), args)
    except VultrError as exc:
        print(f"crc down: {exc}", file=sys.stderr)
        return 2
    clock = Clock()
    try:
        async with await master_for(args) as master:
            report = await down(master, args.name, provider, clock.line)
    except ProviderError as exc:
        print(f"crc down: {exc}", file=sys.stderr)
        return 1
    finally:
        await provider.close()
    forget_record(args.name)
    gone = report.teardown
    print(
        f"{args.name}: deleted {len(gone.machines)} machines, {len(gone.scripts)} startup scripts; "
        + ("scenario and machine keys deleted" if report.scenario_deleted else "no scenario left on the hub")
    )
    for name in gone.machines:
        print(f"  machine {name}")
    for name in gone.scripts:
        print(f"  script {name}")
    return 0


async def cmd_update(args: argparse.Namespace, master_for: Any) -> int:
    clock = Clock()

    def progress(machine: str, text: str) -> None:
        if not args.json:
            clock.line(f"{machine:<16} {text}")

    try:
        async with await master_for(args) as master:
            outcomes = await update_daemons(
                master, args.scenario, args.target, wheel=args.wheel, timeout=args.timeout, progress=progress
            )
    except (HubInfoError, ReleaseError) as exc:
        print(f"crc update: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(o) for o in outcomes.values()], indent=2))
    else:
        updated = sum(o.outcome is UpdateOutcome.UPDATED for o in outcomes.values())
        clock.line(f"{updated}/{len(outcomes)} daemons updated")
        for o in outcomes.values():
            if o.outcome is not UpdateOutcome.UPDATED:
                print(f"  {o.machine}: {o.outcome.value} {o.detail}".rstrip(), file=sys.stderr)
    return 0 if all(o.outcome is UpdateOutcome.UPDATED for o in outcomes.values()) else 1


WHEEL_HELP = (
    "the daemon wheel machines install (default: this installation's own build); it and this master's dependency "
    "lock go to the hub's /v1/dist/, and machines check both against the hashes this master signs"
)


def add_provision_parsers(sub: Any, master_for: Any) -> None:
    """``crc up`` / ``crc down``; ``master_for(args)`` connects the master as the other commands do."""

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--provider", choices=["vultr", "local"], help="where machines are made (default: the file's)")
        p.add_argument(
            "--local-dir", type=Path, help="the local provider's machines (default ~/.local/state/crc/local)"
        )
        p.add_argument("--vultr-url", help=f"Vultr API root (env {VULTR_URL_ENV}; default {DEFAULT_BASE_URL})")

    p = sub.add_parser(
        "up",
        help="create a scenario's machines from a scenario file and wait until all are ready; on a scenario that "
        "exists, add the machines the file gained",
    )
    p.add_argument("file", type=Path, help="scenario file (TOML)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for SystemReady (default 900)")
    p.add_argument("--wheel", type=Path, help=WHEEL_HELP)
    p.add_argument(
        "--quiet-warning",
        type=float,
        default=DEFAULT_QUIET_WARNING,
        metavar="SECONDS",
        help=f"say so when no machine reported a boot step by then (default {DEFAULT_QUIET_WARNING:.0f}; 0: never)",
    )
    netns = p.add_mutually_exclusive_group()
    netns.add_argument("--netns", dest="netns", action="store_true", default=None, help="local: network namespaces")
    netns.add_argument("--no-netns", dest="netns", action="store_false", help="local: plain processes")
    p.add_argument(
        "--prune", action="store_true", help="on a scenario that exists: remove its machines the file does not name"
    )
    common(p)

    async def run_up(args: argparse.Namespace) -> int:
        return await cmd_up(args, master_for)

    p.set_defaults(func=run_up)
    p = sub.add_parser("down", help="delete a scenario's machines, startup scripts and keys (safe to repeat)")
    p.add_argument("name")
    common(p)

    async def run_down(args: argparse.Namespace) -> int:
        return await cmd_down(args, master_for)

    p.set_defaults(func=run_down)
    p = sub.add_parser("update", help="move daemons to a daemon build this master vouches for; rolls back")
    p.add_argument("scenario")
    p.add_argument("target", nargs="?", default="all", help="a machine name, NAME1,NAME2, or all (default)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every daemon (default 600)")
    p.add_argument("--wheel", type=Path, help=WHEEL_HELP)

    async def run_update(args: argparse.Namespace) -> int:
        return await cmd_update(args, master_for)

    p.set_defaults(func=run_update)
