"""Many real daemons in one process, for tests that need hundreds of machines on a 2-core runner.

    python -m bench.swarm CONFIG_DIR STATE_ROOT

Each ``*.toml`` in CONFIG_DIR becomes one ``Daemon`` (the same class ``crc-daemon`` runs) with its own state
dir, hosts file, journal and WebSocket session; only the process and event loop are shared. SIGTERM stops all.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from clients.daemon.agent import Daemon, DaemonOptions
from clients.daemon.config import load_config


async def run(configs: Path, state_root: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    daemons = []
    for path in sorted(configs.glob("*.toml")):
        state = state_root / path.stem
        options = DaemonOptions(state_dir=state / "state", hosts_file=state / "hosts", reconnect_max=5.0)
        daemons.append(Daemon(load_config(path), options))
    print(f"swarm: {len(daemons)} daemons", flush=True)
    await asyncio.gather(*(d.run(stop) for d in daemons))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s swarm %(levelname)s %(message)s")
    asyncio.run(run(Path(sys.argv[1]), Path(sys.argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
