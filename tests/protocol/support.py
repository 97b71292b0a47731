"""Shared helpers for the protocol tests: fixed identities, envelopes, an in-memory handshake, fuzz settings."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from protocol.envelope import DEFAULT_MAX_FRAME, Envelope
from protocol.identity import Identity, PublicKey
from protocol.messages import Body, Welcome
from protocol.session import DEFAULT_MAX_SKEW, Authenticated, ClientSession, HubSession, Role

NOW = 1_700_000_000.0

# Fuzz tests stay fast and leave no example database behind in the working tree.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def seed(label: str) -> bytes:
    """32 deterministic bytes named by ``label``."""
    return hashlib.sha256(b"crc-test-seed:" + label.encode()).digest()


def identity(label: str) -> Identity:
    return Identity.from_seed(seed(label))


HUB = identity("hub")
MASTER = identity("master")
OTHER_MASTER = identity("other-master")
DAEMON = identity("daemon")
OTHER_DAEMON = identity("other-daemon")

_counter = itertools.count()


def fresh(label: str) -> bytes:
    """32 bytes never handed out before in this run (nonces, ephemeral seeds)."""
    return seed(f"{label}-{next(_counter)}")


def envelope(
    body: Body,
    *,
    ts: float = NOW,
    message_id: str = "m-1",
    sender: str = "sender",
    recipient: str = "recipient",
    scenario: str = "",
    reply_to: str = "",
) -> Envelope:
    return Envelope(message_id, sender, recipient, scenario, ts, body, reply_to)


def welcome_body(max_frame: int = DEFAULT_MAX_FRAME) -> Welcome:
    return Welcome(session_id="s", heartbeat_interval=15.0, dead_after=45.0, max_frame=max_frame)


@dataclass
class Directory:
    """What the hub knows: enrolled public keys by (id, role); records every lookup."""

    enrolled: dict[tuple[str, Role], PublicKey] = field(default_factory=dict)
    lookups: list[tuple[str, Role]] = field(default_factory=list)

    def enroll(self, who: Identity, role: Role) -> Directory:
        self.enrolled[(who.id, role)] = who.public
        return self

    def lookup(self, client_id: str, role: Role) -> PublicKey | None:
        self.lookups.append((client_id, role))
        return self.enrolled.get((client_id, role))


def standard_directory() -> Directory:
    return Directory().enroll(MASTER, Role.MASTER).enroll(DAEMON, Role.DAEMON)


def hub_session(**kwargs: Any) -> HubSession:
    return HubSession(HUB, fresh("nonce"), fresh("hub-ephemeral"), **kwargs)


def client_session(who: Identity = MASTER, role: Role = Role.MASTER, **kwargs: Any) -> ClientSession:
    return ClientSession(who, role, fresh("client-ephemeral"), **kwargs)


@dataclass
class Pair:
    """Both ends of one completed handshake."""

    hub: HubSession
    client: ClientSession
    peer: Authenticated
    welcome: Envelope


def handshake(
    who: Identity = MASTER,
    role: Role = Role.MASTER,
    *,
    directory: Directory | None = None,
    max_frame: int = DEFAULT_MAX_FRAME,
    max_skew: float = DEFAULT_MAX_SKEW,
) -> Pair:
    """Run CHALLENGE -> AUTH -> sealed WELCOME in memory and return the two ready sessions."""
    hub = hub_session(max_frame=max_frame, max_skew=max_skew)
    client = client_session(who, role, max_frame=max_frame, max_skew=max_skew)
    auth = client.answer(hub.challenge("c-1", NOW), "a-1", NOW)
    peer = hub.accept(auth, (directory or standard_directory()).lookup, NOW)
    welcome = client.welcome(hub.seal(envelope(welcome_body(max_frame), sender=HUB.id)), NOW)
    return Pair(hub, client, peer, welcome)


# Any value msgpack can carry (bytes and str kept apart, integers within msgpack's 64-bit range).
msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=5), children, max_size=5)
    ),
    max_leaves=15,
)
small_msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
