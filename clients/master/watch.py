"""``crc watch``'s live view: the scenario's machines, running plans and latest events, kept current from its events.

``WatchState`` is plain data updated by ``apply`` / ``apply_output``; ``render`` turns it into a rich renderable.
Only ``run_live`` touches a terminal (and the hub), so the rest is tested without either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from clients.master.models import EventInfo, OutputChunk, Scenario
from protocol.events import (
    BootStep,
    CommandDelivered,
    CommandFinished,
    CommandQueued,
    CommandStarted,
    EventKind,
    MachineReady,
    PlanFinished,
    PlanStep,
    ScenarioCreated,
)

if TYPE_CHECKING:
    from clients.master.sdk import Master

DEFAULT_TAIL = 15
REFRESH_PER_SECOND = 4.0
_STATUS_STYLES = {"ready": "green", "connected": "yellow", "offline": "red", "revoked": "bold red"}
_STEP_STYLES = {"succeeded": "green", "failed": "red", "timed_out": "red", "cancelled": "red", "running": "yellow"}
_MACHINE_STATUS: dict[str, str] = {
    EventKind.MACHINE_CONNECTED: "connected",
    EventKind.MACHINE_READY: "ready",
    EventKind.MACHINE_OFFLINE: "offline",
    EventKind.MACHINE_REVOKED: "revoked",
}


@dataclass
class MachineRow:
    name: str
    status: str = "unknown"
    role: str = ""
    os: str = ""
    ips: list[str] = field(default_factory=list)
    last_seen: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    step: str = ""  # what it is doing (or did last): a boot step, a plan step or a command
    step_state: str = ""
    last_output: str = ""


@dataclass
class PlanRow:
    id: str
    name: str
    steps: dict[str, str] = field(default_factory=dict)  # step id -> state
    done: bool = False
    outcome: str = ""
    seen_live: bool = False  # changed while watching: a plan that finished then stays on screen

    def progress(self) -> str:
        counts: dict[str, int] = {}
        for state in self.steps.values():
            counts[state] = counts.get(state, 0) + 1
        running = counts.get("running", 0) + counts.get("waiting", 0)
        failed = counts.get("failed", 0) + counts.get("timed_out", 0)
        text = (
            f"plan {self.name}: {counts.get('succeeded', 0)}/{len(self.steps)} succeeded, {running} running, "
            f"{failed} failed, {counts.get('pending', 0)} pending"
        )
        for extra in ("skipped", "cancelled"):
            if counts.get(extra):
                text += f", {counts[extra]} {extra}"
        if self.done:
            text += f" - {self.outcome or 'done'}"
        return text


@dataclass(frozen=True)
class _OrderInfo:
    machine: str
    label: str


class WatchState:
    """What the view shows. Events at or below ``snapshot_cursor`` are history the snapshot already reflects: they
    fill the tail and the machines' last steps but do not roll their status or plans' states back."""

    def __init__(self, scenario: str, *, tail: int = DEFAULT_TAIL) -> None:
        self.scenario = scenario
        self.machines: dict[str, MachineRow] = {}
        self.plans: dict[str, PlanRow] = {}
        self.events: deque[EventInfo] = deque(maxlen=max(1, tail))
        self.orders: dict[str, _OrderInfo] = {}
        self.cursor = 0
        self.snapshot_cursor = 0
        self.unknown_plans: set[str] = set()  # seen in events, not in the last plans() answer: worth a fetch

    @classmethod
    def from_snapshot(
        cls, sc: Scenario, plans: Iterable[dict[str, Any]] = (), *, tail: int = DEFAULT_TAIL
    ) -> WatchState:
        state = cls(sc.name, tail=tail)
        state.load_scenario(sc)
        state.load_plans(plans)
        return state

    def load_scenario(self, sc: Scenario) -> None:
        for m in sc.machines:
            row = self._machine(m.name)
            row.status, row.role, row.os, row.ips = m.status, m.role, m.os, list(m.ips)
            row.last_seen, row.facts = m.last_seen, dict(m.facts)
        self.snapshot_cursor = max(self.snapshot_cursor, sc.cursor)

    def load_plans(self, plans: Iterable[dict[str, Any]]) -> None:
        """``Master.plans()`` items (``server.plans.plan_wire``)."""
        for raw in plans:
            plan = self.plans.get(raw["id"])
            if plan is None:
                plan = self.plans[raw["id"]] = PlanRow(raw["id"], raw.get("name") or raw["id"])
            plan.name = raw.get("name") or plan.name
            plan.steps = {s["id"]: s["state"] for s in raw.get("steps", [])}
            plan.done = bool(raw.get("done"))
            self.unknown_plans.discard(plan.id)

    def _machine(self, name: str) -> MachineRow:
        row = self.machines.get(name)
        if row is None:
            row = self.machines[name] = MachineRow(name)
        return row

    def _plan(self, plan_id: str) -> PlanRow:
        plan = self.plans.get(plan_id)
        if plan is None:
            plan = self.plans[plan_id] = PlanRow(plan_id, plan_id)
            self.unknown_plans.add(plan_id)
        return plan

    def apply(self, event: EventInfo) -> None:
        self.events.append(event)
        self.cursor = max(self.cursor, event.cursor)
        live = event.cursor > self.snapshot_cursor
        row = self._machine(event.machine) if event.machine else None
        if row is not None and live:
            row.last_seen = max(row.last_seen or 0.0, event.ts)
        # A status follows from the kind alone; everything else from the typed payload (None if unreadable).
        payload = event.payload
        status = _MACHINE_STATUS.get(event.kind)
        if isinstance(payload, ScenarioCreated):
            for name in payload.machines:
                self._machine(name)
        elif row is not None and status is not None:
            if live:
                row.status = status
                if isinstance(payload, MachineReady):
                    row.ips = list(payload.ips or row.ips)
                    row.facts.update(payload.facts)
        elif isinstance(payload, BootStep) and row is not None:
            row.step, row.step_state = f"boot {payload.step}", payload.status
        elif isinstance(payload, CommandQueued):
            label = _order_label(payload, self.plan_name(payload.plan) if payload.plan else "")
            self.orders[payload.order_id] = _OrderInfo(event.machine, label)
            if row is not None:
                row.step, row.step_state, row.last_output = label, "queued", ""
        elif isinstance(payload, CommandDelivered | CommandStarted | CommandFinished) and row is not None:
            order_id = payload.order_id
            # Forgotten once finished, so a long watch does not keep every order it ever saw.
            finished = isinstance(payload, CommandFinished)
            known = self.orders.pop(order_id, None) if finished else self.orders.get(order_id)
            row.step = known.label if known else f"order {order_id[:8]}"
            if isinstance(payload, CommandFinished):
                code = payload.exit_code
                row.step_state = payload.status if code in (None, 0) else f"{payload.status} (exit {code})"
            else:
                row.step_state = "running" if isinstance(payload, CommandStarted) else "delivered"
        elif isinstance(payload, PlanStep | PlanFinished) and payload.plan:
            # History only names plans the snapshot has (or that are gone): no row is made up from it.
            plan = self._plan(payload.plan) if live else self.plans.get(payload.plan)
            if plan is None:
                return
            if isinstance(payload, PlanFinished):
                plan.outcome = payload.outcome
            if live:
                plan.seen_live = True
                if isinstance(payload, PlanFinished):
                    plan.done = True
                else:
                    plan.steps[payload.step] = payload.state

    def apply_output(self, chunk: OutputChunk) -> None:
        lines = chunk.data.decode("utf-8", "replace").strip().splitlines()
        if lines and chunk.machine:
            self._machine(chunk.machine).last_output = lines[-1][-120:]

    def plan_name(self, plan_id: str) -> str:
        plan = self.plans.get(plan_id)
        return plan.name if plan else plan_id


def _order_label(queued: CommandQueued, plan: str = "") -> str:
    sealed = f"sealed {queued.kind}" if queued.sealed else None
    what = queued.job or sealed or queued.command or queued.path or queued.wheel or queued.kind or "?"
    what = " ".join(what.split())  # a multi-line script on one line
    if queued.step:
        return f"{plan or 'plan'}/{queued.step}: {what}"
    return what


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _ago(ts: float | None, now: float) -> str:
    if not ts:
        return "never"
    seconds = max(0, int(now - ts))
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _key_facts(facts: dict[str, Any]) -> str:
    parts = []
    cpus = facts.get("cpus")
    if isinstance(cpus, dict):  # the daemon reports {"logical": N, "physical": M}
        cpus = cpus.get("logical") or cpus.get("physical")
    if isinstance(cpus, int):
        parts.append(f"{cpus} cpu")
    memory = facts.get("memory_total")
    if isinstance(memory, int | float) and memory > 0:
        parts.append(f"{memory / 2**30:.1f} GiB")
    return ", ".join(parts)


def summary(event: EventInfo, state: WatchState | None = None) -> str:
    """One short line about an event, for the tail."""
    payload = event.payload
    if isinstance(payload, BootStep):
        return f"{payload.step} {payload.status}"
    if isinstance(payload, CommandQueued):
        return _order_label(payload, state.plan_name(payload.plan) if state and payload.plan else "")
    if isinstance(payload, CommandFinished):
        code = payload.exit_code
        text = payload.status + ("" if code is None else f" exit {code}")
        return text + (f": {payload.error}" if payload.error else "")
    if isinstance(payload, PlanStep | PlanFinished):
        name = state.plan_name(payload.plan) if state else payload.plan
        if isinstance(payload, PlanStep):
            return f"plan {name}: {payload.name or payload.step} {payload.state}"
        return f"plan {name} {payload.outcome}"
    if isinstance(payload, CommandDelivered | CommandStarted) and state is not None:
        known = state.orders.get(payload.order_id)
        if known is not None:
            return known.label
    if isinstance(payload, ScenarioCreated):
        return "machines: " + ", ".join(payload.machines)
    if isinstance(payload, MachineReady):
        return " ".join(v for v in (payload.hostname, payload.os_release) if v) or "ready"
    # Any other event (or one this client cannot read): its fields as sent, but not an old hub's session id.
    return " ".join(f"{k}={v}" for k, v in event.data.items() if k != "session")


def render(state: WatchState, *, now: float | None = None) -> RenderableType:
    """The whole view: machines, then running plans, then the latest events."""
    now = time.time() if now is None else now
    machines = Table(title=f"scenario {state.scenario} (events up to {state.cursor})", title_justify="left",
                     expand=True)  # fmt: skip
    for header in ("machine", "status", "role", "os", "ips", "last seen", "facts"):
        machines.add_column(header, no_wrap=True)
    machines.add_column("current step", ratio=1, overflow="ellipsis", no_wrap=True)
    for row in sorted(state.machines.values(), key=lambda r: r.name):
        step = Text(_short(row.step, 60))
        if row.step_state:
            state_word = row.step_state.split(" ")[0]
            step.append(f" {row.step_state}", style=_STEP_STYLES.get(state_word, "dim"))
        if row.last_output and row.step_state in ("running", "delivered", "queued"):
            step.append(f" | {row.last_output}", style="dim")
        machines.add_row(
            row.name, Text(row.status, style=_STATUS_STYLES.get(row.status, "")), row.role, row.os,
            ",".join(row.ips) or "-", _ago(row.last_seen, now), _key_facts(row.facts), step,
        )  # fmt: skip
    parts: list[RenderableType] = [machines]
    shown = [p for p in state.plans.values() if not p.done or p.seen_live]
    for plan in shown:
        style = "red" if plan.done and plan.outcome not in ("", "succeeded") else ("green" if plan.done else "yellow")
        parts.append(Text(plan.progress(), style=style))
    events = Table(title="latest events", title_justify="left", expand=True, show_edge=False)
    events.add_column("#", justify="right", no_wrap=True)
    events.add_column("time", no_wrap=True)
    events.add_column("kind", no_wrap=True)
    events.add_column("machine", no_wrap=True)
    events.add_column("summary", ratio=1, overflow="ellipsis", no_wrap=True)
    for event in state.events:
        when = time.strftime("%H:%M:%S", time.localtime(event.ts))
        events.add_row(str(event.cursor), when, event.kind, event.machine or "-", summary(event, state))
    parts.append(events)
    return Group(*parts)


# --json
def _jsonable(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, set | frozenset):
        return sorted(o, key=str)
    return str(o)  # never fail a line over an odd value: a stream of events must not stop


def json_line(item: EventInfo | OutputChunk) -> str:
    """One JSON object on one line: an event's fields, or an output chunk as ``{"kind": "output", ...}``."""
    if isinstance(item, OutputChunk):
        value: dict[str, Any] = {"kind": "output", **asdict(item)}
    else:
        value = {"cursor": item.cursor, "ts": item.ts, "kind": item.kind, "machine": item.machine,
                 "scenario": item.scenario, "data": item.data}  # fmt: skip
    return json.dumps(value, default=_jsonable, ensure_ascii=False)


# the terminal
async def run_live(
    master: Master,
    scenario: str,
    items: AsyncIterator[EventInfo | OutputChunk],
    *,
    console: Console | None = None,
    tail: int | None = None,
) -> None:
    """Show the live view until ``items`` ends (or the user interrupts), redrawn a few times per second at most."""
    from rich.live import Live

    console = console or Console()
    sc = await master.scenario(scenario)
    if tail is None:  # what fits under the machines table on this terminal
        tail = max(5, min(30, console.height - len(sc.machines) - 12))
    state = WatchState.from_snapshot(sc, await master.plans(scenario), tail=tail)
    dirty = asyncio.Event()
    fetching: asyncio.Task[None] | None = None

    async def fetch_plans() -> None:
        # A plan started after the snapshot: its name and steps come from the hub, not the events.
        asked = set(state.unknown_plans)
        with contextlib.suppress(Exception):  # the view goes on without the names: events still count steps
            state.load_plans(await master.plans(scenario))
            dirty.set()
        state.unknown_plans -= asked  # one try each: a plan the hub no longer lists is not asked for again

    with Live(render(state), console=console, auto_refresh=False, redirect_stdout=False) as live:

        async def redraw() -> None:
            while True:
                # Redrawn at least each second even without news: the "last seen" ages move on.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dirty.wait(), 1.0)
                dirty.clear()
                live.update(render(state), refresh=True)
                await asyncio.sleep(1 / REFRESH_PER_SECOND)

        painter = asyncio.create_task(redraw(), name="crc-watch-redraw")
        try:
            async for item in items:
                if isinstance(item, OutputChunk):
                    state.apply_output(item)
                else:
                    state.apply(item)
                    if state.unknown_plans and (fetching is None or fetching.done()):
                        fetching = asyncio.create_task(fetch_plans(), name="crc-watch-plans")
                dirty.set()
        finally:
            for task in (painter, fetching):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            live.update(render(state), refresh=True)
