"""``crc-daemon``: run this machine's daemon (normally from systemd or a Windows service)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from clients.daemon.agent import DAEMON_VERSION, Daemon, DaemonOptions, Revoked
from clients.daemon.config import ConfigError, load_config
from clients.daemon.platform import current_platform

EXIT_CONFIG = 2
# systemd's unit sets RestartPreventExitStatus=3: a revoked machine must not hammer the hub forever.
EXIT_REVOKED = 3


def build_parser() -> argparse.ArgumentParser:
    platform = current_platform()
    parser = argparse.ArgumentParser(
        prog="crc-daemon", description="CRC daemon: connects out to the hub and runs signed orders."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=platform.config_file,
        help=f"TOML config (default {platform.config_file})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=platform.state_dir,
        help=f"journal and spool (default {platform.state_dir})",
    )
    parser.add_argument(
        "--hosts-file",
        type=Path,
        default=platform.hosts_file,
        help=f"hosts file to manage (default {platform.hosts_file})",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"crc-daemon {DAEMON_VERSION}")
    return parser


async def _run(daemon: Daemon) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await daemon.run(stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s crc-daemon %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"crc-daemon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    options = DaemonOptions(state_dir=args.state_dir, hosts_file=args.hosts_file, platform=current_platform())
    try:
        asyncio.run(_run(Daemon(config, options)))
    except Revoked as exc:
        print(f"crc-daemon: {exc}; exiting", file=sys.stderr)
        return EXIT_REVOKED
    return 0


if __name__ == "__main__":
    sys.exit(main())
