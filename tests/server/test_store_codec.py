"""The store's record codec: records as maps by field name, read back by name, and the old positional lists."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import pytest

from protocol import OrderState
from server.store import JobRecord, MasterRecord, PlanRecord, StoredRecordError
from server.store.codec import decode_record, encode_record, is_positional

NOW = 1_700_000_000.0
JOB = JobRecord("alice", "deploy", "sh", "echo hi", NOW, NOW + 1, 2, {"name": "deploy"}, b"\x01" * 64)


@dataclass(frozen=True, kw_only=True)
class JobWithAFieldInTheMiddle:
    """JobRecord as it would be with ``timeout`` inserted after ``script``: positions shift, names do not."""

    owner: str
    name: str
    shell: str
    script: str
    timeout: float = 60.0
    created: float
    updated: float
    version: int = 1
    statement: dict[str, object] | None = None
    signature: bytes = b""


@dataclass(frozen=True)
class WithAnEnum:
    state: OrderState
    previous: OrderState | None = None


def pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def test_a_record_is_stored_as_a_map_by_field_name_and_reads_back_equal() -> None:
    blob = encode_record(JOB)
    assert msgpack.unpackb(blob, raw=False) == {
        "owner": "alice", "name": "deploy", "shell": "sh", "script": "echo hi", "created": NOW,
        "updated": NOW + 1, "version": 2, "statement": {"name": "deploy"}, "signature": b"\x01" * 64,
    }  # fmt: skip
    assert decode_record(JobRecord, blob) == JOB
    assert not is_positional(blob)


def test_a_field_inserted_in_the_middle_reads_named_data_right_and_takes_its_default() -> None:
    moved = decode_record(JobWithAFieldInTheMiddle, encode_record(JOB))
    assert (moved.script, moved.timeout, moved.created, moved.version, moved.signature) == (
        "echo hi", 60.0, NOW, 2, b"\x01" * 64,
    )  # fmt: skip


def test_fields_the_class_does_not_have_are_ignored() -> None:
    master = MasterRecord("id1", "alice", "key", NOW)
    blob = pack({**msgpack.unpackb(encode_record(master)), "retired_field": [1, 2]})
    assert decode_record(MasterRecord, blob) == master


def test_a_missing_required_field_is_an_error_naming_it() -> None:
    blob = pack({"id": "id1", "name": "alice", "created": NOW})
    with pytest.raises(StoredRecordError, match="public_key") as caught:
        decode_record(MasterRecord, blob)
    assert caught.value.missing == ["public_key"] and caught.value.record == "MasterRecord"


def test_an_old_positional_list_reads_with_its_frozen_layout_even_into_a_changed_class() -> None:
    layout = ("owner", "name", "shell", "script", "created", "updated", "version", "statement", "signature")
    old = pack(["alice", "deploy", "sh", "echo old", NOW, NOW, 3])  # before jobs were signed: the last two absent
    assert is_positional(old)
    assert decode_record(JobRecord, old, legacy=layout) == JobRecord("alice", "deploy", "sh", "echo old", NOW, NOW, 3)
    moved = decode_record(JobWithAFieldInTheMiddle, old, legacy=layout)
    assert (moved.script, moved.timeout, moved.created, moved.version) == ("echo old", 60.0, NOW, 3)


def test_a_list_is_refused_without_a_layout_and_when_longer_than_it() -> None:
    with pytest.raises(StoredRecordError, match="not a map"):
        decode_record(MasterRecord, pack(["id1", "alice", "key", NOW]))
    with pytest.raises(StoredRecordError, match="5 fields"):
        decode_record(MasterRecord, pack(["id1", "alice", "key", NOW, "extra"]), legacy=("id", "name", "public_key"))


def test_what_is_not_msgpack_is_a_stored_record_error() -> None:
    with pytest.raises(StoredRecordError, match="not msgpack"):
        decode_record(MasterRecord, b"\xc1")
    with pytest.raises(StoredRecordError, match="not msgpack"):
        decode_record(MasterRecord, encode_record(MasterRecord("a", "b", "c", NOW)) + b"\x00")


def test_enum_fields_come_back_as_enums() -> None:
    record = WithAnEnum(OrderState.RUNNING, OrderState.DELIVERED)
    assert decode_record(WithAnEnum, encode_record(record)) == record
    assert decode_record(WithAnEnum, encode_record(WithAnEnum(OrderState.QUEUED))).previous is None


def test_a_plan_round_trips_with_its_nested_maps() -> None:
    plan = PlanRecord("p1", "sc", "rollout", {"steps": []}, {"a": [{"x": b"\x00"}]}, {"a": "done"}, NOW, NOW,
                      done=True, started={"a": NOW})  # fmt: skip
    assert decode_record(PlanRecord, encode_record(plan)) == plan


def test_only_dataclass_instances_are_encoded() -> None:
    with pytest.raises(TypeError):
        encode_record(MasterRecord)
    with pytest.raises(TypeError):
        encode_record({"id": "x"})
