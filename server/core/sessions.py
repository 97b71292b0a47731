"""Who is connected to this replica: daemons by machine id, masters by master id, every authenticated session
(for heartbeats), and the admission guard that rations handshakes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator

from server.core.connection import Connection
from server.guard import AdmissionGuard


class Sessions:
    def __init__(self, guard: AdmissionGuard) -> None:
        self.daemons: dict[str, Connection] = {}
        self.masters: dict[str, set[Connection]] = defaultdict(set)
        self.live: set[Connection] = set()  # every authenticated session, attached or not: for heartbeats
        self.guard = guard
        self.delivery_locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def master_connections(self) -> Iterator[Connection]:
        for conns in self.masters.values():
            yield from conns

    def peers(self) -> Iterator[Connection]:
        yield from self.daemons.values()
        yield from self.master_connections()
