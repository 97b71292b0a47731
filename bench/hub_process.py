"""The real hub (``server.app.serve``) in a process of its own, for benchmarks.

    python -m bench.hub_process --data-dir D --master-key ed25519:... --ready-file F [--default-limits]
        [--redis-url redis://127.0.0.1:PORT/0]

Same code path as ``crc hub --dev``, with one difference unless ``--default-limits``: the per-session rate limit
(2,000 msgs/s, burst 5,000, not settable from the CLI) is lifted, otherwise a flood measures the limiter.
With ``--redis-url`` the hub is a replica (Redis store and backplane, as ``crc hub --redis``), with a replica id
of its own (host-pid-random, as ``crc hub`` defaults to).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
from dataclasses import replace
from pathlib import Path

from server import eventloop
from server.app import serve
from server.settings import HubSettings, default_replica_id


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit: a hub holding 10,000 sessions needs a socket for each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        # If refused, the soft limit stays: connections beyond it fail and the benchmark says so.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--master-key", required=True, help="public key of the master to enrol")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--default-limits", action="store_true", help="keep the per-session rate limit")
    parser.add_argument("--redis-url", default="", help="Redis store and backplane shared with other replicas")
    args = parser.parse_args()
    settings = HubSettings(data_dir=args.data_dir, port=0, dev_master_key=args.master_key)
    if args.redis_url:
        settings = replace(settings, redis_url=args.redis_url, replica_id=default_replica_id())
    if not args.default_limits:
        settings = replace(settings, session_rate=1e9, session_burst=1e9)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bench-hub %(levelname)s %(name)s: %(message)s")
    raise_nofile_limit()
    eventloop.run(serve(settings, ready_file=args.ready_file))  # CRC_EVENT_LOOP=uvloop to measure with uvloop


if __name__ == "__main__":
    main()
