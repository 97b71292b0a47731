"""Scenarios over REST for scripts and the dashboard: the ones a token may see, one with its machines, its events
from a cursor."""

from __future__ import annotations

from aiohttp import web

from server.core import stores
from server.core.appkeys import HUB_KEY
from server.features.scenarios.handlers import scenario_summary, scenario_wire
from server.transport.rest.auth import authenticate
from server.transport.rest.encoding import event_wire, json_response, query_int

EVENTS_PAGE = 500

routes = web.RouteTableDef()


@routes.get("/v1/scenarios")
async def list_scenarios(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenarios = [await scenario_summary(hub, scenario) for scenario in await principal.scenarios(hub)]
    return json_response({"scenarios": sorted(scenarios, key=lambda s: s["name"])})


@routes.get("/v1/scenarios/{name}")
async def show_scenario(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    after = request.query.get("after", "")
    return json_response(await scenario_wire(hub, scenario, after, query_int(request, "limit", 0, 0, 10_000)))


@routes.get("/v1/scenarios/{name}/events")
async def events(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    principal = await authenticate(request)
    scenario = await principal.scenario(hub, request.match_info["name"])
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", EVENTS_PAGE, 1, EVENTS_PAGE)
    found = await stores.events(hub).events_after(scenario.id, after, limit)
    return json_response(
        {"events": [event_wire(e) for e in found], "head": await stores.events(hub).last_cursor(scenario.id)}
    )
