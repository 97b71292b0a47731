"""A swarm of real daemons (as ``bench.swarm``) that each wait for scenario messages and log when they arrive.

    python -m bench.broadcast_swarm CONFIG_DIR STATE_ROOT OUT_FILE [--topic T]

Each ``*.toml`` in CONFIG_DIR becomes one ``Daemon``, unchanged but for one override: ``_on_response`` (where the
hub's answer to a pending request lands) notes ``time.time()`` when the answer is a scenario message. Each
daemon keeps a receive pending, the way ``crc-daemon recv`` does: ``Daemon._local_request({"op": "recv"})``, the
method the daemon's local socket forwards to (a long-poll ``MsgRecv`` to the hub, then the mailbox cursor saved),
and asks again as soon as it has one. Lines ``MACHINE BROADCAST TIME`` (the broadcast number is the first 8
bytes of the message) are appended to OUT_FILE every 0.1 s (not per message: the daemons share one event loop).
SIGTERM stops all.

``SwarmProcess`` starts such a swarm (or ``bench.swarm``) in a process of its own and always stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, child_env
from bench.hub_process import raise_nofile_limit
from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import load_config
from protocol import Envelope
from protocol.messages import Response

FLUSH_EVERY = 0.1
RECV_TIMEOUT = 300.0


class TimedDaemon(Daemon):
    """A ``Daemon`` noting when each scenario message reaches it (nothing else changes)."""

    def __init__(self, *args: Any, sink: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = sink

    async def _on_response(self, envelope: Envelope) -> None:
        now = time.time()
        body = envelope.body
        if isinstance(body, Response) and "seq" in body.data and "topic" in body.data:
            data = bytes(body.data.get("data") or b"")
            with contextlib.suppress(ValueError):
                self.sink.append(f"{self.config.machine_name} {int(data[:8])} {now:.6f}\n")
        await super()._on_response(envelope)


async def listen(daemon: Daemon, topic: str) -> None:
    """Keep one receive pending at the hub, as a script looping on ``crc-daemon recv TOPIC`` would."""
    while True:
        if daemon.link is None:
            await asyncio.sleep(0.1)
            continue
        answer = await daemon._local_request({"op": "recv", "topic": topic, "timeout": RECV_TIMEOUT})
        if not answer.get("ok") and answer.get("code") != "timeout":
            await asyncio.sleep(0.2)  # not connected (yet, or any more): ask again shortly


async def flush(sink: list[str], out: Path) -> None:
    with out.open("a") as f:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            if sink:
                lines, sink[:] = sink[:], []
                f.write("".join(lines))
                f.flush()


async def run(configs: Path, state_root: Path, out: Path, topic: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sink: list[str] = []
    daemons = []
    for path in sorted(configs.glob("*.toml")):
        state = state_root / path.stem
        options = DaemonOptions(state_dir=state / "state", hosts_file=state / "hosts", reconnect_max=5.0)
        daemons.append(TimedDaemon(load_config(path), options, sink=sink))
    print(f"broadcast swarm: {len(daemons)} daemons", flush=True)
    helpers = [asyncio.create_task(listen(d, topic)) for d in daemons]
    helpers.append(asyncio.create_task(flush(sink, out)))
    try:
        await asyncio.gather(*(d.run(stop) for d in daemons))
    finally:
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)


class SwarmProcess:
    """``python -m MODULE ARGS...`` in a session of its own, output to a log; stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, module: str, args: list[str], log_path: Path) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def check(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.argv[2]} exited with {self.popen.returncode}; see {self.log_path}")

    def stop(self) -> None:
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)

    def __enter__(self) -> SwarmProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", type=Path)
    parser.add_argument("state_root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--topic", default="bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s swarm %(levelname)s %(message)s")
    raise_nofile_limit()
    asyncio.run(run(args.configs, args.state_root, args.out, args.topic))
    return 0


if __name__ == "__main__":
    sys.exit(main())
