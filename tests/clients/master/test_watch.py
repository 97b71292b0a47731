"""``crc watch``'s live view without a terminal: the state follows events, the rendering shows it, --json lines."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from rich.console import Console

from clients.master.cli import build_parser
from clients.master.models import EventInfo, MachineInfo, OutputChunk, Scenario
from clients.master.watch import WatchState, json_line, render

NOW = 1_700_000_000.0


def machine(name: str, status: str = "offline", **extra: Any) -> MachineInfo:
    return MachineInfo(f"id-{name}", name, "linux", extra.pop("role", name), f"ed25519:{name}", status, **extra)


def snapshot(cursor: int = 3) -> Scenario:
    return Scenario("sc1", "shop", NOW - 100, cursor, [
        machine("mysql", "ready", ips=["10.0.0.2"], facts={"cpus": {"logical": 4, "physical": 2},
                                                          "memory_total": 8 * 2**30}, last_seen=NOW - 5),
        machine("web", role="frontend"),
    ])  # fmt: skip


def plan_wire(states: dict[str, str], *, done: bool = False) -> dict[str, Any]:
    return {"id": "p1", "name": "deploy-shop", "done": done, "created": NOW, "updated": NOW,
            "steps": [{"id": sid, "name": sid, "target": "all", "depends_on": [], "state": state}
                      for sid, state in states.items()]}  # fmt: skip


def ev(cursor: int, event_kind: str, machine: str = "", **data: Any) -> EventInfo:
    return EventInfo("shop", cursor, event_kind, machine, NOW - 10 + cursor, data)


def text_of(state: WatchState, width: int = 160) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render(state, now=NOW))
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


def test_the_snapshot_fills_the_machines_table() -> None:
    state = WatchState.from_snapshot(snapshot())
    text = text_of(state, 120)
    assert "mysql" in text and "web" in text
    assert "ready" in text and "offline" in text
    assert "frontend" in text and "10.0.0.2" in text
    assert "4 cpu, 8.0 GiB" in text
    assert "5s ago" in text and "never" in text
    assert "plan" not in text  # no plans: no plan lines


def test_machine_events_change_status_facts_and_last_seen() -> None:
    state = WatchState.from_snapshot(snapshot())
    state.apply(ev(4, "machine_connected", "web", replica="r1"))
    assert state.machines["web"].status == "connected"
    state.apply(ev(5, "machine_ready", "web", hostname="web-1", cpus={"logical": 2}, ips=["10.0.0.3"]))
    web = state.machines["web"]
    assert (web.status, web.ips, web.facts["hostname"], web.last_seen) == ("ready", ["10.0.0.3"], "web-1", NOW - 5)
    state.apply(ev(6, "machine_offline", "mysql"))
    state.apply(ev(7, "machine_revoked", "web", machine_id="id-web"))
    assert (state.machines["mysql"].status, state.machines["web"].status) == ("offline", "revoked")
    assert state.cursor == 7


def test_history_at_or_below_the_snapshot_does_not_roll_statuses_back() -> None:
    state = WatchState.from_snapshot(snapshot(cursor=3))
    state.apply(ev(2, "machine_connected", "mysql"))
    assert state.machines["mysql"].status == "ready"
    assert [e.cursor for e in state.events] == [2]  # but it is in the tail


def test_a_machines_current_step_follows_boot_steps_and_its_commands() -> None:
    state = WatchState.from_snapshot(snapshot())
    state.apply(ev(4, "boot_step", "web", step="installing-python", status="running", detail="...", time=int(NOW)))
    assert (state.machines["web"].step, state.machines["web"].step_state) == ("boot installing-python", "running")
    state.apply(ev(5, "command_queued", "web", order_id="o1", kind="exec", command="apt-get install -y\nnginx"))
    state.apply(ev(6, "command_started", "web", order_id="o1"))
    state.apply_output(OutputChunk("shop", "web", "o1", "stdout", b"Reading package lists...\nUnpacking nginx\n"))
    web = state.machines["web"]
    assert (web.step, web.step_state, web.last_output) == ("apt-get install -y nginx", "running", "Unpacking nginx")
    assert "apt-get install -y nginx running | Unpacking nginx" in text_of(state)
    state.apply(ev(7, "command_finished", "web", order_id="o1", status="failed", exit_code=100, error=""))
    assert state.machines["web"].step_state == "failed (exit 100)"
    assert "failed (exit 100)" in text_of(state)


def test_plan_progress_from_the_snapshot_and_plan_step_events() -> None:
    states = {"a": "succeeded", "b": "succeeded", "c": "running", "d": "pending", "e": "pending", "f": "succeeded"}
    state = WatchState.from_snapshot(snapshot(), [plan_wire(states)])
    assert "plan deploy-shop: 3/6 succeeded, 1 running, 0 failed, 2 pending" in text_of(state)
    state.apply(ev(4, "plan_step", plan="p1", step="c", name="c", state="failed"))
    state.apply(ev(5, "plan_step", plan="p1", step="d", name="d", state="skipped"))
    state.apply(ev(6, "command_queued", "web", order_id="o2", kind="exec", command="make", plan="p1", step="e"))
    assert state.machines["web"].step == "deploy-shop/e: make"
    assert "plan deploy-shop: 3/6 succeeded, 0 running, 1 failed, 1 pending, 1 skipped" in text_of(state)
    state.apply(ev(7, "plan_finished", plan="p1", outcome="failed"))
    text = text_of(state)
    assert "plan deploy-shop: 3/6 succeeded" in text and "- failed" in text  # finished while watched: still shown
    assert "plan deploy-shop failed" in text  # the event's summary names the plan


def test_plans_done_before_the_watch_are_not_shown() -> None:
    state = WatchState.from_snapshot(snapshot(), [plan_wire({"a": "succeeded"}, done=True)])
    assert "plan deploy-shop" not in text_of(state)


def test_a_plan_started_after_the_snapshot_is_counted_and_asked_for() -> None:
    state = WatchState.from_snapshot(snapshot())
    state.apply(ev(4, "plan_step", plan="p1", step="a", name="a", state="running"))
    assert state.unknown_plans == {"p1"}
    assert "plan p1: 0/1 succeeded, 1 running" in text_of(state)
    state.load_plans([plan_wire({"a": "running", "b": "pending"})])
    assert state.unknown_plans == set()
    assert "plan deploy-shop: 0/2 succeeded, 1 running, 0 failed, 1 pending" in text_of(state)


def test_the_tail_keeps_the_last_events_with_short_summaries() -> None:
    state = WatchState.from_snapshot(snapshot(), tail=3)
    for cursor in range(4, 10):
        state.apply(ev(cursor, "kv_set", key=f"k{cursor}", ttl=0, size=1))
    state.apply(ev(10, "command_finished", "mysql", order_id="o9", status="succeeded", exit_code=0, error=""))
    assert [e.cursor for e in state.events] == [8, 9, 10]
    text = text_of(state)
    assert "key=k9 ttl=0 size=1" in text and "k7" not in text
    assert "command_finished" in text and "succeeded exit 0" in text
    assert "events up to 10" in text


def test_json_lines_are_single_line_and_text_for_bytes() -> None:
    line = json_line(ev(4, "message_sent", "web", topic="t", blob=b"\xffok\n", to=["a"]))
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["cursor"], parsed["kind"], parsed["machine"]) == (4, "message_sent", "web")
    assert parsed["ts"] == NOW - 6 and parsed["data"]["blob"] == "\ufffdok\n"
    chunk = json.loads(json_line(OutputChunk("shop", "web", "o1", "stderr", b"oops\n")))
    assert chunk == {"kind": "output", "scenario": "shop", "machine": "web", "order_id": "o1", "stream": "stderr",
                     "data": "oops\n"}  # fmt: skip


def _watch_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_json_is_accepted_before_or_after_the_watch_subcommand() -> None:
    assert _watch_args("--json", "watch", "shop").json is True
    assert _watch_args("watch", "shop", "--json").json is True
    assert _watch_args("watch", "shop").json is False
    assert _watch_args("--json", "scenario", "show", "shop").json is True
