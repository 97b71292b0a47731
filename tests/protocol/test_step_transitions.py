"""The plan step state machine is a table, WAITING included: every legal pair lands where the table says, every
other pair is refused naming the state and the event, and the engine changes states only through it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from protocol.errors import ErrorCode, IllegalTransition, ProtocolError
from protocol.plans import (
    OUTCOME_EVENTS,
    STEP_TRANSITIONS,
    PlanRun,
    StepEvent,
    StepState,
    advance,
    parse_plan,
)

ALL_PAIRS = list(itertools.product(StepState, StepEvent))


def pair_id(item: object) -> str:
    return item.value if isinstance(item, StepState | StepEvent) else str(item)


def run_of(*steps: dict[str, Any]) -> PlanRun:
    return PlanRun(parse_plan({"name": "p", "steps": list(steps)}))


def step(step_id: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "target": "all", "command": "true", "depends_on": list(deps), **extra}


@pytest.mark.parametrize(("state", "event"), list(STEP_TRANSITIONS), ids=pair_id)
def test_every_legal_pair_lands_on_the_tables_state(state: StepState, event: StepEvent) -> None:
    assert advance(state, event) is STEP_TRANSITIONS[(state, event)]
    run = PlanRun(run_of(step("a")).plan, {"a": state})
    assert run.move("a", event) is STEP_TRANSITIONS[(state, event)] is run.states["a"]


@pytest.mark.parametrize(("state", "event"), [p for p in ALL_PAIRS if p not in STEP_TRANSITIONS], ids=pair_id)
def test_every_illegal_pair_raises_naming_the_state_and_the_event(state: StepState, event: StepEvent) -> None:
    with pytest.raises(IllegalTransition) as caught:
        advance(state, event)
    error = caught.value
    assert isinstance(error, ProtocolError) and error.code is ErrorCode.ILLEGAL_STATE
    assert repr(state.value) in str(error) and repr(event.value) in str(error) and "step" in str(error)
    assert error.details == {"machine": "step", "state": state.value, "event": event.value}
    run = PlanRun(run_of(step("a")).plan, {"a": state})
    with pytest.raises(IllegalTransition):
        run.move("a", event)
    assert run.states["a"] is state  # refused: the step stays where it was


@pytest.mark.parametrize("state", [s for s in StepState if s.final], ids=pair_id)
def test_a_final_state_has_no_way_out(state: StepState) -> None:
    assert not [event for (source, event) in STEP_TRANSITIONS if source is state]


def test_final_means_exactly_no_way_out_and_every_state_is_reachable() -> None:
    assert {source for source, _ in STEP_TRANSITIONS} == {s for s in StepState if not s.final}
    assert set(STEP_TRANSITIONS.values()) | {StepState.PENDING} == set(StepState)


def test_waiting_is_entered_only_from_running_and_left_for_running_a_timeout_or_a_cancel() -> None:
    into = {source for (source, _), target in STEP_TRANSITIONS.items() if target is StepState.WAITING}
    out = {target for (source, _), target in STEP_TRANSITIONS.items() if source is StepState.WAITING}
    assert into == {StepState.RUNNING}
    assert out == {StepState.RUNNING, StepState.TIMED_OUT, StepState.CANCELLED}


def test_every_outcome_the_engine_is_told_has_its_event() -> None:
    assert set(OUTCOME_EVENTS) == {s for s in StepState if s.final}
    for outcome, event in OUTCOME_EVENTS.items():
        assert outcome in {target for (_, e), target in STEP_TRANSITIONS.items() if e is event}


def test_an_outcome_for_a_step_not_handed_out_is_refused_and_changes_nothing() -> None:
    run = run_of(step("a"), step("b", "a"))
    assert run.start() == ["a"]
    with pytest.raises(IllegalTransition, match="'pending'"):
        run.finished("b", StepState.SUCCEEDED)
    assert run.states == {"a": StepState.RUNNING, "b": StepState.PENDING}


def test_a_waiting_step_restored_after_a_restart_waits_on_then_runs_when_its_keys_are_set() -> None:
    parsed = parse_plan({"name": "p", "steps": [step("a"), step("b", "a", waits_for=["a/done"]), step("c", "b")]})
    run = PlanRun(parsed, {"a": StepState.SUCCEEDED, "b": StepState.WAITING, "c": StepState.PENDING})
    assert run.start() == [] and run.states["b"] is StepState.WAITING  # the engine leaves it to the hub
    assert run.move("b", StepEvent.KEYS_SET) is StepState.RUNNING
    assert run.finished("b", StepState.SUCCEEDED) == ["c"]
    assert run.finished("c", StepState.SUCCEEDED) == [] and run.done and run.succeeded


def test_a_waiting_step_times_out_and_its_dependents_are_skipped() -> None:
    run = run_of(step("a", waits_for=["x/y"]), step("b", "a"))
    assert run.start() == ["a"]
    run.move("a", StepEvent.KEYS_MISSING)
    assert run.finished("a", StepState.TIMED_OUT) == []
    assert run.states == {"a": StepState.TIMED_OUT, "b": StepState.SKIPPED} and run.done
