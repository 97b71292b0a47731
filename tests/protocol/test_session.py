"""The secure session: the handshake, sealed frames, and every way a peer or a wire can get them wrong."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.envelope import DEFAULT_MAX_FRAME, PROTOCOL_VERSION, Envelope, encode_envelope, pack, unpack
from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.identity import Identity
from protocol.messages import Auth, Challenge, FileChunk, MsgType, Output, Ping, Pong
from protocol.session import (
    DEFAULT_MAX_SKEW,
    HUB_RECIPIENT,
    TRANSITIONS,
    Authenticated,
    ClientSession,
    HubSession,
    Role,
    SessionEvent,
    SessionState,
    _transcript,
    plain_error_frame,
)
from tests.protocol.support import (
    DAEMON,
    FUZZ,
    HUB,
    MASTER,
    NOW,
    OTHER_MASTER,
    Directory,
    Pair,
    client_session,
    envelope,
    handshake,
    hub_session,
    identity,
    small_msgpack_values,
    standard_directory,
    welcome_body,
)


@pytest.fixture
def pair() -> Pair:
    return handshake()


def protocol_error(call: Any, *args: Any, **kwargs: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(*args, **kwargs)
    return caught.value


def ping(message_id: str = "p-1", ts: float = NOW) -> Envelope:
    return envelope(Ping(), message_id=message_id, ts=ts)


def reframe(frame: bytes, *, seq: int | None = None, payload: bytes | None = None, tag: bytes | None = None) -> bytes:
    """The sealed frame with some of its three parts replaced."""
    old_seq, old_payload, old_tag = unpack(frame)
    return pack([old_seq if seq is None else seq, old_payload if payload is None else payload,
                 old_tag if tag is None else tag])  # fmt: skip


def flip_bit(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def started(who: Identity = MASTER, role: Role = Role.MASTER, **kwargs: Any) -> tuple[HubSession, ClientSession, bytes]:
    """A hub that sent its challenge, and the client's AUTH answer to it."""
    hub = hub_session(**kwargs)
    client = client_session(who, role, **kwargs)
    auth = client.answer(hub.challenge("c-1", NOW), "a-1", NOW)
    return hub, client, auth


def edit_auth(frame: bytes, **changes: Any) -> bytes:
    """An AUTH frame with body fields changed (without re-signing)."""
    raw = unpack(frame)
    raw["b"].update(changes)
    return pack(raw)


def signed_auth(hub: HubSession, who: Identity, role: str, ephemeral_key: bytes, version: int = 1) -> bytes:
    """A correctly signed AUTH frame with whatever ephemeral key and role the test wants."""
    challenge = unpack(hub.challenge("c-1", NOW))["b"]
    transcript = _transcript(Challenge(**challenge), who.id, role, ephemeral_key, version)
    auth = Auth(who.id, role, ephemeral_key, who.sign(b"crc-auth-v1" + transcript), version)
    return encode_envelope(Envelope("a-1", who.id, HUB_RECIPIENT, "", NOW, auth))


# -- the handshake -----------------------------------------------------------------------------------------


def test_a_full_handshake_leaves_both_ends_ready(pair: Pair) -> None:
    assert pair.hub.state is SessionState.READY
    assert pair.client.state is SessionState.READY
    assert pair.welcome.type is MsgType.WELCOME
    assert pair.welcome.body == welcome_body()


def test_the_hub_learns_who_the_client_proved_to_be(pair: Pair) -> None:
    assert pair.peer == Authenticated(MASTER.id, Role.MASTER, MASTER.public)
    assert pair.hub.peer == pair.peer


def test_the_client_learns_the_hub_id_from_the_challenge(pair: Pair) -> None:
    assert pair.client.hub_id == HUB.id


def test_both_ends_agree_on_a_session_id(pair: Pair) -> None:
    assert pair.hub.session_id == pair.client.session_id
    assert len(pair.hub.session_id) == 16
    int(pair.hub.session_id, 16)


def test_two_handshakes_get_different_session_ids() -> None:
    assert handshake().hub.session_id != handshake().hub.session_id


def test_a_daemon_completes_the_handshake_in_its_role() -> None:
    directory = standard_directory()
    pair = handshake(DAEMON, Role.DAEMON, directory=directory)
    assert pair.peer == Authenticated(DAEMON.id, Role.DAEMON, DAEMON.public)
    assert directory.lookups == [(DAEMON.id, Role.DAEMON)]


def test_the_challenge_and_auth_are_plain_envelopes() -> None:
    hub = hub_session()
    client = client_session()
    challenge_frame = hub.challenge("c-1", NOW)
    assert hub.state is SessionState.AUTHENTICATING
    challenge = unpack(challenge_frame)
    assert challenge["t"] == "challenge"
    assert challenge["s"] == HUB.id
    assert challenge["b"]["versions"] == [PROTOCOL_VERSION]
    auth = unpack(client.answer(challenge_frame, "a-1", NOW))
    assert client.state is SessionState.AUTHENTICATING
    assert (auth["t"], auth["s"], auth["r"], auth["id"]) == ("auth", MASTER.id, HUB_RECIPIENT, "a-1")
    assert auth["b"]["client_id"] == MASTER.id
    assert auth["b"]["role"] == "master"


# -- sealed frames -----------------------------------------------------------------------------------------


def test_frames_flow_from_client_to_hub(pair: Pair) -> None:
    for n in range(5):
        sent = envelope(Output(order_id="o-1", stream="stdout", data=bytes([n]) * n), message_id=f"m-{n}")
        assert pair.hub.open(pair.client.seal(sent), NOW) == sent


def test_frames_flow_from_hub_to_client(pair: Pair) -> None:
    for n in range(5):
        sent = ping(f"p-{n}")
        assert pair.client.open(pair.hub.seal(sent), NOW) == sent


def test_both_directions_interleave_with_their_own_sequence_numbers(pair: Pair) -> None:
    to_hub = [pair.client.seal(ping(f"c-{n}")) for n in range(3)]
    to_client = [pair.hub.seal(envelope(Pong(), message_id=f"h-{n}")) for n in range(3)]
    assert [unpack(frame)[0] for frame in to_hub] == [1, 2, 3]
    assert [unpack(frame)[0] for frame in to_client] == [2, 3, 4]  # the WELCOME was hub frame 1
    for mine, theirs in zip(to_hub, to_client, strict=True):
        assert pair.hub.open(mine, NOW).type is MsgType.PING
        assert pair.client.open(theirs, NOW).type is MsgType.PONG


def test_a_sealed_frame_is_a_three_item_array(pair: Pair) -> None:
    seq, payload, tag = unpack(pair.client.seal(ping()))
    assert seq == 1
    assert isinstance(payload, bytes)
    assert isinstance(tag, bytes)
    assert len(tag) == 32


@pytest.mark.parametrize("index", [0, 7, -1], ids=["first-byte", "middle-byte", "last-byte"])
@pytest.mark.parametrize("part", ["payload", "tag"])
def test_flipping_a_bit_in_a_frame_is_a_bad_mac_that_closes_the_session(pair: Pair, part: str, index: int) -> None:
    frame = pair.client.seal(ping())
    _, payload, tag = unpack(frame)
    if part == "payload":
        tampered = reframe(frame, payload=flip_bit(payload, index))
    else:
        tampered = reframe(frame, tag=flip_bit(tag, index))
    assert protocol_error(pair.hub.open, tampered, NOW).code is ErrorCode.BAD_MAC
    assert pair.hub.state is SessionState.CLOSED


@pytest.mark.parametrize("tag", [b"", b"\x00" * 32, b"\x00" * 31])
def test_a_missing_or_forged_tag_is_a_bad_mac(pair: Pair, tag: bytes) -> None:
    assert protocol_error(pair.hub.open, reframe(pair.client.seal(ping()), tag=tag), NOW).code is ErrorCode.BAD_MAC


def test_renumbering_a_frame_breaks_its_tag(pair: Pair) -> None:
    pair.client.seal(ping("p-1"))  # lost on the way
    second = pair.client.seal(ping("p-2"))
    assert protocol_error(pair.hub.open, reframe(second, seq=1), NOW).code is ErrorCode.BAD_MAC


def test_a_closed_session_opens_and_seals_nothing_more(pair: Pair) -> None:
    good = pair.client.seal(ping("p-2"))
    protocol_error(pair.hub.open, reframe(pair.client.seal(ping()), tag=b""), NOW)
    assert pair.hub.state is SessionState.CLOSED
    error = protocol_error(pair.hub.open, good, NOW)
    assert error.code is ErrorCode.ILLEGAL_STATE
    assert protocol_error(pair.hub.seal, ping()).code is ErrorCode.ILLEGAL_STATE


def test_a_replayed_frame_is_a_bad_sequence(pair: Pair) -> None:
    frame = pair.client.seal(ping())
    pair.hub.open(frame, NOW)
    error = protocol_error(pair.hub.open, frame, NOW)
    assert error.code is ErrorCode.BAD_SEQUENCE
    assert error.details == {"seq": 1, "expected": 2}
    assert pair.hub.state is SessionState.CLOSED


def test_a_skipped_frame_is_a_bad_sequence(pair: Pair) -> None:
    pair.client.seal(ping("p-1"))
    second = pair.client.seal(ping("p-2"))
    error = protocol_error(pair.hub.open, second, NOW)
    assert error.code is ErrorCode.BAD_SEQUENCE
    assert error.details == {"seq": 2, "expected": 1}
    assert pair.hub.state is SessionState.CLOSED


def test_frames_swapped_in_transit_are_a_bad_sequence(pair: Pair) -> None:
    _first, second = pair.client.seal(ping("p-1")), pair.client.seal(ping("p-2"))
    assert protocol_error(pair.hub.open, second, NOW).code is ErrorCode.BAD_SEQUENCE


@pytest.mark.parametrize("offset", [DEFAULT_MAX_SKEW + 1, -(DEFAULT_MAX_SKEW + 1), 86_400.0, -86_400.0])
def test_a_frame_stamped_far_from_now_is_a_stale_timestamp(pair: Pair, offset: float) -> None:
    frame = pair.client.seal(ping(ts=NOW))
    error = protocol_error(pair.hub.open, frame, NOW + offset)
    assert error.code is ErrorCode.STALE_TIMESTAMP
    assert error.details == {"skew": offset, "limit": DEFAULT_MAX_SKEW}
    assert pair.hub.state is SessionState.CLOSED


@pytest.mark.parametrize("offset", [DEFAULT_MAX_SKEW, -DEFAULT_MAX_SKEW, 0.0, 1.5])
def test_a_frame_stamped_within_the_allowed_skew_opens(pair: Pair, offset: float) -> None:
    assert pair.hub.open(pair.client.seal(ping(ts=NOW)), NOW + offset).type is MsgType.PING


@pytest.mark.parametrize("ts", [float("nan"), float("inf"), float("-inf")])
def test_a_timestamp_that_is_not_a_finite_number_is_stale(pair: Pair, ts: float) -> None:
    error = protocol_error(pair.hub.open, pair.client.seal(ping(ts=ts)), NOW)
    assert error.code is ErrorCode.STALE_TIMESTAMP


def test_a_smaller_allowed_skew_is_honoured() -> None:
    pair = handshake(max_skew=5.0)
    assert pair.hub.open(pair.client.seal(ping(ts=NOW)), NOW + 5.0).type is MsgType.PING
    error = protocol_error(pair.hub.open, pair.client.seal(ping("p-2", ts=NOW)), NOW + 5.5)
    assert error.code is ErrorCode.STALE_TIMESTAMP


def test_a_frame_from_another_session_is_a_bad_mac(pair: Pair) -> None:
    other = handshake()
    assert protocol_error(pair.hub.open, other.client.seal(ping()), NOW).code is ErrorCode.BAD_MAC


def test_a_frame_reflected_back_to_its_sender_is_a_bad_mac(pair: Pair) -> None:
    assert protocol_error(pair.client.open, pair.client.seal(ping()), NOW).code is ErrorCode.BAD_MAC


def test_an_oversized_message_cannot_be_sealed(pair: Pair) -> None:
    huge = envelope(FileChunk(order_id="o-1", index=0, data=b"\x00" * DEFAULT_MAX_FRAME))
    error = protocol_error(pair.client.seal, huge)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert error.details["size"] > error.details["limit"]
    assert pair.client.state is SessionState.READY


def test_a_refused_oversized_message_does_not_use_up_a_sequence_number(pair: Pair) -> None:
    protocol_error(pair.client.seal, envelope(FileChunk(order_id="o", index=0, data=bytes(DEFAULT_MAX_FRAME))))
    assert pair.hub.open(pair.client.seal(ping()), NOW).type is MsgType.PING


def test_every_sealed_frame_fits_the_frame_limit_the_peer_enforces() -> None:
    limit = 4096
    pair = handshake(max_frame=limit)
    for size in range(limit - 200, limit):
        body = FileChunk(order_id="o", index=0, data=b"\xaa" * size)
        try:
            frame = pair.client.seal(envelope(body))
        except ProtocolError as error:
            assert error.code is ErrorCode.FRAME_TOO_LARGE
            continue
        assert len(frame) <= limit
        assert pair.hub.open(frame, NOW).body == body


def test_the_receiver_enforces_its_frame_limit() -> None:
    small = handshake(max_frame=2048)
    error = protocol_error(small.hub.open, b"\x00" * 2049, NOW)
    assert error.code is ErrorCode.FRAME_TOO_LARGE
    assert small.hub.state is SessionState.CLOSED


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(pack([1, b"payload"]), id="two-items"),
        pytest.param(pack([1, b"payload", b"tag", b"extra"]), id="four-items"),
        pytest.param(pack({"seq": 1}), id="map"),
        pytest.param(pack(["1", b"payload", b"tag"]), id="text-seq"),
        pytest.param(pack([1, "payload", b"tag"]), id="text-payload"),
        pytest.param(pack([1, b"payload", "tag"]), id="text-tag"),
        pytest.param(pack([1.0, b"payload", b"tag"]), id="float-seq"),
        pytest.param(b"\x93\x01", id="truncated"),
    ],
)
def test_a_sealed_frame_of_the_wrong_shape_is_a_malformed_frame(pair: Pair, frame: bytes) -> None:
    assert protocol_error(pair.hub.open, frame, NOW).code is ErrorCode.MALFORMED_FRAME
    assert pair.hub.state is SessionState.CLOSED


@pytest.mark.parametrize("seq", [-1, -(2**63)])
def test_a_negative_sequence_number_is_a_bad_sequence(pair: Pair, seq: int) -> None:
    error = protocol_error(pair.hub.open, pack([seq, b"payload", b"\x00" * 32]), NOW)
    assert error.code is ErrorCode.BAD_SEQUENCE
    assert error.details == {"seq": seq}
    assert pair.hub.state is SessionState.CLOSED


def test_the_largest_sequence_number_still_needs_a_valid_tag(pair: Pair) -> None:
    error = protocol_error(pair.hub.open, pack([2**64 - 1, b"payload", b"\x00" * 32]), NOW)
    assert error.code is ErrorCode.BAD_MAC


# -- refusals during the handshake -------------------------------------------------------------------------


def test_an_unknown_identity_is_refused_at_accept() -> None:
    stranger = identity("stranger")
    hub, _, auth = started(stranger)
    error = protocol_error(hub.accept, auth, standard_directory().lookup, NOW)
    assert error.code is ErrorCode.UNKNOWN_IDENTITY
    assert error.details == {"client_id": stranger.id}
    assert hub.state is SessionState.CLOSED
    assert hub.peer is None


def test_a_client_enrolled_in_another_role_is_an_unknown_identity() -> None:
    directory = Directory().enroll(MASTER, Role.MASTER)
    hub, _, auth = started(MASTER, Role.DAEMON)
    assert protocol_error(hub.accept, auth, directory.lookup, NOW).code is ErrorCode.UNKNOWN_IDENTITY
    assert directory.lookups == [(MASTER.id, Role.DAEMON)]


def test_a_lookup_answering_with_someone_elses_key_is_an_unknown_identity() -> None:
    hub, _, auth = started()
    error = protocol_error(hub.accept, auth, lambda client_id, role: OTHER_MASTER.public, NOW)
    assert error.code is ErrorCode.UNKNOWN_IDENTITY


def test_a_client_signing_with_another_key_than_the_enrolled_one_is_a_bad_signature() -> None:
    impostor = identity("impostor")
    impostor.public = MASTER.public  # claims the master's id, but signs with its own private key
    hub, _, auth = started(impostor)
    error = protocol_error(hub.accept, auth, standard_directory().lookup, NOW)
    assert error.code is ErrorCode.BAD_SIGNATURE
    assert hub.state is SessionState.CLOSED


def test_an_auth_replayed_against_a_new_challenge_is_a_bad_signature() -> None:
    first_hub, _, auth = started()
    first_hub.accept(auth, standard_directory().lookup, NOW)
    second_hub = hub_session()
    second_hub.challenge("c-2", NOW)
    assert protocol_error(second_hub.accept, auth, standard_directory().lookup, NOW).code is ErrorCode.BAD_SIGNATURE


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"ephemeral_key": b"\x09" * 32}, id="swapped-ephemeral-key"),
        pytest.param({"signature": b"\x00" * 64}, id="zero-signature"),
        pytest.param({"role": "daemon"}, id="changed-role"),
    ],
)
def test_an_altered_auth_is_refused(changes: dict[str, Any]) -> None:
    directory = standard_directory().enroll(MASTER, Role.DAEMON)
    hub, _, auth = started()
    error = protocol_error(hub.accept, edit_auth(auth, **changes), directory.lookup, NOW)
    assert error.code is ErrorCode.BAD_SIGNATURE


def test_an_unknown_role_fails_the_handshake() -> None:
    hub, _, auth = started()
    error = protocol_error(hub.accept, edit_auth(auth, role="admin"), standard_directory().lookup, NOW)
    assert error.code is ErrorCode.HANDSHAKE_FAILED


def test_an_auth_for_another_protocol_version_is_unsupported() -> None:
    hub, _, auth = started()
    error = protocol_error(hub.accept, edit_auth(auth, version=2), standard_directory().lookup, NOW)
    assert error.code is ErrorCode.UNSUPPORTED_VERSION


def test_a_stale_auth_is_refused() -> None:
    hub, _, auth = started()
    error = protocol_error(hub.accept, auth, standard_directory().lookup, NOW + DEFAULT_MAX_SKEW + 1)
    assert error.code is ErrorCode.STALE_TIMESTAMP
    assert hub.state is SessionState.CLOSED


def test_a_message_other_than_auth_fails_the_handshake() -> None:
    hub = hub_session()
    hub.challenge("c-1", NOW)
    error = protocol_error(hub.accept, encode_envelope(ping()), standard_directory().lookup, NOW)
    assert error.code is ErrorCode.HANDSHAKE_FAILED
    assert error.details == {"type": "ping"}


@pytest.mark.parametrize(
    "ephemeral_key",
    [pytest.param(bytes(32), id="low-order-point"), pytest.param(b"\x01" * 31, id="wrong-length")],
)
def test_a_correctly_signed_but_unusable_ephemeral_key_fails_the_handshake(ephemeral_key: bytes) -> None:
    hub = hub_session()
    auth = signed_auth(hub, MASTER, "master", ephemeral_key)
    error = protocol_error(hub.accept, auth, standard_directory().lookup, NOW)
    assert error.code is ErrorCode.HANDSHAKE_FAILED
    assert hub.state is SessionState.CLOSED


def test_a_hand_built_auth_with_a_valid_key_is_accepted() -> None:
    # Checks the helper above: only the ephemeral key makes the previous test fail.
    hub = hub_session()
    client = client_session()
    own_key = unpack(client.answer(hub_session().challenge("c-0", NOW), "a-0", NOW))["b"]["ephemeral_key"]
    auth = signed_auth(hub, MASTER, "master", own_key)
    assert hub.accept(auth, standard_directory().lookup, NOW).client_id == MASTER.id


def test_a_lookup_error_leaves_nothing_half_done() -> None:
    hub, _, auth = started()

    def broken_lookup(client_id: str, role: Role) -> None:
        raise ProtocolError(ErrorCode.INTERNAL, "store unavailable")

    assert protocol_error(hub.accept, auth, broken_lookup, NOW).code is ErrorCode.INTERNAL
    assert hub.state is SessionState.CLOSED
    assert hub.peer is None


def test_a_refusal_reaches_the_client_as_a_remote_error() -> None:
    stranger = identity("stranger")
    hub, client, auth = started(stranger)
    refusal = protocol_error(hub.accept, auth, standard_directory().lookup, NOW)
    frame = plain_error_frame("e-1", HUB.id, NOW, refusal)
    with pytest.raises(RemoteError) as caught:
        client.welcome(frame, NOW)
    assert caught.value.code == "unknown_identity"
    assert caught.value.details == {"client_id": stranger.id}
    assert client.state is SessionState.CLOSED


def test_a_plain_error_frame_keeps_only_wire_safe_details() -> None:
    error = ProtocolError(ErrorCode.BAD_SIGNATURE, "nope", signer="abc", size=3, ratio=0.5, blob=b"x", items=[1])
    raw = unpack(plain_error_frame("e-1", HUB.id, NOW, error))
    assert raw["t"] == "error"
    assert raw["b"] == {"code": "bad_signature", "message": "nope", "details": {"signer": "abc", "size": 3,
                                                                                "ratio": 0.5}}  # fmt: skip


def test_an_error_instead_of_a_challenge_is_a_remote_error() -> None:
    client = client_session()
    frame = plain_error_frame("e-1", HUB.id, NOW, ProtocolError(ErrorCode.SHUTTING_DOWN, "hub is restarting"))
    with pytest.raises(RemoteError) as caught:
        client.answer(frame, "a-1", NOW)
    assert caught.value.code == "shutting_down"
    assert caught.value.message == "hub is restarting"
    assert client.state is SessionState.CLOSED


def test_a_message_other_than_a_challenge_fails_the_handshake() -> None:
    client = client_session()
    assert protocol_error(client.answer, encode_envelope(ping()), "a-1", NOW).code is ErrorCode.HANDSHAKE_FAILED
    assert client.state is SessionState.CLOSED


def test_a_challenge_without_our_protocol_version_is_unsupported() -> None:
    raw = unpack(hub_session().challenge("c-1", NOW))
    raw["b"]["versions"] = [PROTOCOL_VERSION + 1]
    client = client_session()
    assert protocol_error(client.answer, pack(raw), "a-1", NOW).code is ErrorCode.UNSUPPORTED_VERSION
    assert client.state is SessionState.CLOSED


def test_a_stale_challenge_is_refused() -> None:
    client = client_session()
    frame = hub_session().challenge("c-1", NOW)
    assert protocol_error(client.answer, frame, "a-1", NOW - 3600).code is ErrorCode.STALE_TIMESTAMP
    assert client.state is SessionState.CLOSED


def test_a_challenge_with_an_unusable_ephemeral_key_fails_the_handshake() -> None:
    raw = unpack(hub_session().challenge("c-1", NOW))
    raw["b"]["ephemeral_key"] = b"\x01\x02"
    client = client_session()
    assert protocol_error(client.answer, pack(raw), "a-1", NOW).code is ErrorCode.HANDSHAKE_FAILED


def test_a_sealed_answer_other_than_welcome_fails_the_handshake() -> None:
    hub, client, auth = started()
    hub.accept(auth, standard_directory().lookup, NOW)
    error = protocol_error(client.welcome, hub.seal(ping()), NOW)
    assert error.code is ErrorCode.HANDSHAKE_FAILED
    assert client.state is SessionState.CLOSED


def test_a_plain_answer_other_than_error_fails_the_handshake() -> None:
    _, client, _ = started()
    error = protocol_error(client.welcome, encode_envelope(envelope(welcome_body())), NOW)
    assert error.code is ErrorCode.HANDSHAKE_FAILED
    assert client.state is SessionState.CLOSED


def test_a_welcome_sealed_for_another_client_is_a_bad_mac() -> None:
    hub, _, auth = started()
    hub.accept(auth, standard_directory().lookup, NOW)
    _, other_client, _ = started()
    assert protocol_error(other_client.welcome, hub.seal(envelope(welcome_body())), NOW).code is ErrorCode.BAD_MAC
    assert other_client.state is SessionState.CLOSED


@pytest.mark.parametrize("frame", [b"", b"\xc1", b"\x93\x01"], ids=["empty", "reserved-byte", "truncated"])
def test_garbage_instead_of_a_welcome_is_a_malformed_frame_that_closes_the_session(frame: bytes) -> None:
    _, client, _ = started()
    assert protocol_error(client.welcome, frame, NOW).code is ErrorCode.MALFORMED_FRAME
    assert client.state is SessionState.CLOSED


# -- the state machine -------------------------------------------------------------------------------------


def test_sealing_before_the_handshake_ends_is_an_illegal_state_naming_the_state() -> None:
    hub = hub_session()
    error = protocol_error(hub.seal, ping())
    assert error.code is ErrorCode.ILLEGAL_STATE
    assert error.details["state"] == "connecting"
    assert "connecting" in error.message
    hub.challenge("c-1", NOW)
    error = protocol_error(hub.seal, ping())
    assert error.details["state"] == "authenticating"
    assert "authenticating" in str(error)


def test_opening_before_the_handshake_ends_is_an_illegal_state() -> None:
    _, client, _ = started()
    error = protocol_error(client.open, b"\x93\x01\xc4\x00\xc4\x00", NOW)
    assert error.code is ErrorCode.ILLEGAL_STATE
    assert error.details["state"] == "authenticating"


def test_each_handshake_step_happens_once(pair: Pair) -> None:
    assert protocol_error(pair.hub.challenge, "c-2", NOW).code is ErrorCode.ILLEGAL_STATE
    assert protocol_error(pair.hub.accept, b"", standard_directory().lookup, NOW).code is ErrorCode.ILLEGAL_STATE
    assert protocol_error(pair.client.answer, b"", "a-2", NOW).code is ErrorCode.ILLEGAL_STATE
    assert protocol_error(pair.client.welcome, b"", NOW).code is ErrorCode.ILLEGAL_STATE
    assert pair.hub.state is SessionState.READY
    assert pair.client.state is SessionState.READY


def test_accept_before_the_challenge_is_an_illegal_state() -> None:
    hub = hub_session()
    _, _, auth = started()
    error = protocol_error(hub.accept, auth, standard_directory().lookup, NOW)
    assert error.code is ErrorCode.ILLEGAL_STATE
    assert error.details["state"] == "connecting"


def test_closing_a_ready_session_goes_through_closing_to_closed(pair: Pair) -> None:
    states = []
    for step in (pair.client.close, pair.client.close, pair.client.close, pair.client.fail):
        step()
        states.append(pair.client.state)
        assert protocol_error(pair.client.seal, ping()).code is ErrorCode.ILLEGAL_STATE
    assert states == [SessionState.CLOSING, SessionState.CLOSED, SessionState.CLOSED, SessionState.CLOSED]


ALL_PAIRS = [(state, event) for state in SessionState for event in SessionEvent]


@pytest.mark.parametrize(
    ("state", "event"),
    [pair for pair in ALL_PAIRS if pair not in TRANSITIONS],
    ids=lambda item: item.value,
)
def test_an_event_missing_from_the_transition_table_is_an_illegal_state(
    state: SessionState, event: SessionEvent
) -> None:
    session = hub_session()
    session.state = state
    error = protocol_error(session._fire, event)
    assert error.code is ErrorCode.ILLEGAL_STATE
    assert error.details == {"state": state.value, "event": event.value}
    assert session.state is state


@pytest.mark.parametrize(("state", "event"), list(TRANSITIONS), ids=lambda item: item.value)
def test_an_event_in_the_transition_table_moves_to_its_target(state: SessionState, event: SessionEvent) -> None:
    session = client_session()
    session.state = state
    session._fire(event)
    assert session.state is TRANSITIONS[(state, event)]


def test_failing_is_allowed_in_every_state_and_always_ends_closed() -> None:
    for state in SessionState:
        assert TRANSITIONS[(state, SessionEvent.FAIL)] is SessionState.CLOSED
        assert (state, SessionEvent.CLOSE) in TRANSITIONS


def test_only_authentication_reaches_ready() -> None:
    reaching_ready = [key for key, target in TRANSITIONS.items() if target is SessionState.READY]
    assert reaching_ready == [(SessionState.AUTHENTICATING, SessionEvent.AUTHENTICATED)]


# -- fuzzing -----------------------------------------------------------------------------------------------


def challenged_hub() -> HubSession:
    hub = hub_session()
    hub.challenge("c-1", NOW)
    return hub


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_at_accept_only_ever_raise_a_protocol_error(data: bytes) -> None:
    hub = challenged_hub()
    with pytest.raises(ProtocolError):
        hub.accept(data, standard_directory().lookup, NOW)
    assert hub.state is SessionState.CLOSED


@FUZZ
@given(
    client_id=st.sampled_from([MASTER.id, DAEMON.id, "", "x" * 20]) | st.text(max_size=25),
    role=st.sampled_from(["master", "daemon", "hub", ""]),
    ephemeral_key=st.binary(min_size=32, max_size=32) | st.binary(max_size=40),
    signature=st.binary(min_size=64, max_size=64) | st.binary(max_size=70),
    version=st.sampled_from([PROTOCOL_VERSION, 0, 2]) | st.integers(min_value=-(2**63), max_value=2**63 - 1),
    ts=st.just(NOW) | st.floats(),
)
def test_forged_auth_messages_only_ever_raise_a_protocol_error(
    client_id: str, role: str, ephemeral_key: bytes, signature: bytes, version: int, ts: float
) -> None:
    hub = challenged_hub()
    auth = Auth(client_id, role, ephemeral_key, signature, version)
    frame = encode_envelope(Envelope("a-1", client_id, HUB_RECIPIENT, "", ts, auth))
    with pytest.raises(ProtocolError):
        hub.accept(frame, lambda cid, r: {MASTER.id: MASTER.public, DAEMON.id: DAEMON.public}.get(cid), NOW)
    assert hub.state is SessionState.CLOSED


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_to_open_only_ever_raise_a_protocol_error(data: bytes) -> None:
    pair = handshake()
    with pytest.raises(ProtocolError):
        pair.hub.open(data, NOW)
    assert pair.hub.state is SessionState.CLOSED


@FUZZ
@given(
    seq=st.integers(min_value=-(2**63), max_value=2**64 - 1) | small_msgpack_values,
    payload=st.binary(max_size=100) | small_msgpack_values,
    tag=st.binary(min_size=32, max_size=32) | small_msgpack_values,
)
def test_arbitrary_frame_triples_to_open_only_ever_raise_a_protocol_error(seq: Any, payload: Any, tag: Any) -> None:
    pair = handshake()
    with pytest.raises(ProtocolError):
        pair.hub.open(pack([seq, payload, tag]), NOW)


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes_to_the_client_handshake_only_raise_protocol_or_remote_errors(data: bytes) -> None:
    with pytest.raises((ProtocolError, RemoteError)):
        client_session().answer(data, "a-1", NOW)
    _, client, _ = started()
    with pytest.raises((ProtocolError, RemoteError)):
        client.welcome(data, NOW)
    assert client.state is SessionState.CLOSED


@FUZZ
@given(st.data())
def test_a_corrupted_byte_anywhere_in_a_sealed_frame_never_opens_silently_wrong(data: Any) -> None:
    pair = handshake()
    sent = envelope(Output(order_id="o-1", stream="stdout", data=b"hello world"))
    frame = bytearray(pair.client.seal(sent))
    position = data.draw(st.integers(min_value=0, max_value=len(frame) - 1))
    frame[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        received = pair.hub.open(bytes(frame), NOW)
    except ProtocolError:
        assert pair.hub.state is SessionState.CLOSED
        return
    assert received == sent  # only a re-encoding of the same frame (e.g. another int width) may still open
