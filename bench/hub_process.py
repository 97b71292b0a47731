"""The real hub (``server.app.serve``) in a process of its own, for benchmarks.

    python -m bench.hub_process --data-dir D --master-key ed25519:... --ready-file F [--default-limits]

Same code path as ``crc hub --dev``, with one difference unless ``--default-limits``: the per-session rate limit
(2,000 msgs/s, burst 5,000, not settable from the CLI) is lifted, otherwise a flood measures the limiter.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import replace
from pathlib import Path

from server.app import serve
from server.settings import HubSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--master-key", required=True, help="public key of the master to enrol")
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--default-limits", action="store_true", help="keep the per-session rate limit")
    args = parser.parse_args()
    settings = HubSettings(data_dir=args.data_dir, port=0, dev_master_key=args.master_key)
    if not args.default_limits:
        settings = replace(settings, session_rate=1e9, session_burst=1e9)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s bench-hub %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(settings, ready_file=args.ready_file))


if __name__ == "__main__":
    main()
