"""The OpenAPI 3.1 document the hub serves is valid and describes the running API: schemathesis generates
requests for every operation (with a real scenario and random names, as viewer and operator) and checks every
answer's status, content type and body against the document."""

from __future__ import annotations

import asyncio
import copy
import traceback
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from clients.link import hub_http_url
from clients.master.sdk import Master
from server.transport.rest.openapi import DOCUMENT
from tests.e2e.support import HubProcess

EXAMPLES = 25
STREAMS = ("/v1/scenarios/{name}/events/stream",)  # endless by design: checked in test_rest_api.py


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


@pytest.fixture
def hub(make_hub: Callable[..., HubProcess]) -> HubProcess:
    """Generated requests include bad credentials and come fast: limits high enough not to stop the run (the
    limits themselves are tested in test_rest_api.py)."""
    return make_hub(
        env={"CRC_HANDSHAKE_FAILURE_LIMIT": "1000000", "CRC_REST_RATE": "100000", "CRC_REST_BURST": "100000"}
    )


async def test_the_openapi_document_describes_the_running_api(
    http: aiohttp.ClientSession, hub: HubProcess, master: Master, deploy
) -> None:
    await deploy("spec", "box")
    plan = await master.run_plan("spec", {"name": "p", "steps": [{"id": "a", "target": "box", "command": "true"}]})
    await master.wait_plan("spec", plan["id"])
    await master.run("spec", "box", "echo results-exist")
    viewer = (await master.create_token("viewer"))[0]
    operator = (await master.create_token("operator", scenario="spec"))[0]
    base = hub_http_url(hub.url)
    async with http.get(base + "/v1/openapi.json") as response:
        document = await response.json()
    validate(document)
    assert document == DOCUMENT
    async with http.get(base + "/v1/docs") as response:
        page = await response.text()
    assert response.status == 200 and "/v1/tasks/{id}" in page and "/v1/openapi.json" in page

    schema = schemathesis.openapi.from_dict(document)
    checked: list[str] = []

    def check_every_operation() -> None:
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path in STREAMS:
                continue
            writes = operation.method.upper() in ("POST", "DELETE")
            # Random commands are never run for real: writes go with the viewer token (answered 403 or 4xx).
            tokens = [viewer] if writes else [viewer, operator]
            fixed = (
                {"name": "spec"}
                if "{name}" in operation.path
                else {"id": plan["id"]}
                if "{id}" in operation.path
                else None
            )
            for token in tokens:
                for path_parameters in [fixed, None] if fixed else [None]:
                    strategy = operation.as_strategy(
                        headers={"Authorization": f"Bearer {token}"}, path_parameters=path_parameters
                    )

                    @settings(
                        max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
                    )
                    @given(case=strategy)
                    def call(case: schemathesis.Case) -> None:
                        response = case.call(base_url=base, timeout=10)
                        case.validate_response(response)

                    call()
            checked.append(f"{operation.method.upper()} {operation.path}")

    await asyncio.to_thread(check_every_operation)

    # The checks bite: a document that promises a field the API does not send fails.
    wrong = copy.deepcopy(document)
    wrong["components"]["schemas"]["Me"]["required"].append("not_sent")
    operation = schemathesis.openapi.from_dict(wrong).find_operation_by_path("get", "/v1/me")

    def check_wrong() -> None:
        case = operation.Case(headers={"Authorization": f"Bearer {viewer}"})
        try:
            case.validate_response(case.call(base_url=base, timeout=10))
        except BaseExceptionGroup as exc:  # schemathesis raises a group of failures
            assert "not_sent" in "".join(traceback.format_exception(exc))
        else:
            raise AssertionError("a response missing a required field passed the check")

    await asyncio.to_thread(check_wrong)
    assert len(checked) == sum(len([m for m in item if m != "parameters"]) for item in DOCUMENT["paths"].values()) - 1
