"""``crc demo``: the whole path on this machine: a hub, three daemons as local processes, the shop scenario.

Everything lives in a temporary directory (hub data, master key, daemon state and hosts files) and is removed
at the end; the user's own key and /etc/hosts are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from clients.daemon.config import DaemonConfig, write_config
from clients.master.keys import write_private_key
from clients.master.models import EventInfo, OutputChunk
from clients.master.sdk import Master
from protocol import Identity
from protocol.events import BootStep, CommandFinished, CommandQueued, EventKind, EventPayload

MACHINES = [("mysql", "linux", "database"), ("web", "linux", "web"), ("dev", "linux", "dev")]
SCENARIO = "shop"


def _detail(payload: EventPayload | None) -> str:
    """What a line of the demo's event log shows after the kind: the command or path queued, or a status."""
    if isinstance(payload, CommandQueued):
        return payload.command or payload.path or ""
    if isinstance(payload, CommandFinished | BootStep):
        return payload.status
    return ""


class Demo:
    def __init__(self, root: Path, verbose: bool) -> None:
        self.root = root
        self.verbose = verbose
        self.key_path = root / "master.key"
        self.processes: list[tuple[str, asyncio.subprocess.Process]] = []
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    async def spawn(self, name: str, *args: str) -> asyncio.subprocess.Process:
        log = (self.root / f"{name}.log").open("wb")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )
        self.processes.append((name, proc))
        return proc

    async def start_hub(self) -> str:
        ready = self.root / "hub.url"
        await self.spawn(
            "hub", "-m", "crc_cli", "--key", str(self.key_path), "hub", "--port", "0",
            "--data-dir", str(self.root / "hub"), "--dev", "--ready-file", str(ready),
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not ready.exists():
            if time.monotonic() > deadline or self.processes[-1][1].returncode is not None:
                raise RuntimeError(f"the hub did not start; see {self.root / 'hub.log'}:\n{self._tail('hub')}")
            await asyncio.sleep(0.05)
        return ready.read_text().strip()

    def _tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / f"{name}.log").read_text(errors="replace").splitlines()[-20:])
        return ""

    async def start_daemon(self, name: str, config: Path) -> None:
        state = self.root / "machines" / name / "state"
        hosts = self.root / "machines" / name / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text("127.0.0.1\tlocalhost\n")
        await self.spawn(
            name,
            "-m",
            "clients.daemon.cli",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--hosts-file",
            str(hosts),
        )

    async def watch(self, master: Master) -> None:
        async for item in master.events(SCENARIO, 0, output=self.verbose):
            if isinstance(item, OutputChunk):
                for line in item.data.decode("utf-8", "replace").splitlines():
                    self.say(f"    {item.machine}> {line}")
            elif isinstance(item, EventInfo) and (
                self.verbose or item.kind not in (EventKind.COMMAND_DELIVERED, EventKind.COMMAND_STARTED)
            ):
                detail = _detail(item.payload)
                self.say(f"  event {item.cursor:>3} {item.machine or SCENARIO:<6} {item.kind} {detail[:60]}")

    async def stop_all(self) -> None:
        for _name, proc in reversed(self.processes):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()


async def run_demo(verbose: bool = False) -> int:
    from examples.shop_scenario import run as run_shop

    with tempfile.TemporaryDirectory(prefix="crc-demo-") as tmp:
        demo = Demo(Path(tmp), verbose)
        write_private_key(demo.key_path, Identity.generate(os.urandom))
        ok = False
        try:
            url = await demo.start_hub()
            demo.say(f"hub running at {url} (embedded SQLite store in {tmp}/hub)")
            async with await Master.connect(url, demo.key_path) as master:
                machines = await master.create_scenario(SCENARIO, MACHINES)
                demo.say(f"scenario {SCENARIO!r} created with machines {', '.join(m.name for m in machines)}")
                for m in machines:
                    config = demo.root / "configs" / f"{m.name}.toml"
                    write_config(config, DaemonConfig(url, SCENARIO, m.name, m.identity, master.identity.public))
                    await demo.start_daemon(m.name, config)
                demo.say("daemons started as local processes (each with its own state dir and hosts file)")
                watcher = asyncio.create_task(demo.watch(master))
                try:
                    ok = await run_shop(master, SCENARIO, demo.root / "machines", say=demo.say)
                    results = await master.results(SCENARIO)
                    demo.say(
                        f"{len(results)} commands recorded, {sum(r.verified for r in results)} with verified signatures"
                    )
                    hosts = (demo.root / "machines" / "web" / "hosts").read_text()
                    demo.say(
                        "web's hosts file now holds:\n" + "\n".join("      " + line for line in hosts.splitlines())
                    )
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                await master.delete_scenario(SCENARIO)
                demo.say("scenario deleted: machine keys revoked, daemons disconnected")
        except Exception as exc:
            demo.say(f"demo failed: {exc}")
            for name, _ in demo.processes:
                print(f"--- {name}.log (last lines) ---\n{demo._tail(name)}", file=sys.stderr)
            ok = False
        finally:
            await demo.stop_all()
        demo.say("demo " + ("finished: every step went to plan" if ok else "FAILED"))
        return 0 if ok else 1
