"""The in-process backplane of a single hub: there are no other replicas to tell."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from server.backplane.base import Backplane, Handler
from server.core.peers import PeerMessage


class LocalBackplane(Backplane):
    shared = False

    def __init__(self, replica_id: str = "local") -> None:
        self.replica_id = replica_id
        self._claimed: set[str] = set()

    async def start(self, handler: Handler, on_reconnect: Callable[[], Awaitable[None]]) -> None:
        return None

    def publish(self, channel: str, message: PeerMessage) -> None:
        return None

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def claim(self, machine_id: str) -> None:
        self._claimed.add(machine_id)

    async def release(self, machine_id: str) -> None:
        self._claimed.discard(machine_id)

    async def locate(self, machine_id: str) -> str | None:
        return self.replica_id if machine_id in self._claimed else None

    @property
    def available(self) -> bool:
        return True

    async def close(self) -> None:
        self._claimed.clear()  # as a closed Redis backplane's claims are released
