"""The one frame an unauthenticated peer may send (AUTH) is decoded once, within ``PRE_AUTH_LIMITS``."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from protocol.envelope import PRE_AUTH_LIMITS, decode_pre_auth, envelope_to_wire, pack, unpack
from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import Auth
from protocol.session import Role
from tests.protocol.support import MASTER, NOW, client_session, hub_session, standard_directory


def _genuine_auth() -> tuple[bytes, Any]:
    hub = hub_session()
    client = client_session()
    return client.answer(hub.challenge("c-1", NOW), "a-1", NOW), hub


def test_a_genuine_auth_frame_fits_the_limits_and_the_decoded_envelope_is_accepted() -> None:
    frame, hub = _genuine_auth()
    assert len(frame) < PRE_AUTH_LIMITS.max_size // 4  # a few hundred bytes: ample margin
    envelope = decode_pre_auth(frame)
    assert isinstance(envelope.body, Auth)
    peer = hub.accept(envelope, standard_directory().lookup, NOW)  # no second decode of the frame
    assert (peer.client_id, peer.role) == (MASTER.id, Role.MASTER)


def _refusal(frame: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_pre_auth(frame)
    return caught.value


def test_a_frame_over_the_limit_is_refused_before_any_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("decoded a frame over the pre-authentication limit")

    monkeypatch.setattr(msgpack, "unpackb", never)
    error = _refusal(b"\x91" + b"\x90" * PRE_AUTH_LIMITS.max_size)
    assert error.code is ErrorCode.FRAME_TOO_LARGE and error.details["limit"] == PRE_AUTH_LIMITS.max_size


@pytest.mark.parametrize(
    "value",
    [
        {"s": "x" * (PRE_AUTH_LIMITS.max_str_len + 1)},
        {"b": b"x" * (PRE_AUTH_LIMITS.max_bin_len + 1)},
        [0] * (PRE_AUTH_LIMITS.max_array_len + 1),
        {f"k{i}": i for i in range(PRE_AUTH_LIMITS.max_map_len + 1)},
        {"b": {"c": [[[[1]]]]}},
    ],
    ids=["long_str", "long_bin", "long_array", "wide_map", "deep"],
)
def test_what_no_auth_frame_holds_is_a_malformed_frame(value: Any) -> None:
    frame = pack(value)
    assert len(frame) <= PRE_AUTH_LIMITS.max_size
    assert _refusal(frame).code is ErrorCode.MALFORMED_FRAME
    unpack(frame)  # the same value is fine once a peer is authenticated (larger limits)


def test_nesting_deeper_than_the_decoder_goes_is_a_malformed_frame() -> None:
    assert _refusal(b"\x91" * 4000 + b"\xc0").code is ErrorCode.MALFORMED_FRAME


def test_a_recursion_error_while_decoding_is_a_malformed_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    def recursing(*args: Any, **kwargs: Any) -> Any:
        raise RecursionError("maximum recursion depth exceeded")

    frame, _ = _genuine_auth()
    monkeypatch.setattr(msgpack, "unpackb", recursing)
    assert _refusal(frame).code is ErrorCode.MALFORMED_FRAME
    with pytest.raises(ProtocolError):
        unpack(frame)


def test_an_auth_envelope_with_an_ext_value_is_a_malformed_frame() -> None:
    frame, _ = _genuine_auth()
    wire = envelope_to_wire(decode_pre_auth(frame))
    wire["x"] = msgpack.ExtType(1, b"\x00")
    assert _refusal(pack(wire)).code is ErrorCode.MALFORMED_FRAME
