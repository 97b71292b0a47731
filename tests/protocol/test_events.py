"""Event kinds and payloads: what the hub stores reads back as it was, bad data names its field, and no code outside
``protocol/events.py`` spells a kind (the dashboard's script included)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any, get_type_hints

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import events
from protocol.errors import ErrorCode, ProtocolError
from protocol.events import (
    MACHINE_READY_FACTS,
    BootStep,
    CommandQueued,
    EventKind,
    EventPayload,
    MachineConnected,
    MachineReady,
    PlanStep,
    event_schema,
    from_wire,
    payload_type,
)
from tests.protocol.support import FUZZ

ROOT = Path(__file__).resolve().parents[2]

# Event data as today's emitters store it (server/*.py), one or more per kind, and as older hubs stored it.
STORED: list[tuple[str, dict[str, Any]]] = [
    ("scenario_created", {"machines": ["mysql", "web"]}),
    ("scenario_created", {"machines": []}),
    ("machine_connected", {"replica": "r-4f2a9c"}),
    ("machine_connected", {"session": "s-1"}),  # hubs before replicas named the session
    (
        "machine_ready",
        {
            "hostname": "web-1",
            "os": "Linux",
            "os_release": "Debian GNU/Linux 12 (bookworm)",
            "kernel": "6.1.0-18-amd64",
            "cpus": {"logical": 4, "physical": 2},
            "memory_total": 8 * 2**30,
            "daemon_version": "0.9.0",
            "ips": ["10.0.0.3", "fd00::3"],
        },
    ),
    # A fact the daemon could not determine is None; one it did not send is absent.
    (
        "machine_ready",
        {"hostname": "box", "cpus": {"logical": None, "physical": None}, "memory_total": None, "ips": []},
    ),
    ("machine_offline", {}),
    ("machine_revoked", {"machine_id": "3f9c0a"}),
    ("machine_key_rotated", {"public_key": "ed25519:Zm9vYmFy"}),
    ("boot_step", {"step": "installing-python", "status": "running", "detail": "", "time": 1_700_000_000}),
    (
        "boot_step",
        {"step": "installing-daemon", "status": "failed", "detail": "ERROR: not a wheel\n", "time": 1_700_000_005},
    ),
    ("command_queued", {"order_id": "o1", "kind": "exec", "command": "uname -a"}),
    ("command_queued", {"order_id": "o2", "kind": "put_file", "path": "/etc/shop/app.conf"}),
    ("command_queued", {"order_id": "o3", "kind": "update", "wheel": "crc-0.9.0-py3-none-any.whl"}),
    ("command_queued", {"order_id": "o4", "kind": "exec", "command": "./report.sh", "job": "report"}),
    ("command_queued", {"order_id": "o5", "kind": "exec", "command": "make", "plan": "p1", "step": "build"}),
    ("command_queued", {"order_id": "o6", "kind": "ping"}),
    ("command_delivered", {"order_id": "o1"}),
    ("command_started", {"order_id": "o1"}),
    ("command_finished", {"order_id": "o1", "status": "succeeded", "exit_code": 0, "error": ""}),
    (
        "command_finished",
        {"order_id": "o2", "status": "cancelled", "exit_code": None, "error": "cancelled before delivery"},
    ),
    ("command_cancel_requested", {"order_id": "o1"}),
    ("plan_step", {"plan": "p1", "step": "build", "name": "build", "state": "running"}),
    (
        "plan_step",
        {
            "plan": "p1",
            "step": "web",
            "name": "deploy web",
            "state": "waiting",
            "keys": ["db/ready"],
            "missing": ["db/ready"],
        },
    ),
    ("plan_finished", {"plan": "p1", "outcome": "succeeded"}),
    ("kv_set", {"key": "db/ready", "ttl": 3600.0, "size": 3}),
    ("kv_set", {"key": "config/port", "ttl": 0.0, "size": 4}),
    ("message_sent", {"topic": "deploy", "to": ["web-1", "web-2"], "size": 2}),
    ("machines_added", {"machines": ["cache", "worker"]}),
    ("machine_enrolled", {"token": "0123456789abcdef", "role": "workers"}),
    (
        "composition_assigned",
        {"composition": "c1", "job": "setup", "version": 2, "target": "role:web", "members": ["web1"]},
    ),
    ("composition_unassigned", {"composition": "c1", "job": "setup", "cancelled": ["web2"]}),
]


def test_every_kind_has_its_own_payload_class() -> None:
    classes = [payload_type(kind) for kind in EventKind]
    assert all(cls.KIND is kind for cls, kind in zip(classes, EventKind, strict=True))
    assert len(set(classes)) == len(EventKind) == 20
    assert set(classes) == set(EventPayload.__subclasses__())
    assert all(dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen for cls in classes)  # type: ignore[attr-defined]


def test_every_kind_has_a_stored_example() -> None:
    assert {kind for kind, _ in STORED} == {kind.value for kind in EventKind}


@pytest.mark.parametrize(("kind", "data"), STORED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(STORED)])
def test_stored_data_reads_back_as_it_was_stored(kind: str, data: dict[str, Any]) -> None:
    payload = from_wire(kind, data)
    assert isinstance(payload, payload_type(kind))
    # Same keys, values and order: the JSON a store or REST writes is byte-for-byte what it was.
    assert json.dumps(payload.to_wire()) == json.dumps(data)
    assert from_wire(EventKind(kind), payload.to_wire()) == payload


@pytest.mark.parametrize(("kind", "data"), STORED, ids=[f"{k}-{i}" for i, (k, _) in enumerate(STORED)])
def test_the_json_schema_accepts_what_is_stored(kind: str, data: dict[str, Any]) -> None:
    jsonschema.validate({"kind": kind, "data": data}, event_schema())


def test_the_json_schema_is_valid_and_rejects_a_wrong_field() -> None:
    schema = event_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["properties"]["kind"]["enum"]) == {kind.value for kind in EventKind}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "boot_step", "data": {"step": "x", "status": "ok", "detail": ""}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"kind": "command_finished", "data": {"order_id": 1, "status": "succeeded",
                             "exit_code": 0, "error": ""}}, schema)  # fmt: skip


def test_typed_fields_read_as_attributes() -> None:
    queued = from_wire("command_queued", {"order_id": "o5", "kind": "exec", "command": "make", "plan": "p1",
                                          "step": "build"})  # fmt: skip
    assert queued == CommandQueued("o5", "exec", command="make", plan="p1", step="build")
    assert (queued.path, queued.job) == (None, None)
    ready = from_wire("machine_ready", STORED[4][1])
    assert isinstance(ready, MachineReady)
    assert (ready.hostname, ready.os, ready.memory_total, ready.cpus) == (
        "web-1", "Linux", 8 * 2**30, {"logical": 4, "physical": 2},
    )  # fmt: skip
    assert ready.ips == ["10.0.0.3", "fd00::3"]
    assert from_wire("machine_connected", {"session": "s-1"}) == MachineConnected(session="s-1")


def test_unknown_keys_are_ignored_and_not_written_back() -> None:
    data = {"step": "a", "status": "ok", "detail": "", "time": 1, "added_by_a_newer_hub": [1, 2]}
    assert from_wire("boot_step", data).to_wire() == {"step": "a", "status": "ok", "detail": "", "time": 1}


def test_a_fact_of_another_type_is_kept_but_reads_as_none() -> None:
    ready = from_wire("machine_ready", {"hostname": 42, "memory_total": "lots", "fqdn": "not-a-key-fact", "ips": []})
    assert isinstance(ready, MachineReady)
    assert (ready.hostname, ready.memory_total) == (None, None)
    assert ready.to_wire() == {"hostname": 42, "memory_total": "lots", "ips": []}


def test_a_whole_ttl_may_come_back_as_an_int() -> None:
    assert from_wire("kv_set", {"key": "k", "ttl": 60, "size": 1}).to_wire() == {"key": "k", "ttl": 60, "size": 1}


def _required(cls: type[EventPayload]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def _first_example(kind: EventKind) -> dict[str, Any]:
    return next(data for k, data in STORED if k == kind.value)


MISSING_CASES = [(kind, name) for kind in EventKind for name in _required(payload_type(kind))]


@pytest.mark.parametrize(("kind", "name"), MISSING_CASES, ids=[f"{k}.{n}" for k, n in MISSING_CASES])
def test_a_missing_field_raises_naming_the_kind_and_the_field(kind: EventKind, name: str) -> None:
    data = {k: v for k, v in _first_example(kind).items() if k != name}
    with pytest.raises(ProtocolError) as caught:
        from_wire(kind, data)
    assert caught.value.code is ErrorCode.BAD_FIELD
    assert caught.value.details == {"kind": kind.value, "field": name}
    assert kind.value in caught.value.message and repr(name) in caught.value.message


WRONG_TYPE_CASES = [
    (kind, name)
    for kind in EventKind
    for name in (f.name for f in dataclasses.fields(payload_type(kind)))
    if not (kind is EventKind.MACHINE_READY and name == "facts")  # facts are the daemon's: kept, read typed
]


@pytest.mark.parametrize(("kind", "name"), WRONG_TYPE_CASES, ids=[f"{k}.{n}" for k, n in WRONG_TYPE_CASES])
def test_a_field_of_the_wrong_type_raises_naming_the_kind_and_the_field(kind: EventKind, name: str) -> None:
    data = {**_first_example(kind), name: {"not": "this"}}  # no field of any payload is a bare map
    with pytest.raises(ProtocolError) as caught:
        from_wire(kind, data)
    assert caught.value.code is ErrorCode.BAD_FIELD
    assert caught.value.details == {"kind": kind.value, "field": name}
    assert "wrong type" in caught.value.message


def test_numbers_are_not_booleans_and_list_items_are_checked() -> None:
    with pytest.raises(ProtocolError, match="'size'"):
        from_wire("kv_set", {"key": "k", "ttl": 0.0, "size": True})
    with pytest.raises(ProtocolError, match="'to'"):
        from_wire("message_sent", {"topic": "t", "to": ["web", 3], "size": 1})
    with pytest.raises(ProtocolError, match="'exit_code'"):
        from_wire("command_finished", {"order_id": "o", "status": "failed", "exit_code": 1.5, "error": ""})


def test_an_unknown_kind_or_data_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(ProtocolError) as caught:
        from_wire("tick", {})
    assert caught.value.code is ErrorCode.UNKNOWN_TYPE and caught.value.details == {"kind": "tick"}
    with pytest.raises(ProtocolError) as caught:
        payload_type("machine-ready")
    assert caught.value.code is ErrorCode.UNKNOWN_TYPE
    with pytest.raises(ProtocolError) as caught:
        from_wire("boot_step", ["step", "status"])
    assert caught.value.code is ErrorCode.BAD_FIELD and caught.value.details["kind"] == "boot_step"


def test_absent_optional_fields_stay_absent() -> None:
    running = PlanStep("p1", "build", "build", "running")
    assert running.to_wire() == {"plan": "p1", "step": "build", "name": "build", "state": "running"}
    assert BootStep("s", "ok", "", 1).KIND is EventKind.BOOT_STEP


# Round trips for any values of the declared types.
_SIMPLE: dict[Any, st.SearchStrategy[Any]] = {
    str: st.text(max_size=20),
    int: st.integers(),
    float: st.floats(allow_nan=False),
    list[str]: st.lists(st.text(max_size=8), max_size=4),
    str | None: st.none() | st.text(max_size=20),
    int | None: st.none() | st.integers(),
    list[str] | None: st.none() | st.lists(st.text(max_size=8), max_size=4),
    bool | None: st.none() | st.booleans(),
}


def _payloads(cls: type[EventPayload]) -> st.SearchStrategy[EventPayload]:
    if cls is MachineReady:
        facts = st.fixed_dictionaries(
            {}, optional={name: st.none() | st.text(max_size=8) | st.integers() for name in MACHINE_READY_FACTS}
        )
        return st.builds(MachineReady, ips=_SIMPLE[list[str]], facts=facts)
    hints = get_type_hints(cls)
    return st.builds(cls, **{f.name: _SIMPLE[hints[f.name]] for f in dataclasses.fields(cls)})


@FUZZ
@given(st.sampled_from(list(EventKind)).flatmap(lambda kind: _payloads(payload_type(kind))))
def test_any_payload_round_trips_through_the_wire(payload: EventPayload) -> None:
    wire = payload.to_wire()
    assert from_wire(payload.KIND, wire) == payload
    assert from_wire(payload.KIND, json.loads(json.dumps(wire))).to_wire() == wire


# Where kinds are spelled: only in protocol/events.py.
PYTHON_DIRS = ("server", "clients", "provisioning", "examples", "scripts")


def _field_names(tree: ast.AST) -> set[int]:
    """Ids of string constants used as a map key (``{"plan_step": ...}``, ``body["plan_step"]``,
    ``body.get("plan_step")``): an order body's field that shares a kind's name is not that kind."""
    keys: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            keys.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            keys.add(id(node.slice))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
        ):
            keys.add(id(node.args[0]))
    return keys


def test_no_python_code_outside_protocol_events_spells_an_event_kind() -> None:
    kinds = {kind.value for kind in EventKind}
    found = []
    for top in PYTHON_DIRS:
        for path in sorted((ROOT / top).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            keys = _field_names(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in kinds and id(node) not in keys:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use protocol.events.EventKind instead of:\n" + "\n".join(sorted(found))


def test_the_kind_check_would_see_a_spelled_kind() -> None:
    tree = ast.parse('if event.kind == "boot_step": body = {"plan_step": s, "x": b.get("plan_step")}')
    keys = _field_names(tree)
    spelled = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in keys]
    assert spelled == ["boot_step"]


APP_JS = ROOT / "server" / "dashboard" / "static" / "app.js"


def _kinds_in_app_js(source: str) -> set[str]:
    """Kinds the dashboard compares ``.kind`` with: ``kind === "x"``, the cases of each ``switch (….kind)`` and the
    keys of ``STATUS_BY_KIND``."""
    kinds = set(re.findall(r"\bkind\s*[!=]==?\s*\"([^\"]+)\"", source))
    for match in re.finditer(r"switch\s*\([\w.]*\.kind\)\s*\{", source):
        depth, end = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            end += 1
        kinds.update(re.findall(r"\bcase\s+\"([^\"]+)\"\s*:", source[match.end() : end]))
    table = re.search(r"const STATUS_BY_KIND = \{(.*?)\};", source, re.DOTALL)
    assert table is not None, "app.js has no STATUS_BY_KIND table any more: update this test"
    kinds.update(re.findall(r"^\s*\"?(\w+)\"?\s*:", table.group(1), re.MULTILINE))
    return kinds


def test_the_dashboard_only_names_kinds_that_exist() -> None:
    kinds = _kinds_in_app_js(APP_JS.read_text(encoding="utf-8"))
    assert len(kinds) >= 10  # the parse found the comparisons at all
    assert kinds <= {kind.value for kind in EventKind}, f"app.js names unknown kinds: {kinds - set(EventKind)}"


def test_the_dashboard_check_would_see_a_renamed_kind() -> None:
    source = 'switch (event.kind) { case "boot_stepp": { if (x) {} } }\nif (e.kind !== "plan_done") {}\n'
    source += 'const STATUS_BY_KIND = {\n  machine_up: "up",\n};\n'
    assert _kinds_in_app_js(source) == {"boot_stepp", "plan_done", "machine_up"}


def test_events_module_names_every_payload_in_all() -> None:
    assert {cls.__name__ for cls in EventPayload.__subclasses__()} <= set(events.__all__)
