"""The secure session: handshake, then sealed frames with per-direction sequence numbers and HMAC tags.

Pure: callers pass in randomness (nonces, ephemeral key seeds) and the current time, and move bytes themselves.

Handshake::

    hub    -> client   CHALLENGE {nonce, hub_id, ephemeral_key (X25519), versions}     plain envelope
    client -> hub      AUTH {client_id, role, ephemeral_key, signature, version}        plain envelope
    hub    -> client   WELCOME {...}                                                    first sealed frame

The client signs (Ed25519) a hash of the transcript, binding both ephemeral keys and the hub's nonce, so a
recorded AUTH cannot be replayed against another challenge. Both sides derive one key per direction from the
X25519 shared secret with HKDF-SHA256. A sealed frame is the msgpack array ``[seq, payload, tag]`` where
``tag = HMAC-SHA256(direction key, seq || payload)`` and ``seq`` counts 1, 2, 3... per direction; a bad tag, a
sequence number other than the next one, or a timestamp outside the allowed skew closes the session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocol.envelope import (
    DEFAULT_MAX_FRAME,
    PROTOCOL_VERSION,
    Envelope,
    encode_envelope,
    envelope_from_wire,
    pack,
    unpack,
)
from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.identity import Identity, PublicKey
from protocol.messages import Auth, Challenge, Error, MsgType

DEFAULT_MAX_SKEW = 120.0
HUB_RECIPIENT = "hub"


class Role(StrEnum):
    MASTER = "master"
    DAEMON = "daemon"


class SessionState(StrEnum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionEvent(StrEnum):
    CHALLENGE = "challenge"
    AUTHENTICATED = "authenticated"
    CLOSE = "close"
    FAIL = "fail"


_S, _E = SessionState, SessionEvent
TRANSITIONS: dict[tuple[SessionState, SessionEvent], SessionState] = {
    (_S.CONNECTING, _E.CHALLENGE): _S.AUTHENTICATING,
    (_S.CONNECTING, _E.FAIL): _S.CLOSED,
    (_S.CONNECTING, _E.CLOSE): _S.CLOSED,
    (_S.AUTHENTICATING, _E.AUTHENTICATED): _S.READY,
    (_S.AUTHENTICATING, _E.FAIL): _S.CLOSED,
    (_S.AUTHENTICATING, _E.CLOSE): _S.CLOSED,
    (_S.READY, _E.CLOSE): _S.CLOSING,
    (_S.READY, _E.FAIL): _S.CLOSED,
    (_S.CLOSING, _E.CLOSE): _S.CLOSED,
    (_S.CLOSING, _E.FAIL): _S.CLOSED,
    (_S.CLOSED, _E.CLOSE): _S.CLOSED,
    (_S.CLOSED, _E.FAIL): _S.CLOSED,
}


@dataclass(frozen=True)
class Authenticated:
    """Who the hub's peer proved to be."""

    client_id: str
    role: Role
    public_key: PublicKey


KeyLookup = Callable[[str, Role], PublicKey | None]


def _transcript(challenge: Challenge, client_id: str, role: str, client_ephemeral: bytes, version: int) -> bytes:
    material = pack(
        ["crc-handshake-v1", challenge.nonce, challenge.hub_id, challenge.ephemeral_key,
         client_id, role, client_ephemeral, version]
    )  # fmt: skip
    return hashlib.sha256(material).digest()


def _x25519_public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _derive(private: X25519PrivateKey, peer_public: bytes, nonce: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    """(client->hub key, hub->client key)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"bad ephemeral key: {exc}") from exc
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=nonce, info=b"crc-session-v1" + transcript).derive(shared)
    return okm[:32], okm[32:]


class _Tagger:
    """HMAC-SHA256 over (sequence number, payload) under one key. The keyed state is prepared once and copied
    per frame: that skips hashing the key's two padded blocks for every message (a third cheaper per tag)."""

    __slots__ = ("_keyed",)

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, seq: int, payload: bytes) -> bytes:
        mac = self._keyed.copy()
        mac.update(seq.to_bytes(8, "big"))
        mac.update(payload)
        return mac.digest()


_NO_KEY = _Tagger(b"")


class _Session:
    """What both ends share: the state table, sealing and opening frames."""

    __slots__ = ("_recv_seq", "_recv_tag", "_send_seq", "_send_tag", "max_frame", "max_skew", "session_id", "state")

    def __init__(self, *, max_frame: int, max_skew: float) -> None:
        self.state = SessionState.CONNECTING
        self.max_frame = max_frame
        self.max_skew = max_skew
        self.session_id = ""
        self._send_tag = _NO_KEY
        self._recv_tag = _NO_KEY
        self._send_seq = 0
        self._recv_seq = 0

    def _fire(self, event: SessionEvent) -> None:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise ProtocolError(
                ErrorCode.ILLEGAL_STATE,
                f"event {event.value!r} is not allowed in state {self.state.value!r}",
                state=self.state.value,
                event=event.value,
            ) from None

    def _require(self, *states: SessionState) -> None:
        if self.state not in states:
            raise ProtocolError(
                ErrorCode.ILLEGAL_STATE,
                f"session is {self.state.value}, expected {' or '.join(s.value for s in states)}",
                state=self.state.value,
            )

    def close(self) -> None:
        """Mark the session closing (then closed on the second call); no more frames are sealed or opened."""
        self._fire(SessionEvent.CLOSE)

    def fail(self) -> None:
        self._fire(SessionEvent.FAIL)

    def seal(self, envelope: Envelope) -> bytes:
        """Encode, number and tag one envelope for sending.

        Raises:
            ProtocolError: ILLEGAL_STATE before the handshake ends; FRAME_TOO_LARGE for an oversized message.
        """
        self._require(SessionState.READY)
        return self._seal_unchecked(envelope)

    def _seal_unchecked(self, envelope: Envelope) -> bytes:
        payload = encode_envelope(envelope, self.max_frame - 64)
        self._send_seq += 1
        return pack([self._send_seq, payload, self._send_tag(self._send_seq, payload)])

    def open(self, frame: bytes, now: float) -> Envelope:
        """Check and decode one received sealed frame.

        Raises:
            ProtocolError: any decode error, BAD_MAC, BAD_SEQUENCE or STALE_TIMESTAMP; the session is then
                closed and the caller should report the error to the peer and drop the connection.
        """
        self._require(SessionState.READY)
        return self._open_sealed(frame, now)

    def _open_sealed(self, frame: bytes, now: float) -> Envelope:
        try:
            raw = unpack(frame, self.max_frame)
            if not (isinstance(raw, list) and len(raw) == 3):
                raise ProtocolError(ErrorCode.MALFORMED_FRAME, "a sealed frame is [seq, payload, tag]")
            seq, payload, tag = raw
            if not (isinstance(seq, int) and isinstance(payload, bytes) and isinstance(tag, bytes)):
                raise ProtocolError(ErrorCode.MALFORMED_FRAME, "sealed frame fields have the wrong types")
            if seq < 0 or seq >= 2**64:
                raise ProtocolError(ErrorCode.BAD_SEQUENCE, "sequence number out of range", seq=seq)
            if not hmac.compare_digest(tag, self._recv_tag(seq, payload)):
                raise ProtocolError(ErrorCode.BAD_MAC, "frame tag does not verify; the frame was altered")
            if seq != self._recv_seq + 1:
                raise ProtocolError(
                    ErrorCode.BAD_SEQUENCE,
                    "frame repeated or out of order",
                    seq=seq,
                    expected=self._recv_seq + 1,
                )
            self._recv_seq = seq
            envelope = envelope_from_wire(unpack(payload, self.max_frame))
            self._check_fresh(envelope.ts, now)
            return envelope
        except ProtocolError:
            self._fire(SessionEvent.FAIL)
            raise

    def _check_fresh(self, ts: float, now: float) -> None:
        # Written as "not within" so that a NaN timestamp (every comparison with it is False) counts as stale.
        if not abs(now - ts) <= self.max_skew:
            raise ProtocolError(
                ErrorCode.STALE_TIMESTAMP,
                f"message timestamp is {now - ts:+.0f} s off this side's clock (limit {self.max_skew:.0f} s); "
                "check the clocks (NTP) of both machines",
                skew=now - ts,
                limit=self.max_skew,
            )


class HubSession(_Session):
    """The hub's end of one connection.

    Args:
        hub: the hub's identity (its id is sent in the challenge).
        nonce: 32 fresh random bytes.
        ephemeral_seed: 32 fresh random bytes for this session's X25519 key.
    """

    __slots__ = ("_challenge", "_ephemeral", "_hub", "peer")

    def __init__(
        self,
        hub: Identity,
        nonce: bytes,
        ephemeral_seed: bytes,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_skew: float = DEFAULT_MAX_SKEW,
    ) -> None:
        super().__init__(max_frame=max_frame, max_skew=max_skew)
        self._hub = hub
        ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_seed)
        # Both are dropped once the keys are derived: forward secrecy, and less to keep per idle session.
        self._ephemeral: X25519PrivateKey | None = ephemeral
        self._challenge: Challenge | None = Challenge(
            nonce=nonce, hub_id=hub.id, ephemeral_key=_x25519_public(ephemeral), versions=[PROTOCOL_VERSION]
        )
        self.peer: Authenticated | None = None

    def challenge(self, message_id: str, now: float) -> bytes:
        """The CHALLENGE frame to send first."""
        self._fire(SessionEvent.CHALLENGE)
        assert self._challenge is not None
        return encode_envelope(Envelope(message_id, self._hub.id, "", "", now, self._challenge))

    def accept(self, frame: bytes | Envelope, lookup: KeyLookup, now: float) -> Authenticated:
        """Verify the client's AUTH frame and derive the session keys.

        Args:
            frame: the AUTH frame, or the envelope the caller decoded from it already (so that it is decoded once,
                within ``protocol.envelope.PRE_AUTH_LIMITS``).
            lookup: gives the enrolled public key for (client id, role), or None if unknown / revoked.

        Raises:
            ProtocolError: HANDSHAKE_FAILED, UNKNOWN_IDENTITY, BAD_SIGNATURE, STALE_TIMESTAMP or a decode error.
        """
        self._require(SessionState.AUTHENTICATING)
        assert self._ephemeral is not None and self._challenge is not None  # AUTHENTICATING: not used yet
        try:
            envelope = frame if isinstance(frame, Envelope) else envelope_from_wire(unpack(frame, self.max_frame))
            auth = envelope.body
            if not isinstance(auth, Auth):
                raise ProtocolError(
                    ErrorCode.HANDSHAKE_FAILED, f"expected auth, got {envelope.type.value}", type=envelope.type.value
                )
            self._check_fresh(envelope.ts, now)
            if auth.version != PROTOCOL_VERSION:
                raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION, "unsupported protocol version", version=auth.version)
            try:
                role = Role(auth.role)
            except ValueError:
                raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"unknown role {auth.role!r}") from None
            key = lookup(auth.client_id, role)
            # A master's id is its key's fingerprint; a machine keeps its first key's id across key rotations,
            # so for it the registered key (whose signature is checked below) is what counts.
            if key is None or (role is Role.MASTER and key.id != auth.client_id):
                raise ProtocolError(
                    ErrorCode.UNKNOWN_IDENTITY,
                    f"no enrolled {role.value} has id {auth.client_id!r} (never enrolled, or revoked)",
                    client_id=auth.client_id,
                )
            transcript = _transcript(self._challenge, auth.client_id, role.value, auth.ephemeral_key, auth.version)
            key.verify(auth.signature, b"crc-auth-v1" + transcript)
            to_hub, to_client = _derive(self._ephemeral, auth.ephemeral_key, self._challenge.nonce, transcript)
        except ProtocolError:
            self._fire(SessionEvent.FAIL)
            raise
        self._send_tag, self._recv_tag = _Tagger(to_client), _Tagger(to_hub)
        self._ephemeral = self._challenge = None
        self.session_id = transcript[:8].hex()
        self._fire(SessionEvent.AUTHENTICATED)
        self.peer = Authenticated(auth.client_id, role, key)
        return self.peer


class ClientSession(_Session):
    """A master's or daemon's end of one connection.

    Args:
        identity: the client's key pair.
        role: master or daemon.
        ephemeral_seed: 32 fresh random bytes for this session's X25519 key.
        client_id: the id to claim, when it is not the key's fingerprint: a machine keeps its id when its key is
            rotated (the hub checks the signature against the key registered for that id).
    """

    __slots__ = ("_ephemeral", "_identity", "_role", "client_id", "hub_id")

    def __init__(
        self,
        identity: Identity,
        role: Role,
        ephemeral_seed: bytes,
        *,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_skew: float = DEFAULT_MAX_SKEW,
        client_id: str = "",
    ) -> None:
        super().__init__(max_frame=max_frame, max_skew=max_skew)
        self._identity = identity
        self.client_id = client_id or identity.id
        self._role = role
        self._ephemeral = X25519PrivateKey.from_private_bytes(ephemeral_seed)
        self.hub_id = ""

    def answer(self, frame: bytes, message_id: str, now: float) -> bytes:
        """Read the hub's CHALLENGE and return the AUTH frame to send back.

        Raises:
            ProtocolError: HANDSHAKE_FAILED or a decode error; RemoteError if the hub sent an ERROR instead.
        """
        self._require(SessionState.CONNECTING)
        try:
            envelope = envelope_from_wire(unpack(frame, self.max_frame))
            challenge = envelope.body
            if isinstance(challenge, Error):
                raise RemoteError(challenge.code, challenge.message, challenge.details)
            if not isinstance(challenge, Challenge):
                raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"expected challenge, got {envelope.type.value}")
            if PROTOCOL_VERSION not in challenge.versions:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"hub speaks protocol versions {challenge.versions}, this client {PROTOCOL_VERSION}",
                )
            self._check_fresh(envelope.ts, now)
            own_ephemeral = _x25519_public(self._ephemeral)
            transcript = _transcript(challenge, self.client_id, self._role.value, own_ephemeral, PROTOCOL_VERSION)
            to_hub, to_client = _derive(self._ephemeral, challenge.ephemeral_key, challenge.nonce, transcript)
        except (ProtocolError, RemoteError):
            self._fire(SessionEvent.FAIL)
            raise
        self._send_tag, self._recv_tag = _Tagger(to_hub), _Tagger(to_client)
        self.session_id = transcript[:8].hex()
        self.hub_id = challenge.hub_id
        self._fire(SessionEvent.CHALLENGE)
        auth = Auth(
            client_id=self.client_id,
            role=self._role.value,
            ephemeral_key=own_ephemeral,
            signature=self._identity.sign(b"crc-auth-v1" + transcript),
            version=PROTOCOL_VERSION,
        )
        return encode_envelope(Envelope(message_id, self.client_id, HUB_RECIPIENT, "", now, auth))

    def welcome(self, frame: bytes, now: float) -> Envelope:
        """Read the hub's answer to AUTH: the sealed WELCOME, after which the session is ready.

        Raises:
            RemoteError: the hub refused the client (plain ERROR frame: unknown identity, bad signature...).
            ProtocolError: the answer was neither.
        """
        self._require(SessionState.AUTHENTICATING)
        try:
            raw = unpack(frame, self.max_frame)
        except ProtocolError:
            self._fire(SessionEvent.FAIL)
            raise
        if isinstance(raw, dict):  # refusals come unsealed: the hub could not or would not derive keys
            self._fire(SessionEvent.FAIL)
            envelope = envelope_from_wire(raw)
            if isinstance(envelope.body, Error):
                raise RemoteError(envelope.body.code, envelope.body.message, envelope.body.details)
            raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"expected welcome, got {envelope.type.value}")
        envelope = self._open_sealed(frame, now)
        if envelope.type is not MsgType.WELCOME:
            self._fire(SessionEvent.FAIL)
            raise ProtocolError(ErrorCode.HANDSHAKE_FAILED, f"expected welcome, got {envelope.type.value}")
        self._fire(SessionEvent.AUTHENTICATED)
        return envelope


def plain_error_frame(message_id: str, sender: str, now: float, error: ProtocolError) -> bytes:
    """An unsealed ERROR frame, for refusing a client during the handshake."""
    body = Error(code=error.code.value, message=error.message, details=_wire_safe(error.details))
    return encode_envelope(Envelope(message_id, sender, "", "", now, body))


def _wire_safe(details: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in details.items() if isinstance(v, str | int | float | bool | None)}


def _is_map_frame(frame: bytes) -> bool:
    """Plain (unsealed) frames are msgpack maps; sealed ones are arrays. Checked on the first byte only."""
    return bool(frame) and (0x80 <= frame[0] <= 0x8F or frame[0] in (0xDE, 0xDF))


def refusal(frame: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> RemoteError | None:
    """If ``frame`` is the peer's unsealed ERROR (it refused or dropped the session), that error; else None.

    Peers send such frames when the session's keys can no longer be trusted (a bad tag, a replay), so they are
    only ever used to explain why the connection is closing, never acted on otherwise.
    """
    if not _is_map_frame(frame):
        return None
    try:
        envelope = envelope_from_wire(unpack(frame, max_frame))
    except ProtocolError:
        return None
    if isinstance(envelope.body, Error):
        return RemoteError(envelope.body.code, envelope.body.message, envelope.body.details)
    return None
