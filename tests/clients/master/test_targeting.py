"""Targets (names, role:, label:, globs, lists, all) and fan-out amounts and summaries."""

from __future__ import annotations

import pytest

from clients.master.fanout import SKIPPED, TIMED_OUT, FanOut, Summary, amount
from clients.master.models import CommandResult, MachineInfo
from protocol.targeting import UnknownMachine, select


def machine(name: str, role: str, **labels: str) -> MachineInfo:
    return MachineInfo(f"id-{name}", name, "linux", role, "ed25519:x", "ready", labels=labels)


MACHINES = [
    machine("db-1", "database", zone="a"),
    machine("web-1", "web", zone="a", tier="front"),
    machine("web-2", "web", zone="b", tier="front"),
    machine("dev", "dev"),
]


def names(target: str) -> list[str]:
    return [m.name for m in select(MACHINES, target)]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("all", ["db-1", "web-1", "web-2", "dev"]),
        ("dev", ["dev"]),
        ("role:web", ["web-1", "web-2"]),
        ("label:zone=a", ["db-1", "web-1"]),
        ("label:tier", ["web-1", "web-2"]),
        ("web-*", ["web-1", "web-2"]),
        ("*-[12]", ["db-1", "web-1", "web-2"]),
        ("dev, role:database ,web-2", ["db-1", "web-2", "dev"]),  # scenario order, each once
        ("role:web,web-1", ["web-1", "web-2"]),
        ("role:nobody", []),
        ("label:zone=c", []),
        ("x-*", []),
    ],
)
def test_targets_select_machines_in_scenario_order(target: str, expected: list[str]) -> None:
    assert names(target) == expected


def test_an_unknown_plain_name_is_an_error_not_an_empty_selection() -> None:
    with pytest.raises(UnknownMachine, match="nope"):
        names("web-1,nope")


@pytest.mark.parametrize(("value", "total", "expected"), [(None, 10, None), (3, 10, 3), ("3", 10, 3), ("25%", 10, 3),
                                                          ("100%", 7, 7), ("1%", 7, 1), (0, 5, 0)])  # fmt: skip
def test_amounts_are_counts_or_percentages_of_the_targets(value: int | str | None, total: int, expected: int) -> None:
    assert amount(value, total) == expected


@pytest.mark.parametrize("value", ["-1", "abc", "0%", "150%", "2.5"])
def test_bad_amounts_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match=value.replace(".", r"\.")):
        amount(value, 10)


def test_fanout_settings_are_checked_when_made() -> None:
    assert not FanOut().active and FanOut(concurrency=2).active
    with pytest.raises(ValueError):
        FanOut(concurrency=0)
    with pytest.raises(ValueError):
        FanOut(target_timeout=0)
    with pytest.raises(ValueError):
        FanOut(max_failures="lots")


def test_the_summary_sorts_machines_by_outcome() -> None:
    results = [
        CommandResult("1", "a", "succeeded"), CommandResult("2", "b", "failed"), CommandResult("3", "c", TIMED_OUT),
        CommandResult("", "d", SKIPPED), CommandResult("5", "e", "running"), CommandResult("6", "f", "rejected"),
    ]  # fmt: skip
    summary = Summary.of(results)
    assert (summary.succeeded, summary.failed, summary.timed_out, summary.skipped, summary.unfinished) == (
        ["a"], ["b", "f"], ["c"], ["d"], ["e"],
    )  # fmt: skip
    assert summary.line() == "1 succeeded, 2 failed, 1 timed out, 1 skipped, 1 unfinished"
    assert all(r.final for r in results if r.status != "running")
