"""Runs the benchmark scenarios, prints a table and optionally writes the records as JSON.

    python -m bench [--quick] [--json FILE] [--only NAME]

Every figure is a median of N runs (3; 1 with --quick) measured in the same run as its baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench import (
    broadcast,
    durable_commands,
    idle_connections,
    latency,
    output_frames,
    plan_engine,
    protocol_layers,
    replicas,
)
from bench.common import Config, Record

Scenario = Callable[[Config], Awaitable[list[Record]]]

SCENARIOS: dict[str, Scenario] = {
    protocol_layers.NAME: protocol_layers.run,
    output_frames.NAME: output_frames.run,
    durable_commands.NAME: durable_commands.run,
    plan_engine.NAME: plan_engine.run,
    idle_connections.NAME: idle_connections.run,
    replicas.NAME: replicas.run,
    latency.NAME: latency.run,
    broadcast.NAME: broadcast.run,
}
# A whole scenario is abandoned after this long (each flood inside is bounded too).
SCENARIO_TIMEOUT = {True: 60.0, False: 240.0}

COLUMNS = ("scenario", "unit", "ours", "baseline", "baseline_name", "ratio", "target", "met")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.0f}"
    return str(value)


def table(records: list[Record]) -> str:
    rows = [COLUMNS, *([_cell(getattr(r, c)) for c in COLUMNS] for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(w) if i in (0, 1, 4) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run_all(names: list[str], config: Config, failed: list[str] | None = None) -> list[Record]:
    """Every scenario in turn. One that fails (a missing redis-server, a timeout) is reported and named in
    ``failed``, and the others still run: a long run should not be lost to one scenario."""
    records: list[Record] = []
    for name in names:
        start = time.monotonic()
        print(f"running {name}...", file=sys.stderr, flush=True)
        try:
            records += await asyncio.wait_for(SCENARIOS[name](config), SCENARIO_TIMEOUT[config.quick])
        except Exception as exc:  # reported; the run's exit status says so
            print(f"  {name} FAILED after {time.monotonic() - start:.1f} s: {exc!r}", file=sys.stderr, flush=True)
            if failed is not None:
                failed.append(name)
            continue
        print(f"  {name} took {time.monotonic() - start:.1f} s", file=sys.stderr, flush=True)
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 run per figure with fewer messages (~1 minute)")
    parser.add_argument("--json", type=Path, help="write the records here as a JSON list")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append", help="run only this scenario")
    parser.add_argument("--messages", type=int, help=argparse.SUPPRESS)  # overrides the flood size (smoke test)
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    messages = args.messages or (10_000 if args.quick else 30_000)
    with tempfile.TemporaryDirectory(prefix="crc-bench-") as tmp:
        config = Config(quick=args.quick, repeats=1 if args.quick else 3, messages=messages, work_dir=Path(tmp))
        failed: list[str] = []
        records = asyncio.run(run_all(names, config, failed))
    print(table(records))
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in records], indent=2) + "\n")
    if failed:
        print(f"failed: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0
