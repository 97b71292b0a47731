"""The msgpack envelope: round trips for every message type, and every way a frame can be wrong."""

from __future__ import annotations

import contextlib
import dataclasses
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Envelope,
    decode_envelope,
    encode_envelope,
    envelope_to_wire,
    pack,
    unpack,
)
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import (
    BODY_TYPES,
    Auth,
    Body,
    Cancel,
    Challenge,
    CompositionAssign,
    CompositionList,
    CompositionPerformances,
    CompositionUnassign,
    Deliver,
    DistPut,
    EnrollCreate,
    EnrollList,
    EnrollRevoke,
    Error,
    Event,
    EventsSubscribe,
    EventsUnsubscribe,
    FileChunk,
    JobDelete,
    JobList,
    JobPut,
    JobShow,
    KvGet,
    KvSet,
    KvWait,
    MachineAdd,
    MachineCertify,
    MachineRevoke,
    MasterRekey,
    MsgRecv,
    MsgSend,
    MsgType,
    OrderAck,
    OrderCancel,
    OrderStarted,
    OrderSubmit,
    Output,
    Ping,
    PlanCancel,
    PlanList,
    PlanShow,
    PlanSubmit,
    Pong,
    Reconnect,
    Response,
    Result,
    ResultAck,
    ResultsQuery,
    ScenarioCreate,
    ScenarioDelete,
    ScenarioList,
    ScenarioShow,
    SystemReady,
    TokenCreate,
    TokenList,
    TokenRenew,
    TokenRevoke,
    Welcome,
    body_from_wire,
)
from protocol.orders import FILE_CHUNK_SIZE, Order, OrderKind, OrderState, SignedResult
from tests.protocol.support import DAEMON, FUZZ, MASTER, NOW, envelope, msgpack_values, small_msgpack_values

ORDER = Order(
    id="o-1",
    scenario="demo",
    machine=DAEMON.id,
    kind=OrderKind.EXEC,
    body={"argv": ["uname", "-a"], "timeout": 30.0},
    expires=NOW + 300,
    master="",
).signed(MASTER)
RESULT = SignedResult(
    order_id="o-1",
    scenario="demo",
    machine=DAEMON.id,
    status=OrderState.SUCCEEDED,
    exit_code=0,
    started=NOW,
    finished=NOW + 1.5,
    stdout=b"Linux\n",
).signed(DAEMON)

# One valid body per message type, with every optional field set to something other than its default.
SAMPLES: list[Body] = [
    Challenge(nonce=b"\x01" * 32, hub_id="h" * 20, ephemeral_key=b"\x02" * 32, versions=[PROTOCOL_VERSION]),
    Auth(client_id=MASTER.id, role="master", ephemeral_key=b"\x03" * 32, signature=b"\x04" * 64, version=1),
    Welcome(session_id="0123456789abcdef", heartbeat_interval=15.0, dead_after=45.0, max_frame=DEFAULT_MAX_FRAME,
            info={"hub_version": "0.1.0", "features": ["events"]}),
    Error(code="not_found", message="no scenario named 'demo'", details={"name": "demo", "limit": 3}),
    Ping(),
    Pong(),
    Response(data={"scenarios": [{"name": "demo", "machines": 2}], "total": 1, "blob": b"\x00"}),
    ScenarioCreate(name="demo", machines=[{"name": "web", "os": "linux", "role": "server",
                                           "public_key": DAEMON.public.to_text()}]),
    ScenarioList(),
    ScenarioShow(name="demo"),
    ScenarioDelete(name="demo"),
    MachineRevoke(scenario="shop", machine="web"),
    MachineAdd(scenario="shop", machines=[{"name": "cache", "os": "linux", "public_key": "ed25519:AA"}]),
    MachineCertify(scenario="shop", certificates=[{"name": "web"}]),
    DistPut(name="cloudremotecontrol-0.1.0-py3-none-any.whl", upload="ab" * 32),
    MasterRekey(public_key="ed25519:" + "A" * 43 + "=", proof=b"\x01" * 64),
    JobPut(statement={"name": "deploy", "version": 1, "shell": "sh", "script": "echo hi"}, signature=b"sig"),
    JobList(),
    JobShow(name="deploy"),
    JobDelete(name="deploy"),
    CompositionAssign(scenario="shop", composition={"id": "c1", "target": "role:web"}),
    CompositionUnassign(scenario="shop", composition_id="c1"),
    CompositionList(scenario="shop"),
    CompositionPerformances(scenario="shop", composition_id="c1"),
    KvSet(scenario="shop", key="db/ready", value=b"yes", ttl=60.0),
    KvGet(scenario="shop", key="db/ready"),
    KvWait(scenario="shop", key="db/ready", timeout=30.0),
    PlanSubmit(scenario="shop", plan_id="p1", spec={"name": "p", "steps": []}, orders={}),
    PlanShow(scenario="shop", plan_id="p1"),
    PlanList(scenario="shop"),
    PlanCancel(scenario="shop", plan_id="p1"),
    MsgSend(scenario="shop", target="role:web", topic="deploy", data=b"v1"),
    MsgRecv(scenario="shop", topic="deploy", after=0, timeout=30.0),
    TokenCreate(token_id="0123456789abcdef", role="operator", scenario="shop", expires=NOW + 3600,
                secret_hash="ab" * 32, label="ci", delegation={"token": "0123456789abcdef", "signature": b"\x01"},
                sealed_key=b"\x02" * 60),
    TokenList(),
    TokenRevoke(token_id="0123456789abcdef"),
    EnrollCreate(scenario="shop", claims={"id": "0123456789abcdef", "role": "web"}, signature=b"\x01" * 64),
    EnrollList(scenario="shop"),
    EnrollRevoke(scenario="shop", token_id="0123456789abcdef"),
    TokenRenew(delegations=[{"token": "0123456789abcdef"}]),
    OrderSubmit(order=ORDER.to_wire(), upload="ab" * 32),
    OrderCancel(scenario="demo", order_id="o-1"),
    ResultsQuery(scenario="demo", order_ids=["o-1", "o-2"]),
    EventsSubscribe(scenario="demo", after=41),
    EventsUnsubscribe(scenario="demo"),
    Event(scenario="demo", cursor=42, kind="order.state", machine="web", ts=NOW + 0.25,
          data={"order_id": "o-1", "state": "running"}),
    Deliver(order=ORDER.to_wire()),
    FileChunk(order_id="o-2", index=3, data=bytes(range(256))),
    Cancel(order_id="o-1"),
    ResultAck(order_id="o-1"),
    Reconnect(after=1.5, reason="hub draining"),
    SystemReady(facts={"os": "linux", "cpus": 4, "load": 0.5, "ips": ["10.0.0.2"]}, daemon_version="0.1.0"),
    OrderAck(order_id="o-1"),
    OrderStarted(order_id="o-1"),
    Output(order_id="o-1", stream="stderr", data=b"warning: \xff\n", machine="web"),
    Result(result=RESULT.to_wire()),
]  # fmt: skip
SAMPLE_BY_TYPE = {body.TYPE: body for body in SAMPLES}


def wire_frame(**changes: Any) -> dict[str, Any]:
    """The wire map of a valid PING envelope, with some top-level fields replaced or (value ``...``) removed."""
    raw = envelope_to_wire(envelope(Ping()))
    for key, value in changes.items():
        if value is ...:
            del raw[key]
        else:
            raw[key] = value
    return raw


def decode_error(data: bytes, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_envelope(data, **kwargs)
    return caught.value


def required_fields(cls: type[Body]) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def param_id(item: object) -> str:
    """Test ids: a body class by its message type, anything else as itself."""
    msg_type = getattr(item, "TYPE", None)
    return msg_type.value if isinstance(msg_type, MsgType) else str(item)


def wrong_value_for(annotation: Any) -> Any:
    """A msgpack value that does not fit ``annotation``."""
    origin = get_origin(annotation)
    if origin in (Union, UnionType):  # an optional field: wrong for its non-None type is wrong for it too
        return wrong_value_for(next(arg for arg in get_args(annotation) if arg is not type(None)))
    if origin is list:
        return {"not": "a list"}
    if origin is dict:
        return ["not", "a", "map"]
    return {str: 7, bytes: "text, not bytes", int: "7", float: "7.5", bool: 1}[annotation]


# -- round trips -------------------------------------------------------------------------------------------


def test_the_samples_cover_every_body_type_exactly_once() -> None:
    assert len(SAMPLE_BY_TYPE) == len(SAMPLES), "two samples share a message type"
    assert set(SAMPLE_BY_TYPE) == set(BODY_TYPES), "add a sample body for each new message type"
    for msg_type, body in SAMPLE_BY_TYPE.items():
        assert type(body) is BODY_TYPES[msg_type]


def test_every_message_type_has_a_body_type() -> None:
    assert set(BODY_TYPES) == set(MsgType)
    for msg_type, cls in BODY_TYPES.items():
        assert cls.TYPE is msg_type


@pytest.mark.parametrize("body", SAMPLES, ids=lambda body: body.TYPE.value)
def test_every_message_type_survives_a_round_trip(body: Body) -> None:
    sent = Envelope("m-7", MASTER.id, "hub", "demo", NOW + 0.5, body, reply_to="m-6")
    received = decode_envelope(encode_envelope(sent))
    assert received == sent
    assert received.type is body.TYPE
    assert type(received.body) is type(body)


@pytest.mark.parametrize("cls", list(BODY_TYPES.values()), ids=lambda cls: cls.TYPE.value)
def test_every_body_with_only_its_required_fields_survives_a_round_trip(cls: type[Body]) -> None:
    full = SAMPLE_BY_TYPE[cls.TYPE]
    minimal = cls(**{name: getattr(full, name) for name in required_fields(cls)})
    raw = envelope_to_wire(envelope(minimal))
    raw["b"] = {name: raw["b"][name] for name in required_fields(cls)}
    assert decode_envelope(pack(raw)).body == minimal


def test_an_envelope_keeps_bytes_and_text_apart() -> None:
    sent = envelope(Output(order_id="o-1", stream="stdout", data=b"abc", machine="abc"))
    body = decode_envelope(encode_envelope(sent)).body
    assert isinstance(body, Output)
    assert body.data == b"abc"
    assert body.machine == "abc"


def test_an_integer_timestamp_or_float_field_decodes_as_a_float() -> None:
    raw = envelope_to_wire(envelope(Welcome(session_id="s", heartbeat_interval=15, dead_after=45, max_frame=9)))
    raw["ts"] = int(NOW)
    decoded = decode_envelope(pack(raw))
    assert isinstance(decoded.ts, float)
    assert decoded.ts == NOW
    assert isinstance(decoded.body, Welcome)
    assert isinstance(decoded.body.heartbeat_interval, float)
    assert decoded.body.heartbeat_interval == 15.0


def test_an_envelope_has_the_current_protocol_version_by_default() -> None:
    assert envelope(Ping()).version == PROTOCOL_VERSION
    assert envelope_to_wire(envelope(Ping()))["v"] == PROTOCOL_VERSION


@FUZZ
@given(
    message_id=st.text(max_size=30),
    sender=st.text(max_size=30),
    scenario=st.text(max_size=30),
    ts=st.floats(allow_nan=False),
    data=st.binary(max_size=200),
    stream=st.text(max_size=10),
)
def test_arbitrary_field_values_survive_a_round_trip(
    message_id: str, sender: str, scenario: str, ts: float, data: bytes, stream: str
) -> None:
    sent = Envelope(message_id, sender, "hub", scenario, ts, Output(order_id="o", stream=stream, data=data))
    assert decode_envelope(encode_envelope(sent)) == sent


# -- size limit --------------------------------------------------------------------------------------------


def test_encoding_an_oversized_message_fails_with_its_size_and_the_limit() -> None:
    big = envelope(FileChunk(order_id="o-1", index=0, data=b"\x00" * DEFAULT_MAX_FRAME))
    with pytest.raises(ProtocolError) as caught:
        encode_envelope(big)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert caught.value.details["limit"] == DEFAULT_MAX_FRAME
    assert caught.value.details["size"] > DEFAULT_MAX_FRAME
    assert "file.chunk" in caught.value.message


def test_encoding_honours_a_smaller_limit() -> None:
    sent = envelope(FileChunk(order_id="o-1", index=0, data=b"\x00" * 1000))
    frame = encode_envelope(sent)
    assert encode_envelope(sent, max_size=len(frame)) == frame
    with pytest.raises(ProtocolError) as caught:
        encode_envelope(sent, max_size=len(frame) - 1)
    assert caught.value.code is ErrorCode.FRAME_TOO_LARGE
    assert caught.value.details == {"size": len(frame), "limit": len(frame) - 1}


def test_decoding_an_oversized_frame_fails_before_parsing_it() -> None:
    error = decode_error(b"\xc1" * (DEFAULT_MAX_FRAME + 1))  # not even msgpack: the size is checked first
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert error.details == {"size": DEFAULT_MAX_FRAME + 1, "limit": DEFAULT_MAX_FRAME}


def test_decoding_honours_a_smaller_limit_and_accepts_a_frame_exactly_at_it() -> None:
    frame = encode_envelope(envelope(Output(order_id="o-1", stream="stdout", data=b"x" * 500)))
    assert decode_envelope(frame, max_size=len(frame)).type is MsgType.OUTPUT
    error = decode_error(frame, max_size=len(frame) - 1)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert error.details == {"size": len(frame), "limit": len(frame) - 1}


def test_a_full_file_chunk_fits_in_a_frame() -> None:
    chunk = envelope(FileChunk(order_id="o" * 64, index=10**6, data=b"\xff" * FILE_CHUNK_SIZE))
    assert len(encode_envelope(chunk)) < DEFAULT_MAX_FRAME - 64


# -- malformed frames --------------------------------------------------------------------------------------


def test_every_truncation_of_a_valid_frame_is_a_malformed_frame() -> None:
    frame = encode_envelope(envelope(SAMPLE_BY_TYPE[MsgType.EVENT], scenario="demo", reply_to="m-0"))
    for cut in range(len(frame)):
        error = decode_error(frame[:cut])
        assert error.code is ErrorCode.MALFORMED_FRAME, f"prefix of {cut} bytes"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(pack({"a": 1}) + b"\x00", id="trailing-bytes"),
        pytest.param(b"\x81\xa1\xff\x01", id="invalid-utf8-key"),
        pytest.param(b"\x81\x01\x02", id="integer-key"),
        pytest.param(b"\x81\xc0\x02", id="nil-key"),
        pytest.param(b"\xdf\xff\xff\xff\xff", id="huge-map-header"),
        pytest.param(b"\xdb\xff\xff\xff\xffabc", id="huge-string-header"),
        pytest.param(b"\xd7\xff" + b"\xff" * 8, id="bad-timestamp-extension"),
    ],
)
def test_bytes_that_are_not_one_msgpack_value_are_a_malformed_frame(data: bytes) -> None:
    assert decode_error(data).code is ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize(
    "value",
    [[1, 2, 3], "envelope", b"envelope", 7, 1.5, None, True],
    ids=["list", "str", "bytes", "int", "float", "nil", "bool"],
)
def test_an_envelope_that_is_not_a_map_is_a_malformed_frame(value: Any) -> None:
    assert decode_error(pack(value)).code is ErrorCode.MALFORMED_FRAME


@pytest.mark.parametrize("name", ["v", "id", "t", "s", "r", "sc", "ts", "re", "b"])
def test_an_envelope_missing_a_field_is_a_malformed_frame_naming_it(name: str) -> None:
    error = decode_error(pack(wire_frame(**{name: ...})))
    assert error.code is ErrorCode.MALFORMED_FRAME
    assert error.details["field"] == name


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("v", "1"), ("v", 1.0), ("id", 1), ("id", b"m-1"), ("t", b"ping"), ("t", None), ("s", 5),
        ("r", ["hub"]), ("sc", {}), ("ts", "now"), ("ts", None), ("re", 0), ("b", []), ("b", b""),
    ],
)  # fmt: skip
def test_an_envelope_field_of_the_wrong_type_is_a_malformed_frame_naming_it(name: str, value: Any) -> None:
    error = decode_error(pack(wire_frame(**{name: value})))
    assert error.code is ErrorCode.MALFORMED_FRAME
    assert error.details["field"] == name


@pytest.mark.parametrize("name", ["v", "ts"])
def test_a_boolean_is_not_accepted_where_the_envelope_expects_a_number(name: str) -> None:
    error = decode_error(pack(wire_frame(**{name: True})))
    assert error.code is ErrorCode.MALFORMED_FRAME
    assert error.details["field"] == name


@pytest.mark.parametrize(
    ("body", "name"),
    [
        (FileChunk(order_id="o", index=0, data=b""), "index"),
        (EventsSubscribe(scenario="demo"), "after"),
        (Welcome(session_id="s", heartbeat_interval=1.0, dead_after=2.0, max_frame=10), "max_frame"),
        (Welcome(session_id="s", heartbeat_interval=1.0, dead_after=2.0, max_frame=10), "heartbeat_interval"),
        (Event(scenario="d", cursor=1, kind="k", machine="m", ts=NOW), "ts"),
        (Auth(client_id="c", role="master", ephemeral_key=b"", signature=b"", version=1), "version"),
    ],
)
def test_a_boolean_is_not_accepted_where_a_body_expects_a_number(body: Body, name: str) -> None:
    raw = envelope_to_wire(envelope(body))
    raw["b"][name] = False
    error = decode_error(pack(raw))
    assert error.code is ErrorCode.BAD_FIELD
    assert error.details["field"] == name


def test_a_boolean_inside_a_list_of_integers_is_a_bad_field() -> None:
    raw = envelope_to_wire(envelope(SAMPLE_BY_TYPE[MsgType.CHALLENGE]))
    raw["b"]["versions"] = [True]
    assert decode_error(pack(raw)).code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize(
    ("cls", "name"),
    [(cls, name) for cls in BODY_TYPES.values() for name in required_fields(cls)],
    ids=param_id,
)
def test_a_body_missing_a_required_field_is_a_bad_field_naming_it(cls: type[Body], name: str) -> None:
    raw = envelope_to_wire(envelope(SAMPLE_BY_TYPE[cls.TYPE]))
    del raw["b"][name]
    error = decode_error(pack(raw))
    assert error.code is ErrorCode.BAD_FIELD
    assert error.details["field"] == name


@pytest.mark.parametrize(
    ("cls", "name"),
    [(cls, f.name) for cls in BODY_TYPES.values() for f in dataclasses.fields(cls)],
    ids=param_id,
)
def test_a_body_field_of_the_wrong_type_is_a_bad_field_naming_it(cls: type[Body], name: str) -> None:
    raw = envelope_to_wire(envelope(SAMPLE_BY_TYPE[cls.TYPE]))
    raw["b"][name] = wrong_value_for(get_type_hints(cls)[name])
    error = decode_error(pack(raw))
    assert error.code is ErrorCode.BAD_FIELD
    assert error.details["field"] == name


@pytest.mark.parametrize(
    ("msg_type", "name", "value"),
    [
        (MsgType.SCENARIO_CREATE, "machines", ["web"]),
        (MsgType.RESULTS_QUERY, "order_ids", [1, 2]),
        (MsgType.CHALLENGE, "versions", [1.0]),
    ],
)
def test_a_list_with_an_item_of_the_wrong_type_is_a_bad_field(msg_type: MsgType, name: str, value: Any) -> None:
    raw = envelope_to_wire(envelope(SAMPLE_BY_TYPE[msg_type]))
    raw["b"][name] = value
    assert decode_error(pack(raw)).code is ErrorCode.BAD_FIELD


def test_a_map_field_with_a_binary_key_is_a_bad_field() -> None:
    raw = envelope_to_wire(envelope(Response(data={})))
    raw["b"]["data"] = {b"key": 1}
    assert decode_error(pack(raw)).code is ErrorCode.BAD_FIELD


def test_body_from_wire_rejects_a_body_that_is_not_a_map() -> None:
    with pytest.raises(ProtocolError) as caught:
        body_from_wire(MsgType.PING, [])
    assert caught.value.code is ErrorCode.BAD_FIELD


@pytest.mark.parametrize("name", ["nope", "PING", "", "scenario"])
def test_an_unknown_message_type_is_reported_as_such(name: str) -> None:
    error = decode_error(pack(wire_frame(t=name)))
    assert error.code is ErrorCode.UNKNOWN_TYPE
    assert error.details["type"] == name


@pytest.mark.parametrize("version", [0, 2, PROTOCOL_VERSION + 100, -1])
def test_another_protocol_version_is_unsupported(version: int) -> None:
    error = decode_error(pack(wire_frame(v=version)))
    assert error.code is ErrorCode.UNSUPPORTED_VERSION
    assert error.details["version"] == version


def test_the_version_is_checked_before_the_message_type() -> None:
    assert decode_error(pack(wire_frame(v=2, t="from.the.future"))).code is ErrorCode.UNSUPPORTED_VERSION


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


def test_a_deeply_nested_value_is_a_malformed_frame() -> None:
    raw = envelope_to_wire(envelope(Response(data=nested(40))))
    error = decode_error(pack(raw))
    assert error.code is ErrorCode.MALFORMED_FRAME


def test_a_value_nested_deeper_than_the_decoder_stack_is_a_malformed_frame() -> None:
    data = b"\x91" * 5000 + b"\xc0"  # 5000 nested one-item arrays: msgpack's own stack limit trips first
    assert decode_error(data).code is ErrorCode.MALFORMED_FRAME


def test_a_deeply_nested_list_is_a_malformed_frame() -> None:
    value: Any = []
    for _ in range(40):
        value = [value]
    assert decode_error(pack(wire_frame(b={"data": value}))).code is ErrorCode.MALFORMED_FRAME


def test_moderate_nesting_is_accepted() -> None:
    sent = envelope(Response(data=nested(20)))
    assert decode_envelope(encode_envelope(sent)) == sent


def test_unpack_turns_msgpack_failures_into_protocol_errors() -> None:
    with pytest.raises(ProtocolError) as caught:
        unpack(b"\x92\x01")
    assert caught.value.code is ErrorCode.MALFORMED_FRAME
    assert isinstance(caught.value.__cause__, ValueError | msgpack.UnpackException)


def test_a_protocol_error_message_starts_with_its_code() -> None:
    error = decode_error(b"")
    assert str(error).startswith("malformed_frame: ")


# -- fuzzing -----------------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_a_protocol_error(data: bytes) -> None:
    try:
        decoded = decode_envelope(data)
    except ProtocolError:
        return
    assert isinstance(decoded, Envelope)


@FUZZ
@given(msgpack_values)
def test_arbitrary_msgpack_values_only_ever_raise_a_protocol_error(value: Any) -> None:
    try:
        decoded = decode_envelope(pack(value))
    except ProtocolError:
        return
    assert isinstance(decoded, Envelope)


FIELD_NAMES = sorted({f.name for cls in BODY_TYPES.values() for f in dataclasses.fields(cls)})


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "v": st.sampled_from([PROTOCOL_VERSION, PROTOCOL_VERSION, 2, True, "1", None]),
            "id": st.text(max_size=5),
            "t": st.sampled_from([t.value for t in MsgType] + ["nope", ""]),
            "s": st.text(max_size=5),
            "r": st.text(max_size=5),
            "sc": st.text(max_size=5),
            "ts": st.floats() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.booleans(),
            "re": st.text(max_size=5),
            "b": st.dictionaries(st.sampled_from(FIELD_NAMES), small_msgpack_values, max_size=8),
        }
    )
)
def test_envelope_shaped_maps_with_arbitrary_values_only_ever_raise_a_protocol_error(raw: dict[str, Any]) -> None:
    try:
        decoded = decode_envelope(pack(raw))
    except ProtocolError:
        return
    assert isinstance(decoded.body, BODY_TYPES[decoded.type])


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_one_corrupted_byte_in_a_valid_frame_only_ever_raises_a_protocol_error(body: Body, data: Any) -> None:
    frame = bytearray(encode_envelope(envelope(body)))
    position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[position] = data.draw(st.integers(min_value=0, max_value=255))
    with contextlib.suppress(ProtocolError):
        decode_envelope(bytes(frame))
