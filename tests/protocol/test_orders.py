"""Master-signed orders and daemon-signed results: what the hub relays but can never forge."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import pack, unpack
from protocol.errors import ErrorCode, ProtocolError
from protocol.order_bodies import PutFileBody
from protocol.orders import (
    FILE_CHUNK_SIZE,
    Order,
    OrderKind,
    OrderState,
    SignedResult,
    canonical,
    file_chunks,
)
from tests.protocol.support import (
    DAEMON,
    FUZZ,
    MASTER,
    NOW,
    OTHER_DAEMON,
    OTHER_MASTER,
    small_msgpack_values,
)

BODY = {
    "argv": ["sh", "-c", "echo hi"],
    "env": {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C"},
    "timeout": 30.0,
    "cwd": "/tmp",
}


def make_order(**changes: Any) -> Order:
    fields: dict[str, Any] = {
        "id": "o-1",
        "scenario": "demo",
        "machine": DAEMON.id,
        "kind": OrderKind.EXEC,
        "body": BODY,
        "expires": NOW + 300,
        "master": "",
    }
    fields.update(changes)
    return Order(**fields).signed(MASTER)


def make_result(**changes: Any) -> SignedResult:
    fields: dict[str, Any] = {
        "order_id": "o-1",
        "scenario": "demo",
        "machine": DAEMON.id,
        "status": OrderState.SUCCEEDED,
        "exit_code": 0,
        "started": NOW + 1,
        "finished": NOW + 2.5,
        "stdout": b"hi\n",
        "stderr": b"\xffwarning",
        "stdout_truncated": True,
        "extra": {"z": 1, "a": {"y": 2, "b": [3]}},
    }
    fields.update(changes)
    return SignedResult(**fields).signed(DAEMON)


def through_the_wire(wire: dict[str, Any]) -> Any:
    return unpack(pack(wire))


def reversed_keys(value: Any) -> Any:
    """The same value with every map's keys in reverse insertion order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_keys(v) for v in value]
    return value


def verify(order: Order, *, now: float = NOW, machine: str = DAEMON.id, scenario: str = "demo") -> None:
    order.verify(MASTER.public, machine, scenario, now)


def order_error(order: Order, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        verify(order, **kwargs)
    return caught.value


# -- orders ------------------------------------------------------------------------------------------------


def test_a_signed_order_verifies() -> None:
    order = make_order()
    assert order.master == MASTER.id
    assert len(order.signature) == 64
    verify(order)


def test_signing_sets_the_master_to_the_signer() -> None:
    assert make_order(master="someone-else").master == MASTER.id


def test_an_order_survives_msgpack_with_its_body_keys_in_another_order() -> None:
    order = make_order()
    wire = through_the_wire(order.to_wire())
    wire["body"] = reversed_keys(wire["body"])
    assert list(wire["body"]) != list(BODY)
    received = Order.from_wire(wire)
    assert received == order
    verify(received)


def test_the_signature_does_not_depend_on_body_key_order() -> None:
    assert make_order().signature == make_order(body=reversed_keys(BODY)).signature


def test_an_order_survives_the_wire_with_tuples_and_nested_maps_in_its_body() -> None:
    order = make_order(body={"hosts": ({"name": "web", "ips": ("10.0.0.2",)},), "n": {"b": 1, "a": 2}})
    verify(Order.from_wire(through_the_wire(order.to_wire())))


@pytest.mark.parametrize("expires", [int(NOW) + 300, NOW + 300.0])
def test_an_order_with_a_whole_number_expiry_still_verifies_after_the_wire(expires: float) -> None:
    order = make_order(expires=expires)
    received = Order.from_wire(through_the_wire(order.to_wire()))
    assert isinstance(received.expires, float)
    verify(received)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"body": {**BODY, "argv": ["rm", "-rf", "/"]}}, id="body"),
        pytest.param({"body": {**BODY, "extra": 1}}, id="body-extra-key"),
        pytest.param({"body": {}}, id="body-emptied"),
        pytest.param({"machine": OTHER_DAEMON.id}, id="machine"),
        pytest.param({"scenario": "other"}, id="scenario"),
        pytest.param({"expires": NOW + 10**6}, id="expires"),
        pytest.param({"kind": OrderKind.HOSTS}, id="kind"),
        pytest.param({"id": "o-2"}, id="id"),
    ],
)
def test_tampering_with_a_signed_field_is_a_bad_signature(changes: dict[str, Any]) -> None:
    tampered = dataclasses.replace(make_order(), **changes)
    error = order_error(tampered, machine=tampered.machine, scenario=tampered.scenario)
    assert error.code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("body", {**BODY, "timeout": 31.0}),
        ("machine", OTHER_DAEMON.id),
        ("scenario", "other"),
        ("expires", NOW + 301),
        ("kind", "put_file"),
        ("id", "o-1 "),
    ],
)
def test_tampering_on_the_wire_is_a_bad_signature(name: str, value: Any) -> None:
    wire = through_the_wire(make_order().to_wire())
    wire[name] = value
    received = Order.from_wire(through_the_wire(wire))
    assert order_error(received, machine=received.machine, scenario=received.scenario).code is ErrorCode.BAD_SIGNATURE


def test_a_tampered_machine_is_refused_by_the_machine_the_order_was_meant_for() -> None:
    tampered = dataclasses.replace(make_order(), machine=OTHER_DAEMON.id)
    assert order_error(tampered).code is ErrorCode.BAD_SIGNATURE  # the signature is checked before the address


@pytest.mark.parametrize("index", [0, 31, 63])
def test_a_flipped_bit_in_the_signature_is_a_bad_signature(index: int) -> None:
    order = make_order()
    signature = bytearray(order.signature)
    signature[index] ^= 0x80
    assert order_error(dataclasses.replace(order, signature=bytes(signature))).code is ErrorCode.BAD_SIGNATURE


def test_an_unsigned_order_is_a_bad_signature() -> None:
    unsigned = dataclasses.replace(make_order(), signature=b"")
    assert order_error(unsigned).code is ErrorCode.BAD_SIGNATURE


def test_an_order_from_another_master_is_a_bad_signature() -> None:
    foreign = Order("o-1", "demo", DAEMON.id, OrderKind.EXEC, BODY, NOW + 300, "").signed(OTHER_MASTER)
    error = order_error(foreign)
    assert error.code is ErrorCode.BAD_SIGNATURE
    assert error.details == {"master": OTHER_MASTER.id}


def test_an_order_from_another_master_claiming_to_be_ours_is_a_bad_signature() -> None:
    foreign = Order("o-1", "demo", DAEMON.id, OrderKind.EXEC, BODY, NOW + 300, "").signed(OTHER_MASTER)
    assert order_error(dataclasses.replace(foreign, master=MASTER.id)).code is ErrorCode.BAD_SIGNATURE


def test_an_order_for_another_machine_is_a_wrong_target() -> None:
    error = order_error(make_order(), machine=OTHER_DAEMON.id)
    assert error.code is ErrorCode.WRONG_TARGET
    assert error.details == {"machine": DAEMON.id}


def test_an_order_for_another_scenario_is_a_wrong_target() -> None:
    assert order_error(make_order(), scenario="other").code is ErrorCode.WRONG_TARGET


def test_an_expired_order_is_refused() -> None:
    order = make_order()
    error = order_error(order, now=order.expires + 0.001)
    assert error.code is ErrorCode.EXPIRED
    assert error.details == {"expires": order.expires}


def test_an_order_whose_expiry_is_not_a_number_is_expired() -> None:
    # NaN compares false with everything: read as "not expired", a master's NaN would make an order valid forever.
    order = make_order(expires=float("nan"))
    assert order_error(order, now=NOW).code is ErrorCode.EXPIRED


def test_an_order_is_still_valid_at_its_expiry_instant() -> None:
    order = make_order()
    verify(order, now=order.expires)


def test_a_forged_order_is_a_bad_signature_even_when_also_expired_and_misaddressed() -> None:
    forged = dataclasses.replace(make_order(), body={})
    assert order_error(forged, now=NOW + 10**6, machine="x").code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize("name", ["id", "scenario", "machine", "kind", "body", "expires", "master", "signature"])
def test_an_order_missing_a_field_is_a_bad_field(name: str) -> None:
    wire = make_order().to_wire()
    del wire[name]
    with pytest.raises(ProtocolError) as caught:
        Order.from_wire(wire)
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("id", 1), ("id", None), ("scenario", b"demo"), ("machine", ["m"]), ("kind", 1), ("kind", "reboot"),
        ("kind", ""), ("body", []), ("body", "{}"), ("expires", "tomorrow"), ("expires", True), ("expires", None),
        ("master", 0), ("signature", "sig"), ("signature", None),
    ],
)  # fmt: skip
def test_an_order_field_of_the_wrong_type_is_a_bad_field(name: str, value: Any) -> None:
    wire = make_order().to_wire()
    wire[name] = value
    with pytest.raises(ProtocolError) as caught:
        Order.from_wire(wire)
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize("raw", [None, [], "order", b"order", 1], ids=["nil", "list", "str", "bytes", "int"])
def test_an_order_that_is_not_a_map_is_a_bad_field(raw: Any) -> None:
    with pytest.raises(ProtocolError) as caught:
        Order.from_wire(raw)
    assert caught.value.code is ErrorCode.BAD_FIELD


def test_an_order_whose_body_mixes_text_and_binary_keys_signs_and_verifies_after_the_wire() -> None:
    body: dict[Any, Any] = {"a": 1, b"a": 2, "nested": {b"z": 0, "y": 1}}
    order = make_order(body=body)
    received = Order.from_wire(through_the_wire(order.to_wire()))
    verify(received)
    forged_body: dict[Any, Any] = {**body, b"a": 3}
    forged = dataclasses.replace(received, body=forged_body)
    assert order_error(forged).code is ErrorCode.BAD_SIGNATURE


def test_canonical_orders_binary_keys_apart_from_text_keys() -> None:
    assert canonical({"b": 1, b"a": 2, "a": 3}) == [[b"a", 2], ["a", 3], ["b", 1]]


def test_canonical_sorts_maps_and_turns_tuples_into_lists() -> None:
    assert canonical({"b": (1, {"d": 1, "c": 2}), "a": None}) == [["a", None], ["b", [1, [["c", 2], ["d", 1]]]]]


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=5),
            "scenario": st.just("demo"),
            "machine": st.just(DAEMON.id),
            "kind": st.sampled_from([k.value for k in OrderKind]),
            "body": st.dictionaries(st.text(max_size=5) | st.binary(max_size=3), small_msgpack_values, max_size=4),
            "expires": st.floats() | st.integers(min_value=-(2**63), max_value=2**63),
            "master": st.just(MASTER.id),
            "signature": st.binary(min_size=64, max_size=64),
        }
    )
)
def test_verifying_an_arbitrary_order_from_the_wire_only_ever_raises_a_protocol_error(raw: dict[str, Any]) -> None:
    try:
        order = Order.from_wire(unpack(pack(raw)))
        verify(order)
    except ProtocolError:
        return
    pytest.fail("a random signature verified")


@FUZZ
@given(small_msgpack_values)
def test_reading_an_arbitrary_value_as_an_order_only_ever_raises_a_protocol_error(raw: Any) -> None:
    for reader in (Order.from_wire, SignedResult.from_wire):
        with contextlib.suppress(ProtocolError):
            reader(raw)


# -- results -----------------------------------------------------------------------------------------------


def test_a_signed_result_survives_msgpack_and_verifies() -> None:
    result = make_result()
    wire = through_the_wire(result.to_wire())
    wire["extra"] = reversed_keys(wire["extra"])
    received = SignedResult.from_wire(wire)
    assert received == result
    received.verify(DAEMON.public)


def test_a_result_without_exit_code_or_start_survives_msgpack_and_verifies() -> None:
    result = make_result(status=OrderState.REJECTED, exit_code=None, started=None, error="bad signature")
    received = SignedResult.from_wire(through_the_wire(result.to_wire()))
    assert received == result
    received.verify(DAEMON.public)


def test_a_result_with_whole_number_times_still_verifies_after_the_wire() -> None:
    result = make_result(started=int(NOW), finished=int(NOW) + 2)
    received = SignedResult.from_wire(through_the_wire(result.to_wire()))
    assert isinstance(received.finished, float)
    received.verify(DAEMON.public)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"status": OrderState.FAILED}, id="status"),
        pytest.param({"exit_code": 1}, id="exit_code"),
        pytest.param({"exit_code": None}, id="exit_code-removed"),
        pytest.param({"stdout": b"hi!\n"}, id="stdout"),
        pytest.param({"stderr": b""}, id="stderr"),
        pytest.param({"stdout_truncated": False}, id="stdout_truncated"),
        pytest.param({"stderr_truncated": True}, id="stderr_truncated"),
        pytest.param({"finished": NOW + 3}, id="finished"),
        pytest.param({"started": None}, id="started"),
        pytest.param({"error": "oops"}, id="error"),
        pytest.param({"extra": {}}, id="extra"),
        pytest.param({"order_id": "o-2"}, id="order_id"),
        pytest.param({"machine": OTHER_DAEMON.id}, id="machine"),
        pytest.param({"scenario": "other"}, id="scenario"),
    ],
)
def test_tampering_with_a_result_is_a_bad_signature(changes: dict[str, Any]) -> None:
    tampered = dataclasses.replace(make_result(), **changes)
    with pytest.raises(ProtocolError) as caught:
        tampered.verify(DAEMON.public)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_a_result_checked_against_another_machine_is_a_bad_signature() -> None:
    with pytest.raises(ProtocolError) as caught:
        make_result().verify(OTHER_DAEMON.public)
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_the_result_signature_does_not_depend_on_extra_key_order() -> None:
    result = make_result()
    assert make_result(extra=reversed_keys(result.extra)).signature == result.signature


@pytest.mark.parametrize(
    "name",
    ["order_id", "scenario", "machine", "status", "finished", "error", "stdout", "stderr", "stdout_truncated",
     "stderr_truncated", "extra", "signature"],
)  # fmt: skip
def test_a_result_missing_a_field_is_a_bad_field(name: str) -> None:
    wire = make_result().to_wire()
    del wire[name]
    with pytest.raises(ProtocolError) as caught:
        SignedResult.from_wire(wire)
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "exploded"), ("status", 1), ("exit_code", "0"), ("exit_code", 0.5), ("started", "now"),
        ("finished", None), ("finished", False), ("stdout", "text"), ("stdout_truncated", 1),
        ("stderr_truncated", None), ("extra", []), ("signature", "sig"), ("order_id", 7),
    ],
)  # fmt: skip
def test_a_result_field_of_the_wrong_type_is_a_bad_field(name: str, value: Any) -> None:
    wire = make_result().to_wire()
    wire[name] = value
    with pytest.raises(ProtocolError) as caught:
        SignedResult.from_wire(wire)
    assert caught.value.code is ErrorCode.BAD_FIELD


def test_a_result_that_is_not_a_map_is_a_bad_field() -> None:
    with pytest.raises(ProtocolError) as caught:
        SignedResult.from_wire([])
    assert caught.value.code is ErrorCode.BAD_FIELD


# -- files -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected_sizes"),
    [
        (0, [0]),
        (1, [1]),
        (FILE_CHUNK_SIZE - 1, [FILE_CHUNK_SIZE - 1]),
        (FILE_CHUNK_SIZE, [FILE_CHUNK_SIZE]),
        (2 * FILE_CHUNK_SIZE, [FILE_CHUNK_SIZE, FILE_CHUNK_SIZE]),
        (2 * FILE_CHUNK_SIZE + 7, [FILE_CHUNK_SIZE, FILE_CHUNK_SIZE, 7]),
    ],
)
def test_file_content_splits_into_full_chunks_and_a_remainder(size: int, expected_sizes: list[int]) -> None:
    data = bytes(n % 251 for n in range(size))
    chunks = file_chunks(data)
    assert [len(chunk) for chunk in chunks] == expected_sizes
    assert b"".join(chunks) == data


@FUZZ
@given(st.binary(max_size=100), st.integers(min_value=1, max_value=17))
def test_chunks_of_any_size_reassemble_to_the_file(data: bytes, chunk_size: int) -> None:
    chunks = file_chunks(data, chunk_size)
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks) or chunks == [b""]
    assert len(chunks) == max(1, -(-len(data) // chunk_size))


def test_a_put_file_order_survives_the_wire_and_verifies() -> None:
    data = b"\x00\x01" * 1000
    order = make_order(kind=OrderKind.PUT_FILE, body=PutFileBody.for_content("/srv/app.bin", data, 0o755).to_wire())
    received = Order.from_wire(through_the_wire(order.to_wire()))
    verify(received)
    assert received.body["sha256"] == hashlib.sha256(data).hexdigest()


# -- order states ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(OrderState), ids=lambda state: state.value)
def test_only_queued_delivered_and_running_orders_are_not_final(state: OrderState) -> None:
    assert state.final is (state not in {OrderState.QUEUED, OrderState.DELIVERED, OrderState.RUNNING})


def test_six_order_states_are_final() -> None:
    assert [state for state in OrderState if state.final] == [
        OrderState.SUCCEEDED,
        OrderState.FAILED,
        OrderState.TIMED_OUT,
        OrderState.CANCELLED,
        OrderState.REJECTED,
        OrderState.INTERRUPTED,
    ]


def test_an_order_valid_for_longer_than_a_daemon_remembers_ids_is_refused() -> None:
    from protocol.orders import EXPIRY_SLACK, MAX_ORDER_TTL

    make_order(expires=NOW + MAX_ORDER_TTL).verify(MASTER.public, DAEMON.id, "demo", NOW)
    make_order(expires=NOW + MAX_ORDER_TTL + EXPIRY_SLACK).verify(MASTER.public, DAEMON.id, "demo", NOW)
    for expires in (NOW + MAX_ORDER_TTL + EXPIRY_SLACK + 1, NOW + 60 * 86400):
        with pytest.raises(ProtocolError) as caught:
            make_order(expires=expires).verify(MASTER.public, DAEMON.id, "demo", NOW)
        assert (
            caught.value.code is ErrorCode.EXPIRED and "could not be told apart from a replay" in caught.value.message
        )
    # a clock set back by a month makes a week-long order look too long-lived: refused rather than remembered
    with pytest.raises(ProtocolError):
        make_order(expires=NOW + 86400).verify(MASTER.public, DAEMON.id, "demo", NOW - 30 * 86400)
