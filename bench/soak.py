"""A bounded soak: a hub serving a swarm of daemons and a master that keeps working them, for N minutes, with
the hub's memory sampled throughout. Off by default (not part of ``python -m bench``):

    python -m bench.soak [--minutes 10] [--daemons 50] [--json FILE]

Each round (about one a second) runs a command on every daemon and reads its results; every tenth round also
writes a file and the hosts file everywhere. The record compares the hub's resident memory at the end with the
memory after the first tenth of the run (warm-up: first sessions, caches, SQLite pages); target: at most 1.2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.common import ROOT, Record, Server, child_env
from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from protocol import Identity

NAME = "soak_memory"
TARGET = 1.2


async def soak(minutes: float, daemons: int, work: Path) -> tuple[Record, list[tuple[float, float, int]]]:
    master_key = Identity.generate(secrets.token_bytes)
    hub = Server(
        "soak-hub",
        ["-m", "bench.hub_process", "--data-dir", str(work / "hub"), "--master-key", master_key.public.to_text(),
         "--default-limits"],
        work,
    )  # fmt: skip
    samples: list[tuple[float, float, int]] = []  # (seconds, hub RSS in MiB, rounds so far)
    swarm: subprocess.Popen[bytes] | None = None
    async with hub:
        assert hub.popen is not None
        hub_process = psutil.Process(hub.popen.pid)
        async with await Master.connect(hub.url, master_key) as master:
            minted = await master.create_scenario("soak", [(f"d{i:04d}", "linux") for i in range(daemons)])
            for m in minted:
                config = DaemonConfig(hub.url, "soak", m.name, m.identity, master_key.public)
                write_config(work / "configs" / f"{m.name}.toml", config)
            with (work / "swarm.log").open("ab") as log:
                swarm = subprocess.Popen(
                    [sys.executable, "-m", "bench.swarm", str(work / "configs"), str(work / "swarm")],
                    env=child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )  # fmt: skip
            try:
                await master.wait_ready("soak", timeout=120)
                started = time.monotonic()
                ends = started + minutes * 60
                rounds = 0
                next_sample = started
                while time.monotonic() < ends:
                    results = await master.run("soak", "all", f"echo round {rounds}", wait_timeout=60)
                    if sum(r.ok for r in results) != daemons:
                        raise RuntimeError(f"round {rounds}: only {sum(r.ok for r in results)}/{daemons} succeeded")
                    if rounds % 10 == 0:
                        await master.put_file(
                            "soak", "all", os.urandom(4096), str(work / "written.bin"), wait_timeout=60
                        )
                        await master.distribute_hosts("soak", "all", wait_timeout=60)
                    rounds += 1
                    if time.monotonic() >= next_sample:
                        rss = hub_process.memory_info().rss / 2**20
                        samples.append((time.monotonic() - started, rss, rounds))
                        next_sample += max(1.0, minutes * 60 / 30)
                    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started) % 1.0))
                samples.append((time.monotonic() - started, hub_process.memory_info().rss / 2**20, rounds))
            finally:
                os.killpg(swarm.pid, signal.SIGTERM)
                try:
                    swarm.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(swarm.pid, signal.SIGKILL)
                    swarm.wait(5)
    warm = next(rss for seconds, rss, _ in samples if seconds >= samples[-1][0] / 10)
    end = samples[-1][1]
    ratio = end / warm if warm else 0.0
    record = Record(NAME, "MiB hub RSS", round(end, 1), round(warm, 1), "the same hub after warm-up",
                    round(ratio, 3), TARGET, ratio <= TARGET)  # fmt: skip
    return record, samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to soak (default 10)")
    parser.add_argument("--daemons", type=int, default=50, help="daemons in the swarm (default 50)")
    parser.add_argument("--json", type=Path, help="write the record (and the samples) here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="crc-soak-", dir=None) as tmp:
        record, samples = asyncio.run(soak(args.minutes, args.daemons, Path(tmp)))
    print(f"{'seconds':>8} {'hub MiB':>8} {'rounds':>7}")
    for seconds, rss, rounds in samples:
        print(f"{seconds:8.0f} {rss:8.1f} {rounds:7d}")
    verdict = "met" if record.met else "NOT met"
    print(f"hub RSS {record.baseline} MiB after warm-up -> {record.ours} MiB at the end: {record.ratio}x "
          f"(target <= {TARGET}x: {verdict})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"record": record.to_json(), "samples": samples}, indent=2))
    return 0 if record.met else 1


if __name__ == "__main__":
    sys.exit(main())
