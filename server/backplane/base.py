"""The backplane interface: publish/listen between hub replicas, plus machine presence.

The hub always handles a message locally first, then publishes it for the other replicas; every message carries
the publishing replica's id so a replica ignores its own echo. Messages are the typed records of
``server.core.peers``; a backplane that carries them between processes packs ``peers.to_wire`` and hands its
handler only what ``peers.peer_from_wire`` accepts (anything else on a channel is logged and dropped).
Pub/sub is a *notification* path: the store stays the source of truth, so a lost notification delays work (the
next sweep or reconnect catches up) but never loses it.

Channels (see ``RedisBackplane`` for the Redis names and why):
- ``replica_channel(id)``: directed messages for the replica holding a machine (deliver, cancel, revoke);
- ``scenario_channel(id)``: events and live output, subscribed only by replicas with a watcher of that scenario.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from protocol import CrcError
from server.core.peers import PeerMessage

Handler = Callable[[PeerMessage], Awaitable[None]]


class BackplaneUnavailable(CrcError):
    """The shared backplane (Redis) cannot be reached; the hub refuses work it could not route or keep."""


def replica_channel(replica_id: str) -> str:
    return f"replica:{replica_id}"


BROADCAST_CHANNEL = "all-replicas"  # every replica listens (rare, hub-wide news: a master was removed)


def scenario_channel(scenario_id: str) -> str:
    return f"scenario:{scenario_id}"


class Backplane(ABC):
    """What one replica needs from the others."""

    replica_id: str
    # False for the in-process backplane: nobody else would hear a publish, so hot paths skip building messages.
    shared: bool = True

    @abstractmethod
    async def start(self, handler: Handler, on_reconnect: Callable[[], Awaitable[None]]) -> None:
        """Listen on this replica's channel; ``handler`` gets other replicas' messages (typed, and never this
        replica's own), ``on_reconnect`` runs
        after the connection to the backplane came back (notifications may have been missed meanwhile)."""

    @abstractmethod
    def publish(self, channel: str, message: PeerMessage) -> None:
        """Queue a message for the replicas listening on ``channel`` (sent in pipelined batches, never awaited
        one by one). Best effort: see the module docstring."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def claim(self, machine_id: str) -> None:
        """Record that this replica holds the machine's session (refreshed until released)."""

    @abstractmethod
    async def release(self, machine_id: str) -> None:
        """Forget the claim, unless another replica has claimed the machine since."""

    @abstractmethod
    async def locate(self, machine_id: str) -> str | None:
        """The replica currently holding the machine's session, if any."""

    @property
    @abstractmethod
    def available(self) -> bool:
        """False while the backplane is unreachable."""

    @abstractmethod
    async def close(self) -> None: ...
