"""The order state machine is a table: every legal pair lands where the table says, every other pair is refused
naming the state and the event, and what the stores check against is derived from it."""

from __future__ import annotations

import itertools

import pytest

from protocol.errors import ErrorCode, IllegalTransition, ProtocolError
from protocol.orders import (
    ORDER_TRANSITIONS,
    RESULT_EVENTS,
    OrderEvent,
    OrderState,
    advance,
    destination,
    sources,
)

ALL_PAIRS = list(itertools.product(OrderState, OrderEvent))
OPEN = {s for s in OrderState if not s.final}


def pair_id(item: object) -> str:
    return item.value if isinstance(item, OrderState | OrderEvent) else str(item)


@pytest.mark.parametrize(("state", "event"), list(ORDER_TRANSITIONS), ids=pair_id)
def test_every_legal_pair_lands_on_the_tables_state(state: OrderState, event: OrderEvent) -> None:
    assert advance(state, event) is ORDER_TRANSITIONS[(state, event)]


@pytest.mark.parametrize(("state", "event"), [p for p in ALL_PAIRS if p not in ORDER_TRANSITIONS], ids=pair_id)
def test_every_illegal_pair_raises_naming_the_state_and_the_event(state: OrderState, event: OrderEvent) -> None:
    with pytest.raises(IllegalTransition) as caught:
        advance(state, event)
    error = caught.value
    assert isinstance(error, ProtocolError) and error.code is ErrorCode.ILLEGAL_STATE
    assert repr(state.value) in str(error) and repr(event.value) in str(error) and "order" in str(error)
    assert error.details == {"machine": "order", "state": state.value, "event": event.value}


@pytest.mark.parametrize("state", [s for s in OrderState if s.final], ids=pair_id)
def test_a_final_state_has_no_way_out(state: OrderState) -> None:
    assert not [event for (source, event) in ORDER_TRANSITIONS if source is state]


def test_final_means_exactly_no_way_out_and_queued_is_where_orders_start() -> None:
    leaving = {source for source, _ in ORDER_TRANSITIONS}
    assert leaving == OPEN
    assert OrderState.QUEUED not in ORDER_TRANSITIONS.values() and sources(OrderState.QUEUED) == frozenset()


def test_orders_never_move_back() -> None:
    rank = {OrderState.QUEUED: 0, OrderState.DELIVERED: 1, OrderState.RUNNING: 2}
    for (state, _), target in ORDER_TRANSITIONS.items():
        assert target.final or rank[target] > rank[state]


def test_a_result_finishes_an_order_in_any_open_state_and_each_final_status_has_its_event() -> None:
    assert set(RESULT_EVENTS) == {s for s in OrderState if s.final}
    for status, event in RESULT_EVENTS.items():
        assert {s for s in OrderState if (s, event) in ORDER_TRANSITIONS} == OPEN
        assert destination(event) is status
        # what the stores' "no result yet" check amounts to: only a result makes an order final
        assert sources(status) == OPEN


def test_a_start_may_come_without_its_acknowledgement() -> None:
    assert sources(OrderState.DELIVERED) == {OrderState.QUEUED}
    assert sources(OrderState.RUNNING) == {OrderState.QUEUED, OrderState.DELIVERED}
    assert destination(OrderEvent.ACKNOWLEDGE) is OrderState.DELIVERED
    assert destination(OrderEvent.START) is OrderState.RUNNING


@pytest.mark.parametrize("event", list(OrderEvent), ids=pair_id)
def test_each_event_has_one_destination_whatever_state_it_comes_in(event: OrderEvent) -> None:
    targets = {target for (_, e), target in ORDER_TRANSITIONS.items() if e is event}
    assert targets == {destination(event)}


@pytest.mark.parametrize("target", list(OrderState), ids=pair_id)
def test_sources_are_the_states_the_table_moves_to_the_target_from(target: OrderState) -> None:
    expected = {state for state, event in ALL_PAIRS if ORDER_TRANSITIONS.get((state, event)) is target}
    assert sources(target) == expected
