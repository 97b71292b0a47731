"""Plans: DAGs of steps the hub runs for a master, resumed after a restart, one replica at a time.
``handlers`` (requests, the runner and its service: ``start_plan``, ``cancel_plan``, ``plan_wire``), ``rest``
(a scenario's plans and gorchestrator's ``/v1/tasks``)."""

from __future__ import annotations

from dataclasses import replace

from server.features.plans import handlers, rest
from server.features.plans.handlers import cancel_plan, plan_wire, start_plan

FEATURE = replace(handlers.FEATURE, routes=rest.routes)

__all__ = [
    "FEATURE",
    "cancel_plan",
    "plan_wire",
    "start_plan",
]
