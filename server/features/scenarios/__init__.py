"""Scenarios and their machines: created with their machines' keys, listed, shown, deleted; machines revoked,
certified, reporting ready; following a scenario's events. ``handlers`` (what masters and daemons send, and the
machine view other features use), ``rest`` (the same over REST)."""

from __future__ import annotations

from dataclasses import replace

from server.features.scenarios import handlers, rest
from server.features.scenarios.handlers import (
    OPERATING_SYSTEMS,
    REPORT_KEY_PATTERN,
    check_labels,
    scenario_summary,
    scenario_wire,
)

FEATURE = replace(handlers.FEATURE, routes=rest.routes)

__all__ = [
    "FEATURE",
    "OPERATING_SYSTEMS",
    "REPORT_KEY_PATTERN",
    "check_labels",
    "scenario_summary",
    "scenario_wire",
]
