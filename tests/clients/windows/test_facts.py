"""Windows facts: merged into the shared facts on Windows only."""

from __future__ import annotations

import sys

import pytest

from clients.daemon import facts
from clients.windows.facts import describe_join, windows_facts

off_windows = pytest.mark.skipif(sys.platform == "win32", reason="checks the behaviour on other systems")


@off_windows
def test_windows_facts_are_empty_off_windows() -> None:
    assert windows_facts() == {}


@off_windows
def test_the_shared_facts_have_no_windows_part_off_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail() -> dict[str, object]:
        raise AssertionError("Windows facts must not be collected here")

    monkeypatch.setattr(facts, "_windows_facts", fail)
    collected = facts.collect_facts("1.0")
    assert "windows" not in collected
    assert collected["daemon_version"] == "1.0"


def test_on_windows_the_windows_facts_are_merged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(facts.sys, "platform", "win32")
    monkeypatch.setattr(facts, "_windows_facts", lambda: {"windows": {"edition": "ServerStandard", "build": 20348}})
    collected = facts.collect_facts("1.0")
    assert collected["windows"] == {"edition": "ServerStandard", "build": 20348}
    assert collected["memory_total"] is not None


def test_a_failing_windows_probe_costs_only_the_windows_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict[str, object]:
        raise OSError("netapi32 not available")

    monkeypatch.setattr(facts.sys, "platform", "win32")
    monkeypatch.setattr(facts, "_windows_facts", broken)
    collected = facts.collect_facts("1.0")
    assert "windows" not in collected
    assert collected["hostname"]


def test_a_domain_member_reports_its_dns_domain() -> None:
    assert describe_join(3, "SHOP", {"USERDNSDOMAIN": "shop.example"}) == {
        "join": "domain",
        "domain": "shop.example",
        "workgroup": None,
    }
    assert describe_join(3, "SHOP", {})["domain"] == "SHOP"


def test_a_workgroup_machine_reports_its_workgroup() -> None:
    assert describe_join(2, "WORKGROUP", {"USERDOMAIN": "VM1"}) == {
        "join": "workgroup",
        "domain": None,
        "workgroup": "WORKGROUP",
    }


def test_without_join_information_the_environment_is_the_best_guess() -> None:
    assert describe_join(None, None, {"USERDNSDOMAIN": "corp.example"})["join"] == "domain"
    assert describe_join(None, None, {"USERDOMAIN": "VM1"}) == {"join": "unknown", "domain": "VM1", "workgroup": None}
