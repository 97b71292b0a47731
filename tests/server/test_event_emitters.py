"""The hub's ``command_queued`` data is built from the order as before typed events: same keys, values and order."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from protocol import Order, OrderKind
from server.features.orders import order_summary


def order(kind: OrderKind, body: dict[str, Any]) -> Order:
    return Order("o1", "shop", "m1", kind, body, 1_700_000_600.0, "master")


@pytest.mark.parametrize(
    ("kind", "body", "stored"),
    [
        (OrderKind.EXEC, {"command": "uname -a", "shell": "sh"}, {"command": "uname -a"}),
        (OrderKind.EXEC, {"command": "x" * 300}, {"command": "x" * 200}),
        (OrderKind.EXEC, {"command": ["ls", "-l"]}, {"command": "['ls', '-l']"}),  # an argv, as str() showed it
        (
            OrderKind.EXEC,
            {"command": "./r.sh", "job": "report", "job_version": 2},
            {"command": "./r.sh", "job": "report"},
        ),
        (OrderKind.EXEC, {"command": "true", "job": ""}, {"command": "true"}),
        (OrderKind.PUT_FILE, {"path": "/etc/app.conf", "mode": 0o640}, {"path": "/etc/app.conf"}),
        (OrderKind.PUT_FILE, {}, {"path": ""}),
        (OrderKind.UPDATE, {"wheel": "crc.whl", "lock": "runtime.lock"}, {"wheel": "crc.whl"}),
        (OrderKind.HOSTS, {"entries": []}, {}),
        (OrderKind.PING, {}, {}),
    ],
)
def test_command_queued_data_is_what_the_hub_stored_before(
    kind: OrderKind, body: dict[str, Any], stored: dict[str, Any]
) -> None:
    expected = {"order_id": "o1", "kind": kind.value, **stored}
    assert json.dumps(order_summary(order(kind, body)).to_wire()) == json.dumps(expected)


def test_a_plan_adds_its_id_and_step_last() -> None:
    summary = replace(order_summary(order(OrderKind.EXEC, {"command": "make", "job": "build"})), plan="p1", step="s")
    assert list(summary.to_wire().items()) == [
        ("order_id", "o1"), ("kind", "exec"), ("command", "make"), ("job", "build"), ("plan", "p1"), ("step", "s"),
    ]  # fmt: skip
