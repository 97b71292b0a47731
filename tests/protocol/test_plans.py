"""Plans: parsing (ours and gorchestrator's), validation before anything runs, and the engine's decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.plans import (
    GORCH_STATES,
    GorchState,
    PlanError,
    PlanRun,
    StepEvent,
    StepState,
    from_gorch,
    parse_plan,
    plan_to_wire,
    unproducible_keys,
)

# gorchestrator's published example graph (a copy of ../shared/fixtures/gorch-example.json)
GORCH_EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "gorch-example.json"


def plan(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"name": "p", "steps": list(steps)}


def step(step_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "target": "all", "command": f"echo {step_id}", "depends_on": list(deps), **extra}


def drive(run: PlanRun, outcome: dict[str, StepState] | None = None) -> list[list[str]]:
    """Run to the end, finishing dispatched steps wave by wave; returns the waves."""
    waves = [run.start()]
    while waves[-1]:
        nxt: list[str] = []
        for sid in waves[-1]:
            nxt += run.finished(sid, (outcome or {}).get(sid, StepState.SUCCEEDED))
        waves.append(nxt)
    return waves[:-1]


def test_our_format_parses_with_defaults() -> None:
    parsed = parse_plan(plan(step("db"), {"id": "schema", "target": "db", "job": "load", "depends_on": "db",
                                          "timeout": 30, "on_failure": "continue", "shell": "powershell"}))  # fmt: skip
    schema = parsed.step("schema")
    assert (schema.job, schema.depends_on, schema.timeout, schema.on_failure, schema.shell) == (
        "load", ("db",), 30.0, "continue", "powershell",
    )  # fmt: skip
    assert parsed.step("db").shell == "sh" and parsed.order() == ["db", "schema"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"steps": []}, "'name' is required"),
        (plan(), "non-empty list of steps"),
        (plan(step("a", "zzz")), "depends on 'zzz', which is not a step"),
        (plan(step("a", "a")), "depends on itself"),
        (plan(step("a"), step("a")), "appears twice"),
        (plan({"id": "a", "target": "all"}), "exactly one of command or job"),
        (plan({"id": "a", "target": "all", "command": "x", "job": "y"}), "exactly one of command or job"),
        (plan(step("a", shell="fish")), "shell is one of"),
        (plan(step("a", on_failure="explode")), "on_failure"),
        (plan(step("a", timeout=-1)), "timeout"),
        (plan(step("a", color="red")), "unknown key"),
        (plan(step("bad id!")), "an id is"),
        ({"name": "p", "steps": [step("a")], "extra": 1}, "unknown plan key"),
        (plan(step("a", waits_for=["../escape"])), "key '../escape': 1-128 letters"),
        (plan(step("a", sets=["/root"])), "key '/root'"),
        (plan(step("a", waits_for=[1])), "waits_for is a list of keys"),
        (plan(step("a", sets={"k": 1})), "sets is a list of keys"),
    ],
)
def test_malformed_plans_are_refused_with_the_step_named(data: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        parse_plan(data)


def test_a_cycle_is_refused_and_named() -> None:
    with pytest.raises(PlanError, match=r"b, d, c, b form a cycle") as caught:  # b waits for d, d for c, c for b
        parse_plan(plan(step("a"), step("b", "a", "d"), step("c", "b"), step("d", "c"), step("e", "a")))
    assert caught.value.details["steps"] == "b,c,d"


def test_independent_steps_run_together_and_a_failure_skips_only_its_dependents() -> None:
    parsed = parse_plan(plan(step("a"), step("b"), step("c", "a"), step("d", "c"), step("e", "b"), step("f", "d", "e")))
    run = PlanRun(parsed)
    waves = drive(run, {"c": StepState.FAILED})
    assert waves == [["a", "b"], ["c", "e"]]
    assert run.states == {
        "a": StepState.SUCCEEDED, "b": StepState.SUCCEEDED, "c": StepState.FAILED, "d": StepState.SKIPPED,
        "e": StepState.SUCCEEDED, "f": StepState.SKIPPED,
    }  # fmt: skip
    assert run.done and not run.succeeded


def test_on_failure_continue_lets_dependents_run() -> None:
    run = PlanRun(parse_plan(plan(step("a", on_failure="continue"), step("b", "a"))))
    assert drive(run, {"a": StepState.FAILED}) == [["a"], ["b"]]
    assert run.states["b"] is StepState.SUCCEEDED


def test_duplicate_reports_and_cancel() -> None:
    run = PlanRun(parse_plan(plan(step("a"), step("b", "a"), step("c"))))
    assert run.start() == ["a", "c"]
    assert run.finished("a", StepState.SUCCEEDED) == ["b"]
    assert run.finished("a", StepState.FAILED) == []  # already final: ignored
    assert sorted(run.cancel()) == ["b", "c"]
    assert run.done and set(run.states.values()) == {StepState.SUCCEEDED, StepState.CANCELLED}
    with pytest.raises(ValueError):
        run.finished("b", StepState.RUNNING)


def test_a_restarted_engine_resumes_from_its_states() -> None:
    parsed = parse_plan(plan(step("a"), step("b", "a"), step("c", "b")))
    saved = {"a": StepState.SUCCEEDED, "b": StepState.PENDING, "c": StepState.PENDING}
    assert PlanRun(parsed, dict(saved)).start() == ["b"]


def test_gorchestrators_published_example_reads_as_its_graph_says() -> None:
    task = json.loads(GORCH_EXAMPLE.read_text())
    parsed = from_gorch(task)
    assert parsed.name == "Valid" and [s.name for s in parsed.steps] == list("abcdefgh")
    assert parsed.step("0").depends_on == ("5",) and parsed.step("6").depends_on == ("1", "3", "7")
    assert parsed.step("2").command == "./script2.sh ip_address=get_attribute d:ip_address"
    assert all(s.target == "test" and s.shell == "sh" for s in parsed.steps)
    run = PlanRun(parsed)
    order = [sid for wave in drive(run) for sid in wave]
    for s in parsed.steps:  # every node after the nodes it depends on
        assert all(order.index(d) < order.index(s.id) for d in s.depends_on)
    assert {GORCH_STATES[state] for state in run.states.values()} == {GorchState.SUCCESS}
    failing = PlanRun(parsed)
    drive(failing, {"5": StepState.FAILED})
    assert GORCH_STATES[failing.states["0"]] is GorchState.NOT_RUNNABLE  # after f
    assert GORCH_STATES[failing.states["3"]] is GorchState.SUCCESS  # independent of f


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"digraph": [0, 1]}, "digraph must be"),
        ({"digraph": [2] * 64}, "digraph must be"),
        ({"nodes": []}, "non-empty list of nodes"),
        ({"name": None}, "'name' is required"),
    ],
)
def test_malformed_gorchestrator_tasks_are_refused(change: dict[str, Any], message: str) -> None:
    task = {**json.loads(GORCH_EXAMPLE.read_text()), **change}
    with pytest.raises(PlanError, match=message):
        from_gorch(task)


def test_a_gorchestrator_cycle_is_refused() -> None:
    task = {"name": "loop", "digraph": [0, 1, 1, 0], "nodes": [
        {"id": 0, "name": "x", "engine": "shell", "artifact": "true", "target": "m"},
        {"id": 1, "name": "y", "engine": "shell", "artifact": "true", "target": "m"},
    ]}  # fmt: skip
    with pytest.raises(PlanError, match="form a cycle"):
        from_gorch(task)


@given(st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.booleans(), min_size=n * n, max_size=n * n))
))  # fmt: skip
def test_random_acyclic_graphs_run_every_step_after_its_dependencies(graph: tuple[int, list[bool]]) -> None:
    n, bits = graph
    # keep only edges i -> j with i < j: acyclic by construction
    steps = [step(str(j), *(str(i) for i in range(j) if bits[i * n + j])) for j in range(n)]
    run = PlanRun(parse_plan(plan(*steps)))
    order = [sid for wave in drive(run) for sid in wave]
    assert sorted(order, key=int) == [str(j) for j in range(n)]
    for s in run.plan.steps:
        assert all(order.index(d) < order.index(s.id) for d in s.depends_on)


def test_waits_for_and_sets_parse_and_round_trip_through_the_wire() -> None:
    parsed = parse_plan(plan(step("db", sets=["db/ready", "db/ready"]), step("web", waits_for="db/ready"),
                             step("smoke", "web", waits_for=["web/up", "config/dsn"])))  # fmt: skip
    assert parsed.step("db").sets == ("db/ready",) and parsed.step("db").waits_for == ()
    assert parsed.step("web").waits_for == ("db/ready",)
    assert parsed.step("smoke").waits_for == ("web/up", "config/dsn")
    wire = plan_to_wire(parsed)
    assert "waits_for" not in wire["steps"][0] and "sets" not in wire["steps"][1]  # written only when there are some
    assert wire["steps"][2]["waits_for"] == ["web/up", "config/dsn"]
    assert parse_plan(json.loads(json.dumps(wire))) == parsed


def test_a_waiting_step_is_to_run_for_gorchestrator_and_not_final() -> None:
    assert GORCH_STATES[StepState.WAITING] is GorchState.TO_RUN and not StepState.WAITING.final
    run = PlanRun(parse_plan(plan(step("a"), step("b"))))
    assert run.start() == ["a", "b"]
    run.move("b", StepEvent.KEYS_MISSING)  # what the hub does while b's keys are missing
    run.finished("a", StepState.SUCCEEDED)
    assert not run.done and run.cancel() == [] and run.states["b"] is StepState.CANCELLED


@pytest.mark.parametrize(
    ("steps", "machines", "existing", "expected"),
    [
        # another step sets it
        ([step("db", sets=["db/ready"]), step("web", waits_for=["db/ready"])], [], [], []),
        # the machine named by its first part may set it
        ([step("web", waits_for=["db/ready"])], ["db", "web"], [], []),
        # it is set already
        ([step("web", waits_for=["config/dsn"])], ["db"], ["config/dsn"], []),
        # nobody: no such machine, no step, not set
        ([step("web", waits_for=["nobody/x", "db/ready"])], ["db"], [], [("web", "nobody/x")]),
        # a key without a machine part: only a step (or a master beforehand) sets it
        ([step("web", waits_for=["db"])], ["db"], [], [("web", "db")]),
        # a step cannot wait for what it sets itself, or for what a step after it sets
        ([step("a", waits_for=["k"], sets=["k"])], [], [], [("a", "k")]),
        ([step("a", waits_for=["k"]), step("b", "a"), step("c", "b", sets=["k"])], [], [], [("a", "k")]),
        # ...but a step independent of it may
        ([step("a", waits_for=["k"]), step("b", sets=["k"])], [], [], []),
    ],
)
def test_unproducible_keys(
    steps: list[dict[str, Any]], machines: list[str], existing: list[str], expected: list[tuple[str, str]]
) -> None:
    assert unproducible_keys(parse_plan(plan(*steps)), machines, existing) == expected
