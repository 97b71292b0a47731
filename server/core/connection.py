"""One authenticated WebSocket session on the hub: sealed sends through an outbox, heartbeats, closing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from protocol import Authenticated, Envelope, ErrorCode, HubSession, ProtocolError, Role
from protocol.messages import Body, Error, Ping
from protocol.session import plain_error_frame
from server.guard import TokenBucket
from server.uploads import Uploads

log = logging.getLogger(__name__)

# Frames waiting for a slow peer beyond this are a sign it is not reading; we drop it rather than grow forever.
OUTBOX_LIMIT = 10_000
OUTBOX_HIGH_WATER = 1_000


_ID_PREFIX = uuid.uuid4().hex[:12]
_ids = itertools.count(1)


def log_safe(text: str, limit: int = 300) -> str:
    """``text`` on one line, control characters escaped and cut to ``limit``: for strings a peer chose."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped if len(escaped) <= limit else escaped[:limit] + "..."


def new_id() -> str:
    """A message id unique to this hub process: a random prefix and a counter (uuid4 per message was ~2 us of
    the hub's per-message CPU; ids only need to be unique, replays are stopped by sequence numbers)."""
    return f"{_ID_PREFIX}{next(_ids):x}"


class Connection:
    """An authenticated peer (master or daemon) and the socket it came on."""

    # Slots: a hub holds one per connected machine (10,000s), and a per-instance dict is ~1 KiB of each.
    __slots__ = (
        "__weakref__",
        "_outbox",
        "_writable",
        "_writer",
        "budget",
        "budget_warned",
        "caught_up",
        "closed",
        "delivered",
        "foreign_reported",
        "hub_id",
        "last_received",
        "machine_name",
        "owned_orders",
        "peer",
        "scenario_id",
        "scenario_name",
        "session",
        "uploads",
        "ws",
    )  # fmt: skip

    def __init__(self, ws: web.WebSocketResponse, session: HubSession, peer: Authenticated, hub_id: str) -> None:
        self.ws = ws
        self.session = session
        self.peer = peer
        self.hub_id = hub_id
        self.last_received = time.monotonic()
        self.closed = False
        # Daemon sessions: the machine's scenario, and which orders went out on this session already.
        self.scenario_id = ""
        self.scenario_name = ""
        self.machine_name = ""
        self.delivered: set[str] = set()
        self.caught_up = False  # every queued order was sent on this session (then new ones go one by one)
        # Orders found in the store to be this machine's (beyond ``delivered``), so that a stream of output
        # costs one lookup; and whether a report about another machine's order was logged on this session yet.
        self.owned_orders: set[str] = set()
        self.foreign_reported = False
        # Master sessions: file contents uploaded ahead of their orders, by upload id (content SHA-256).
        self.uploads = Uploads()
        self.budget = TokenBucket(1e12, 1e12)  # the endpoint sets the configured budget
        self.budget_warned = 0.0
        # Most sessions are idle most of the time: the outbox is a bare deque and its writer task exists only
        # while frames wait (a Queue, an Event and a parked task cost ~6 KiB per session; see bench/README.md).
        self._outbox: collections.deque[bytes] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._writable: asyncio.Event | None = None  # made when a bulk sender first has to wait

    @property
    def id(self) -> str:
        return self.peer.client_id

    @property
    def outbox_size(self) -> int:
        return len(self._outbox)

    @property
    def role(self) -> Role:
        return self.peer.role

    def send(self, body: Body, *, scenario: str = "", reply_to: str = "", recipient: str = "") -> None:
        """Seal and queue one message; never blocks (fan-out writes to many peers without awaiting each)."""
        if self.closed:
            return
        envelope = Envelope(new_id(), self.hub_id, recipient or self.id, scenario, time.time(), body, reply_to)
        try:
            frame = self.session.seal(envelope)
        except ProtocolError as exc:
            log.warning("cannot send %s to %s: %s", body.TYPE.value, self.id, exc)
            if reply_to and not isinstance(body, Error):
                # The asker is waiting for this answer: say why it will not come, rather than let it time out.
                self.send(Error(exc.code.value, f"the answer cannot be sent: {exc.message}"), reply_to=reply_to)
            return
        self._outbox.append(frame)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        if len(self._outbox) >= OUTBOX_HIGH_WATER and self._writable is not None:
            self._writable.clear()
        if len(self._outbox) > OUTBOX_LIMIT:
            log.warning(
                "dropping %s %s: it stopped reading (%d frames queued)",
                self.role.value,
                self.id,
                OUTBOX_LIMIT,
            )
            self.abort()

    def reply_error(self, request: Envelope, code: ErrorCode, message: str, **details: Any) -> None:
        safe = {k: v for k, v in details.items() if isinstance(v, str | int | float | bool | None)}
        self.send(Error(code.value, message, safe), scenario=request.scenario, reply_to=request.id)

    async def wait_writable(self) -> None:
        """Wait until the outbox drained below the high-water mark (used by bulk senders such as replays)."""
        while len(self._outbox) >= OUTBOX_HIGH_WATER and not self.closed:
            if self._writable is None:
                self._writable = asyncio.Event()
            self._writable.clear()
            await self._writable.wait()

    async def _write_loop(self) -> None:
        """Write queued frames in order, then end: ``send`` starts it again when frames come."""
        try:
            while self._outbox:
                await self.ws.send_bytes(self._outbox.popleft())
                if self._writable is not None and len(self._outbox) < OUTBOX_HIGH_WATER // 2:
                    self._writable.set()
        except (ConnectionError, RuntimeError) as exc:
            log.debug("writer for %s stopped: %s", self.id, exc)
            self.abort()
        finally:
            self._writer = None
            if self._writable is not None:
                self._writable.set()

    def beat(self, now: float, interval: float, dead_after: float) -> None:
        """One heartbeat (the hub's heartbeat loop calls it every ``interval``): drop the peer if nothing arrived
        for ``dead_after`` seconds (a half-open socket), else PING it unless it spoke within the interval: our
        clients PING on the same interval and get PONGs, so both ends hear each other without the hub's PING
        too (half the heartbeat frames of an idle hub). ``now`` is ``time.monotonic()``."""
        if self.closed:
            return
        if self.uploads.size:
            self.uploads.expire(now)
        silent = now - self.last_received
        if silent > dead_after:
            log.info("%s %s silent for %.0f s: dropping it", self.role.value, self.id, dead_after)
            self.abort()
            return
        if silent >= interval:
            self.send(Ping())

    async def close(self, code: ErrorCode | None = None, message: str = "") -> None:
        """Say why (if there is a reason), flush what is queued, and close the socket."""
        if self.closed:
            return
        if code is not None:
            self.send(Error(code.value, message, {}))
        self.closed = True
        if self._writer is not None:
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout=2.0)
        await self.ws.close()

    def abort(self) -> None:
        """Close at once without flushing (slow or dead peer)."""
        self.closed = True
        self._cancel_writer()
        asyncio.get_running_loop().create_task(self.ws.close())

    def _cancel_writer(self) -> None:
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._outbox.clear()
        if self._writable is not None:
            self._writable.set()

    async def fail(self, error: ProtocolError) -> None:
        """The peer broke the session (bad tag, replay...): tell it why, unsealed, since the session is gone."""
        self.closed = True
        self._cancel_writer()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_bytes(plain_error_frame(new_id(), self.hub_id, time.time(), error))
        await self.ws.close()
