"""Scenario "plan_engine": the plan engine's own cost per run of gorchestrator's published example graph.

Steps are no-ops that finish the moment they are dispatched, so the figure is the engine alone (``PlanRun``:
readiness, state changes, skipping), one core, no network; the hub adds dispatch and store writes on top.
Baseline, in the same run: ordering the same graph with the standard library (``graphlib.TopologicalSorter``,
prepare + get_ready/done), the least a scheduler must do. Target: at most 0.1 ms per run (gorchestrator's own
figure for this graph: 0.98 ms per run, in Go). Run alone with ``python -m bench --only plan_engine``.
"""

from __future__ import annotations

import graphlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import Config, Record
from protocol.plans import Plan, PlanRun, StepState, from_gorch

NAME = "plan_engine"
TARGET_MS = 0.1
EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gorch-example.json"


def engine_run(plan: Plan) -> None:
    run = PlanRun(plan)
    ready = run.start()
    while ready:
        step = ready.pop()
        ready += run.finished(step, StepState.SUCCEEDED)
    assert run.succeeded


def baseline_run(graph: dict[str, tuple[str, ...]]) -> None:
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    while sorter.is_active():
        for node in sorter.get_ready():
            sorter.done(node)


def ms_per_run(fn: Callable[[], None], runs: int, repeats: int) -> float:
    figures = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(runs):
            fn()
        figures.append((time.perf_counter() - start) * 1000 / runs)
    return statistics.median(figures)


async def run(config: Config) -> list[Record]:
    plan = from_gorch(json.loads(EXAMPLE.read_text()))
    graph = {s.id: s.depends_on for s in plan.steps}
    runs = 2_000 if config.quick else 10_000
    ours = ms_per_run(lambda: engine_run(plan), runs, config.repeats)
    baseline = ms_per_run(lambda: baseline_run(graph), runs, config.repeats)
    ratio = round(ours / baseline, 3)
    record = Record(NAME, "ms/run", round(ours, 4), round(baseline, 4), "graphlib topological sort", ratio, TARGET_MS,
                    ours <= TARGET_MS)  # fmt: skip
    return [record]
