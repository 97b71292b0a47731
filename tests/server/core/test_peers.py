"""Typed backplane messages (server/core/peers.py): every kind round-trips, keeps the wire replicas speak, and every
malformed map is refused naming its kind and field; handler tables refuse a second handler for a kind."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import CrcError, Identity
from protocol.messages import Output
from server.app import FEATURES
from server.core.feature import Feature
from server.core.hub import CORE_PEERS, Hub
from server.core.peers import (
    PEER_TYPES,
    CancelOrder,
    CancelPlan,
    DeliverQueued,
    DropMaster,
    LiveOutput,
    NewEvents,
    NewMail,
    PeerKind,
    PeerMessage,
    PeerMessageError,
    PeerTable,
    RevokeMachine,
    peer_from_wire,
    to_wire,
)
from server.settings import HubSettings
from server.store import SqliteStore

# One of each kind, with the map each is on the wire: these names are what replicas already send each other, so a
# replica of this version and one of the last can run side by side during an upgrade.
SAMPLES: dict[PeerKind, tuple[PeerMessage, dict[str, Any]]] = {
    PeerKind.DELIVER: (DeliverQueued("m-1"), {"kind": "deliver", "machine": "m-1"}),
    PeerKind.CANCEL: (
        CancelOrder("m-1", "o-1", "shop"),
        {"kind": "cancel", "machine": "m-1", "order": "o-1", "name": "shop"},
    ),
    PeerKind.REVOKE: (
        RevokeMachine("m-1", "key revoked"),
        {"kind": "revoke", "machine": "m-1", "reason": "key revoked"},
    ),
    PeerKind.EVENT: (NewEvents("s-1"), {"kind": "event", "scenario": "s-1"}),
    PeerKind.OUTPUT: (
        LiveOutput("s-1", "shop", Output("o-1", "stdout", b"\x00hi\xff", "web-1")),
        {
            "kind": "output",
            "scenario": "s-1",
            "name": "shop",
            "output": {
                "order_id": "o-1",
                "stream": "stdout",
                "data": b"\x00hi\xff",
                "machine": "web-1",
                "sealed": False,
            },
        },
    ),
    PeerKind.MAIL: (NewMail("s-1", ["m-1", "m-2"]), {"kind": "mail", "scenario": "s-1", "machines": ["m-1", "m-2"]}),
    PeerKind.DROP_MASTER: (DropMaster("ma-1"), {"kind": "drop_master", "master": "ma-1"}),
    PeerKind.CANCEL_PLAN: (CancelPlan("p-1"), {"kind": "cancel_plan", "plan": "p-1"}),
}
KINDS = list(PeerKind)


def wire_of(kind: PeerKind) -> dict[str, Any]:
    return dict(SAMPLES[kind][1])


def refusal(data: Any) -> PeerMessageError:
    with pytest.raises(PeerMessageError) as caught:
        peer_from_wire(data)
    return caught.value


def field_names(kind: PeerKind) -> list[str]:
    return [f.name for f in dataclasses.fields(PEER_TYPES[kind])]


def test_every_kind_has_one_message_class_and_a_sample_here() -> None:
    assert set(PEER_TYPES) == set(PeerKind) == set(SAMPLES)
    assert all(cls.KIND is kind for kind, cls in PEER_TYPES.items())


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_kind_goes_to_the_wire_under_the_names_replicas_speak(kind: PeerKind) -> None:
    message, wire = SAMPLES[kind]
    assert to_wire(message) == wire


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_every_kind_round_trips_through_msgpack_as_the_redis_backplane_sends_it(kind: PeerKind) -> None:
    message, _ = SAMPLES[kind]
    packed = msgpack.packb(to_wire(message), use_bin_type=True)
    parsed = peer_from_wire(msgpack.unpackb(packed, raw=False))
    assert parsed == message
    assert type(parsed) is type(message)


def test_a_live_output_without_a_machine_reads_as_one_with_an_empty_machine() -> None:
    wire = wire_of(PeerKind.OUTPUT)
    wire["output"] = {k: v for k, v in wire["output"].items() if k != "machine"}
    parsed = peer_from_wire(wire)
    assert isinstance(parsed, LiveOutput)
    assert parsed.output == Output("o-1", "stdout", b"\x00hi\xff", "")


@pytest.mark.parametrize("data", [None, 7, "deliver", b"\x81", ["deliver", "m-1"]], ids=repr)
def test_anything_but_a_map_is_refused(data: Any) -> None:
    error = refusal(data)
    assert "must be a map" in str(error)
    assert (error.kind, error.field) == (None, None)
    assert isinstance(error, CrcError)


def test_a_map_without_a_kind_is_refused_naming_the_kind_field() -> None:
    error = refusal({"machine": "m-1"})
    assert "lacks its 'kind'" in str(error)
    assert (error.kind, error.field) == (None, "kind")


@pytest.mark.parametrize("kind", [None, 3, b"deliver", ["deliver"]], ids=repr)
def test_a_kind_that_is_not_a_string_is_refused(kind: Any) -> None:
    error = refusal({"kind": kind, "machine": "m-1"})
    assert "string 'kind'" in str(error)
    assert error.field == "kind"


@pytest.mark.parametrize("kind", ["unknown", "DELIVER", "", "deliver "], ids=repr)
def test_an_unknown_kind_is_refused_naming_it_and_the_known_ones(kind: str) -> None:
    error = refusal({"kind": kind, "machine": "m-1"})
    assert f"unknown backplane message kind {kind!r}" in str(error)
    assert "deliver, cancel" in str(error)
    assert (error.kind, error.field) == (kind, "kind")


MISSING = [(kind, name) for kind in KINDS for name in field_names(kind)]


@pytest.mark.parametrize(("kind", "name"), MISSING, ids=lambda v: str(v))
def test_every_missing_field_of_every_kind_is_refused_naming_both(kind: PeerKind, name: str) -> None:
    wire = wire_of(kind)
    del wire[name]
    error = refusal(wire)
    assert str(error) == f"{kind.value} backplane message lacks field {name!r}"
    assert (error.kind, error.field) == (kind.value, name)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_an_extra_field_on_any_kind_is_refused_naming_it(kind: PeerKind) -> None:
    error = refusal({**wire_of(kind), "from": "replica-b", "zzz": 1})
    assert str(error) == f"{kind.value} backplane message has unknown field(s) 'from', 'zzz'"
    assert (error.kind, error.field) == (kind.value, "from")


def test_a_field_name_that_is_not_a_string_is_refused_as_unknown() -> None:
    error = refusal({**wire_of(PeerKind.DELIVER), b"machine": "m-1"})
    assert "unknown field(s) b'machine'" in str(error)


# A value of the wrong type for each field: a number where a string (or a list, or a record) belongs.
WRONG_TYPE = [(kind, name) for kind in KINDS for name in field_names(kind)]


@pytest.mark.parametrize(("kind", "name"), WRONG_TYPE, ids=lambda v: str(v))
@pytest.mark.parametrize("value", [12, None, True], ids=repr)
def test_every_field_of_every_kind_with_a_wrong_typed_value_is_refused(kind: PeerKind, name: str, value: Any) -> None:
    error = refusal({**wire_of(kind), name: value})
    assert str(error).startswith(f"{kind.value} backplane message field {name!r} must be ")
    assert str(error).endswith(f", not {type(value).__name__}")
    assert (error.kind, error.field) == (kind.value, name)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("machine", b"m-1", "must be str, not bytes"),
        ("machine", ["m-1"], "must be str, not list"),
    ],
)
def test_a_string_field_takes_nothing_but_a_string(field: str, value: Any, expected: str) -> None:
    error = refusal({"kind": "deliver", field: value})
    assert expected in str(error)


def test_a_list_with_one_item_of_the_wrong_type_is_refused() -> None:
    error = refusal({**wire_of(PeerKind.MAIL), "machines": ["m-1", 2]})
    assert str(error) == "mail backplane message field 'machines' must be list[str], not list"
    assert error.field == "machines"


def test_a_record_field_that_is_not_a_map_is_refused() -> None:
    error = refusal({**wire_of(PeerKind.OUTPUT), "output": ["o-1", "stdout", b""]})
    assert str(error) == "output backplane message field 'output' must be a map (Output), not list"


@pytest.mark.parametrize("name", ["order_id", "stream", "data"])
def test_a_nested_record_missing_a_field_is_refused_naming_its_path(name: str) -> None:
    wire = wire_of(PeerKind.OUTPUT)
    wire["output"] = {k: v for k, v in wire["output"].items() if k != name}
    error = refusal(wire)
    assert str(error) == f"output backplane message lacks field 'output.{name}'"
    assert (error.kind, error.field) == ("output", f"output.{name}")


def test_a_nested_record_with_a_wrong_typed_or_extra_field_is_refused_naming_its_path() -> None:
    wire = wire_of(PeerKind.OUTPUT)
    wrong = refusal({**wire, "output": {**wire["output"], "data": "text, not bytes"}})
    assert str(wrong) == "output backplane message field 'output.data' must be bytes, not str"
    extra = refusal({**wire, "output": {**wire["output"], "exit": 0}})
    assert str(extra) == "output backplane message has unknown field(s) 'output.exit'"
    assert extra.field == "output.exit"


async def _noop(hub: Hub, message: DropMaster) -> None:
    return None


async def _noop_plan(hub: Hub, message: CancelPlan) -> None:
    return None


def test_a_table_refuses_a_second_handler_for_a_kind() -> None:
    table: PeerTable[Hub] = PeerTable()
    table.add(DropMaster, _noop)
    with pytest.raises(ValueError, match="two handlers for backplane messages of kind drop_master"):
        table.on(DropMaster)(_noop)


def test_a_table_refuses_a_class_that_is_not_the_one_of_its_kind() -> None:
    @dataclasses.dataclass(frozen=True)
    class Lookalike(DropMaster):
        pass

    with pytest.raises(ValueError, match="Lookalike is not the message class of kind drop_master"):
        PeerTable[Hub]().add(Lookalike, _noop)


def test_merged_tables_keep_every_handler_and_refuse_a_kind_handled_twice() -> None:
    first: PeerTable[Hub] = PeerTable()
    first.add(DropMaster, _noop)
    second: PeerTable[Hub] = PeerTable()
    second.on(CancelPlan)(_noop_plan)
    merged = first.merged(second)
    assert set(merged) == {PeerKind.DROP_MASTER, PeerKind.CANCEL_PLAN}
    assert merged.route(PeerKind.CANCEL_PLAN) is not None
    assert merged.route(PeerKind.DELIVER) is None
    with pytest.raises(ValueError, match="two handlers"):
        first.merged(second, first)


def test_the_hub_and_its_features_handle_every_kind_once() -> None:
    kinds = list(CORE_PEERS) + [kind for feature in FEATURES for kind in feature.peer_handlers]
    assert sorted(kinds) == sorted(PeerKind)


async def test_a_hub_refuses_a_feature_that_handles_a_kind_the_core_handles(tmp_path: Path) -> None:
    table: PeerTable[Hub] = PeerTable()
    table.add(DropMaster, _noop)
    store = SqliteStore(tmp_path / "hub.sqlite3")
    try:
        with pytest.raises(ValueError, match="kind drop_master"):
            Hub(
                HubSettings(data_dir=tmp_path),
                store,
                Identity.generate(os.urandom),
                extensions=[Feature("rogue", peer_handlers=table)],
            )
    finally:
        await store.close()
