"""The shop scenario: a MySQL box, a web server and a developer machine brought up from one script.

The commands are harmless stand-ins (they write under a work directory instead of installing packages) so the
scenario runs anywhere, but the shape is the real one: install, configure, distribute hosts, handle a failure.

Run by ``crc demo`` on local daemons, or against your own hub and machines::

    python examples/shop_scenario.py --hub http://127.0.0.1:8750 --scenario shop --workdir /tmp/shop
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from clients.master.models import CommandResult
from clients.master.sdk import Master

Say = Callable[[str], None]

APP_CONFIG = """\
[database]
host = "mysql.shop"
port = 3306
name = "shop"
"""


def _check(step: str, results: list[CommandResult], say: Say) -> bool:
    for r in results:
        mark = "ok" if r.ok else f"{r.status}" + (f" (exit {r.exit_code})" if r.exit_code is not None else "")
        say(f"  {step:<28} {r.machine:<6} {mark}{'' if r.verified else '  [result signature NOT verified]'}")
    return all(r.ok and r.verified for r in results)


async def run(master: Master, scenario: str, workdir: Path, say: Say = print) -> bool:
    """Bring the shop up on the scenario's machines ``mysql``, ``web`` and ``dev``; True if all went to plan."""
    say(f"waiting for every machine of {scenario!r} to report SystemReady...")
    sc = await master.wait_ready(scenario, timeout=60)
    say("ready: " + ", ".join(f"{m.name} ({m.facts.get('os_release') or m.os})" for m in sc.machines))
    root = {m.name: workdir / m.name for m in sc.machines}
    q = {name: shlex.quote(str(path)) for name, path in root.items()}
    ok = True

    say("1. install MySQL and load the schema on mysql")
    ok &= _check("install mysql", await master.run(scenario, "mysql", (
        f"mkdir -p {q['mysql']}/var/lib/mysql && echo 'installing mysql-server 8.0 (simulated)' && "
        f"sleep 0.3 && echo 8.0.36 > {q['mysql']}/var/lib/mysql/VERSION && echo 'mysql-server installed'"
    )), say)  # fmt: skip
    ok &= _check("load schema", await master.run(scenario, "mysql", (
        f"printf 'CREATE TABLE orders (id INT PRIMARY KEY);\\n' > {q['mysql']}/var/lib/mysql/shop.sql && "
        f"wc -l < {q['mysql']}/var/lib/mysql/shop.sql"
    )), say)  # fmt: skip

    say("2. configure the web server: push its config file, then start it")
    ok &= _check("put app.conf", await master.put_file(
        scenario, "web", APP_CONFIG.encode(), str(root["web"] / "etc" / "shop" / "app.conf"), mode=0o640
    ), say)  # fmt: skip
    ok &= _check("start web", await master.run(scenario, "web", (
        f"grep -q mysql.shop {q['web']}/etc/shop/app.conf && echo 'web server started, db host mysql.shop'"
    )), say)  # fmt: skip

    say("3. tell everyone where everyone is (hosts files)")
    ok &= _check("distribute hosts", await master.distribute_hosts(scenario), say)

    say("4. a step that fails, handled: the dev box lacks a tool, so install it and retry")
    first = await master.run(scenario, "dev", "shop-cli --version")
    if first[0].ok:
        say("  shop-cli already present")
    else:
        say(f"  shop-cli --version failed as expected ({first[0].status}, exit {first[0].exit_code}); installing it")
        tool = root["dev"] / "bin" / "shop-cli"
        ok &= _check("install shop-cli", await master.put_file(
            scenario, "dev", b"#!/bin/sh\necho shop-cli 1.0\n", str(tool), mode=0o755
        ), say)  # fmt: skip
        ok &= _check("retry shop-cli", await master.run(scenario, "dev", f"{shlex.quote(str(tool))} --version"), say)

    say("5. smoke test across the scenario")
    ok &= _check("uptime", await master.run(scenario, "all", "echo $(hostname) up"), say)
    return bool(ok)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", required=True)
    parser.add_argument("--key", help="master key file (default: CRC_KEY or ~/.config/crc/master.key)")
    parser.add_argument("--scenario", default="shop")
    parser.add_argument("--workdir", type=Path, required=True, help="absolute directory on the machines")
    args = parser.parse_args(argv)

    async def go() -> bool:
        async with await Master.connect(args.hub, args.key) as master:
            return await run(master, args.scenario, args.workdir.resolve())

    return 0 if asyncio.run(go()) else 1


if __name__ == "__main__":
    sys.exit(main())
