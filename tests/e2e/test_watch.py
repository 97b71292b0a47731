"""``crc watch`` against a real hub: JSON lines, plain lines when not on a terminal, the rich view's final frame;
and a hub started with ``--log-format json`` logging JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.console import Console

from clients.master.sdk import Master
from clients.master.watch import run_live
from tests.e2e.support import Deployment, HubProcess, run_crc


async def _shop_with_a_command(deploy: Callable[..., Awaitable[Deployment]], master: Master) -> None:
    await deploy("shop", "mysql", "web")
    (result,) = await master.run("shop", "mysql", "echo watched", wait_timeout=15)
    assert result.ok, result


async def test_json_watch_prints_one_event_object_per_line(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await _shop_with_a_command(deploy, master)

    done = await asyncio.to_thread(run_crc, hub, "--json", "watch", "shop", "--no-follow", timeout=20)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert {"machine_ready", "command_queued", "command_finished"} <= {e["kind"] for e in events}
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(set(cursors)), cursors
    assert all({"cursor", "ts", "kind", "machine", "data"} <= e.keys() for e in events)
    assert {e["machine"] for e in events if e["kind"] == "machine_ready"} == {"mysql", "web"}

    after = await asyncio.to_thread(run_crc, hub, "watch", "shop", "--no-follow", "--json", "--after", "1")
    assert after.returncode == 0, after.stderr
    later = [json.loads(line)["cursor"] for line in after.stdout.splitlines()]
    assert later[: len(cursors) - 1] == cursors[1:]


async def test_watch_off_a_terminal_keeps_the_plain_lines(
    hub: HubProcess, master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await _shop_with_a_command(deploy, master)

    done = await asyncio.to_thread(run_crc, hub, "watch", "shop", "--no-follow", timeout=20)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(re.match(r"^\s*\d+ \d\d:\d\d:\d\d \S+\s+\w+", line) for line in lines), lines
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert any("command_finished" in line and "status=succeeded" in line for line in lines)


async def test_the_live_view_shows_the_machines_and_their_last_command(
    master: Master, deploy: Callable[..., Awaitable[Deployment]]
) -> None:
    await _shop_with_a_command(deploy, master)
    out = io.StringIO()

    await run_live(master, "shop", master.events("shop", 0, follow=False), console=Console(file=out, width=140))

    text = out.getvalue()
    assert re.search(r"mysql\s+│ ready", text), text
    assert re.search(r"web\s+│ ready", text), text
    assert "echo watched succeeded" in text
    assert "command_finished" in text


def test_a_hub_with_json_log_format_writes_json_log_lines(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub", extra_args=["--log-format", "json"])
    try:
        hub.start()
        hub.terminate()
        lines = hub.log_text().splitlines()
    finally:
        hub.cleanup()
    assert lines[0].startswith("---- start ")
    # The hub's own prints to the operator (not log records) stay text.
    logged = [line for line in lines[1:] if not line.startswith(("dev mode:", "crc hub listening"))]
    entries = [json.loads(line) for line in logged]
    assert entries, lines
    assert all(isinstance(e["level"], str) and isinstance(e["message"], str) for e in entries)
    assert any("listening on" in e["message"] and e["level"] == "INFO" for e in entries)
