"""Reconnection policy: the backoff schedule and which failures are worth another try."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.retry import backoff_delays, is_retryable
from tests.protocol.support import FUZZ


def constant(unit: float) -> Callable[[], float]:
    return lambda: unit


def first(count: int, delays: Iterator[float]) -> list[float]:
    return list(itertools.islice(delays, count))


def steps(count: int, initial: float = 0.5, factor: float = 2.0, maximum: float = 30.0) -> list[float]:
    return [min(initial * factor**n, maximum) for n in range(count)]


def test_with_the_largest_draw_the_delays_double_from_the_initial_step() -> None:
    assert first(4, backoff_delays(constant(1.0))) == [0.5, 1.0, 2.0, 4.0]


def test_with_the_smallest_draw_each_delay_is_half_its_step() -> None:
    assert first(4, backoff_delays(constant(0.0))) == [0.25, 0.5, 1.0, 2.0]


def test_the_delays_grow_until_the_maximum() -> None:
    delays = first(12, backoff_delays(constant(0.5)))
    capped_from = steps(12).index(30.0)
    assert all(a < b for a, b in itertools.pairwise(delays[: capped_from + 1]))
    assert len(set(delays[capped_from:])) == 1


def test_the_step_is_capped_at_the_maximum() -> None:
    delays = first(20, backoff_delays(constant(1.0)))
    assert max(delays) == 30.0
    assert delays[-5:] == [30.0] * 5


def test_initial_factor_and_maximum_are_honoured() -> None:
    delays = first(6, backoff_delays(constant(1.0), initial=1.0, factor=3.0, maximum=20.0))
    assert delays == [1.0, 3.0, 9.0, 20.0, 20.0, 20.0]


def test_the_schedule_never_ends() -> None:
    assert len(first(1000, backoff_delays(constant(0.3)))) == 1000


def test_one_random_draw_is_taken_per_delay() -> None:
    draws = iter([0.0, 0.5, 0.99])
    calls: list[float] = []

    def unit() -> float:
        calls.append(value := next(draws))
        return value

    delays = backoff_delays(unit)
    assert calls == []  # nothing is drawn before the first delay is asked for
    assert first(3, delays) == pytest.approx([0.5 * 0.5, 1.0 * 0.75, 2.0 * 0.995])
    assert calls == [0.0, 0.5, 0.99]


@pytest.mark.parametrize("unit", [0.0, 0.25, 0.5, 0.999999])
def test_every_delay_is_between_half_and_all_of_its_step(unit: float) -> None:
    for delay, step in zip(first(15, backoff_delays(constant(unit))), steps(15), strict=True):
        assert 0.5 * step <= delay <= step


@FUZZ
@given(st.lists(st.floats(min_value=0.0, max_value=1.0, exclude_max=True), min_size=1, max_size=40))
def test_jitter_keeps_any_delay_between_half_and_all_of_its_step(units: list[float]) -> None:
    draws = iter(units)
    delays = first(len(units), backoff_delays(lambda: next(draws)))
    for delay, step, unit in zip(delays, steps(len(units)), units, strict=True):
        assert 0.5 * step <= delay <= step
        assert delay == pytest.approx(step * (0.5 + unit / 2))


@pytest.mark.parametrize(
    "error",
    [
        OSError("network down"),
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),
        EOFError(),
        ProtocolError(ErrorCode.BAD_MAC, "frame altered"),
        ProtocolError(ErrorCode.STALE_TIMESTAMP, "clock skew"),
        ProtocolError(ErrorCode.MALFORMED_FRAME, "garbage"),
        RemoteError("internal", "hub crashed"),
        RemoteError("shutting_down", "hub restarting"),
        RemoteError("stale_timestamp", "fix NTP"),
    ],
    ids=repr,
)
def test_transient_failures_are_worth_retrying(error: BaseException) -> None:
    assert is_retryable(error) is True


@pytest.mark.parametrize(
    "error",
    [
        ProtocolError(ErrorCode.UNKNOWN_IDENTITY, "never enrolled"),
        ProtocolError(ErrorCode.REVOKED, "revoked"),
        ProtocolError(ErrorCode.UNSUPPORTED_VERSION, "too old"),
        RemoteError("revoked", "machine revoked"),
        RemoteError("unknown_identity", "who are you"),
        RemoteError("unsupported_version", "upgrade"),
        ValueError("a bug"),
        KeyError("a bug"),
        RuntimeError("a bug"),
    ],
    ids=repr,
)
def test_failures_that_need_a_human_are_not_worth_retrying(error: BaseException) -> None:
    assert is_retryable(error) is False
