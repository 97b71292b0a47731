"""What a master may reach: its own scenarios, and the orders and plans inside them, nothing of another tenant's.

Every lookup a master (over WebSocket or REST) makes by name or id goes through here, so "someone else's" and
"nobody's" give the same NOT_FOUND answer: a tenant cannot probe what other tenants have by the difference. A
REST token limited to one scenario reaches only that one.
"""

from __future__ import annotations

from protocol import ErrorCode, Role
from server.core import stores
from server.core.connection import Connection
from server.core.errors import RequestError
from server.core.hub import Hub
from server.store import OrderRecord, PlanRecord, ScenarioRecord


async def owned_scenario(hub: Hub, owner: str, name: str) -> ScenarioRecord:
    """The owner's scenario of that name."""
    scenario = await stores.scenarios(hub).scenario_by_name(owner, name)
    if scenario is None:
        raise RequestError(ErrorCode.NOT_FOUND, f"you have no scenario named {name!r}", scenario=name)
    return scenario


async def requester_scenario(hub: Hub, conn: Connection, name: str) -> ScenarioRecord:
    """The scenario a session asks about: a master's own of that name; for a machine, its own scenario whatever
    it names (its futures and messages are those of its scenario alone)."""
    if conn.role is Role.DAEMON:
        scenario = await stores.scenarios(hub).scenario(conn.scenario_id)
        if scenario is None:
            raise RequestError(ErrorCode.NOT_FOUND, "this machine's scenario is gone")
        return scenario
    return await owned_scenario(hub, conn.id, name)


async def order_in(hub: Hub, scenario: ScenarioRecord, order_id: str) -> OrderRecord:
    """The order of that id, if it belongs to ``scenario`` (which the caller already reached)."""
    order = await stores.orders(hub).order(order_id)
    if order is None or order.scenario_id != scenario.id:
        raise RequestError(ErrorCode.NOT_FOUND, f"no order {order_id} in scenario {scenario.name!r}")
    return order


async def plan_in(hub: Hub, scenario: ScenarioRecord, plan_id: str) -> PlanRecord:
    """The plan of that id, if it belongs to ``scenario`` (which the caller already reached)."""
    record = await stores.plans(hub).plan(plan_id)
    if record is None or record.scenario_id != scenario.id:
        raise RequestError(ErrorCode.NOT_FOUND, f"no plan {plan_id} in scenario {scenario.name!r}")
    return record


async def owned_plan(
    hub: Hub, owner: str, plan_id: str, *, only_scenario: str = ""
) -> tuple[PlanRecord, ScenarioRecord]:
    """A plan looked up by id alone (gorchestrator's ``/v1/tasks/{id}``), with the scenario it runs in: the
    owner's, and ``only_scenario`` if the caller's token is limited to one."""
    record = await stores.plans(hub).plan(plan_id)
    scenario = None if record is None else await stores.scenarios(hub).scenario(record.scenario_id)
    if (
        record is None or scenario is None or scenario.owner != owner
        or (only_scenario and scenario.name != only_scenario)
    ):  # fmt: skip
        raise RequestError(ErrorCode.NOT_FOUND, f"no task {plan_id}")
    return record, scenario
