"""A client's connection to the hub (shared by masters and daemons): handshake, sealed frames, heartbeats,
requests matched with their answers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import ssl
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect

from protocol import (
    DEFAULT_MAX_FRAME,
    ClientSession,
    CrcError,
    Envelope,
    ErrorCode,
    Identity,
    MsgType,
    ProtocolError,
    RemoteError,
    Role,
)
from protocol.messages import Body, Error, Ping, Pong, Response, Welcome
from protocol.session import HUB_RECIPIENT, refusal

WS_PATH = "/v1/ws"


class LinkClosed(CrcError):
    """The connection to the hub is gone; ``reason`` says why as well as we know."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"connection to the hub closed: {reason}")
        self.reason = reason


def hub_ws_url(url: str) -> str:
    """Accept ``http://``, ``https://``, ``ws://`` or ``wss://`` hub URLs, with or without the ``/v1/ws`` path."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"hub URL {url!r} must look like http://host:port, https://, ws:// or wss://")
    path = parts.path.rstrip("/")
    if not path.endswith(WS_PATH):
        path += WS_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def hub_http_url(url: str) -> str:
    """The base of the hub's HTTP endpoints for any accepted hub URL: ``http(s)://host:port[/prefix]``."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/").removesuffix(WS_PATH).rstrip("/")
    return urlunsplit((scheme, parts.netloc, path, "", ""))


async def pinned_self_signed_pem(url: str, pin: str, timeout: float = 15.0) -> str:
    """The hub's certificate as PEM when it matches ``pin`` and is self-signed (so clients can trust exactly
    it); '' for plain HTTP, no pin, or a CA-signed certificate (the system's CAs vouch for that one).

    Raises:
        PinMismatch: the certificate is not the pinned one.
        OSError / TimeoutError: the hub cannot be reached.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    parts = urlsplit(hub_http_url(url))
    if parts.scheme != "https" or not pin:
        return ""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the pin is checked below instead
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port or 443, ssl=context), timeout
    )
    try:
        der: bytes = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    actual = "sha256:" + hashlib.sha256(der).hexdigest()
    if actual != pin.strip().lower():
        raise PinMismatch(f"the hub's certificate is {actual}, not the pinned {pin}")
    cert = x509.load_der_x509_certificate(der)
    if cert.issuer != cert.subject:
        return ""
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def new_id() -> str:
    return uuid.uuid4().hex


class PinMismatch(CrcError):
    """The hub's TLS certificate is not the one pinned in the config: possibly someone in the middle."""


def tls_context(ws_url: str, pin: str, ca_file: str | None) -> ssl.SSLContext | None:
    """The client TLS context for ``wss://`` URLs (None for ``ws://``).

    Raises:
        PinMismatch: a pin is configured but the URL does not use TLS (nothing to check it against).
    """
    if not ws_url.startswith("wss://"):
        if pin:
            raise PinMismatch(f"a hub certificate pin is configured but {ws_url} does not use TLS (https/wss)")
        return None
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if pin:
        # The pin is the trust decision: it replaces CA validation, and is checked right after the handshake.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _check_pin(ws: ClientConnection, pin: str) -> None:
    ssl_object = ws.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    actual = "sha256:" + hashlib.sha256(der).hexdigest() if der else "none"
    if actual.lower() != pin.strip().lower():
        await ws.close()
        raise PinMismatch(f"the hub's certificate is {actual}, not the pinned {pin}; refusing to talk to it")


class HubLink:
    """One authenticated session with the hub. Use ``HubLink.connect``."""

    def __init__(self, ws: ClientConnection, session: ClientSession, identity: Identity, welcome: Welcome) -> None:
        self.ws = ws
        self.session = session
        self.identity = identity
        self.welcome = welcome
        self.last_received = time.monotonic()
        self._send_lock = asyncio.Lock()
        self._heartbeat = asyncio.create_task(self._heartbeat_loop())
        self.closed_reason = ""
        # Only an ERROR that arrived sealed in this session came from the hub we authenticated with; an unsealed
        # one (kept in closed_reason only) may have been injected by anyone on the path, so it is never acted on.
        self.sealed_close: Error | None = None
        # Requests sent on this link and not answered yet, by message id. An answer can only come on the link
        # the request went out on, so they live and die with it: recv() settles them, and every way the link
        # ends fails them at once rather than leave them to their timeouts.
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}

    @classmethod
    async def connect(
        cls,
        url: str,
        identity: Identity,
        role: Role,
        *,
        open_timeout: float = 10.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        pin: str = "",
        ca_file: str | None = None,
        client_id: str = "",
    ) -> HubLink:
        """Connect and authenticate (as ``client_id`` when it is not the key's fingerprint: a rotated machine).

        Args:
            pin: ``sha256:<hex>`` of the hub's TLS certificate. When given, only that certificate is accepted,
                whoever signed it (a self-signed one from ``crc hub init-tls`` included).
            ca_file: CA bundle to trust instead of the system's, for hubs that are not pinned.

        Raises:
            OSError / TimeoutError: the hub cannot be reached (or its certificate is not trusted).
            PinMismatch: the hub's certificate is not the pinned one.
            RemoteError: the hub refused us (unknown identity, revoked...; ``unavailable`` when its store is
                down: retryable, try again shortly).
            ProtocolError: the hub broke the handshake.
        """
        ws_url = hub_ws_url(url)
        tls = tls_context(ws_url, pin, ca_file)
        try:
            ws = await asyncio.wait_for(
                connect(
                    ws_url,
                    ssl=tls,
                    compression=None,
                    max_size=4 * max_frame,
                    ping_interval=None,
                    open_timeout=open_timeout,
                    close_timeout=2,
                ),
                timeout=open_timeout + 1,
            )
        except websockets.exceptions.InvalidStatus as exc:
            # A draining replica answers 503; a proxy in front may answer 502 while no replica is up.
            raise LinkClosed(f"hub answered HTTP {exc.response.status_code} to the WebSocket upgrade") from exc
        except websockets.exceptions.WebSocketException as exc:
            raise LinkClosed(f"WebSocket handshake with the hub failed: {exc}") from exc
        if pin:
            await _check_pin(ws, pin)
        try:
            session = ClientSession(identity, role, secrets.token_bytes(32), max_frame=max_frame, client_id=client_id)
            challenge = await asyncio.wait_for(ws.recv(decode=False), open_timeout)
            await ws.send(session.answer(challenge, new_id(), time.time()))
            answer = await asyncio.wait_for(ws.recv(decode=False), open_timeout)
            envelope = session.welcome(answer, time.time())
        except websockets.ConnectionClosed as exc:
            await ws.close()
            raise LinkClosed(f"hub closed the connection during the handshake ({exc})") from exc
        except BaseException:
            await ws.close()
            raise
        assert isinstance(envelope.body, Welcome)
        return cls(ws, session, identity, envelope.body)

    async def send(
        self,
        body: Body,
        *,
        scenario: str = "",
        reply_to: str = "",
        recipient: str = HUB_RECIPIENT,
        msg_id: str = "",
    ) -> str:
        """Seal and send one message; returns its id.

        Raises:
            LinkClosed: the connection is gone.
            ProtocolError: FRAME_TOO_LARGE if the message does not fit a frame.
        """
        sender = self.session.client_id
        envelope = Envelope(msg_id or new_id(), sender, recipient, scenario, time.time(), body, reply_to)
        async with self._send_lock:
            if self.session.state.value != "ready":
                raise LinkClosed(self.closed_reason or "session is closed")
            frame = self.session.seal(envelope)
            try:
                await self.ws.send(frame)
            except websockets.ConnectionClosed as exc:
                raise LinkClosed(self.closed_reason or str(exc)) from exc
        return envelope.id

    @property
    def waiting(self) -> int:
        """How many ``request()`` calls wait for their answer on this link."""
        return len(self._pending)

    async def request(self, body: Body, *, scenario: str = "", timeout: float = 30.0) -> dict[str, Any]:
        """Send one request and wait for the hub's answer to it (the RESPONSE or ERROR that replies to its id).

        The answer is read by ``recv()``, so some task must be reading this link (the master's and the daemon's
        read loops do). Nothing is sent again here: whether a request may be repeated on the next link is the
        caller's call (``Master.request`` repeats the safe ones).

        Returns:
            the RESPONSE's data.

        Raises:
            RemoteError: the hub answered with an ERROR (``code`` and ``message`` are the hub's).
            LinkClosed: the link is gone, or ended before the answer came (the request may or may not have run).
            TimeoutError: no answer within ``timeout`` seconds.
            ProtocolError: FRAME_TOO_LARGE if the request does not fit a frame.
        """
        msg_id = new_id()
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = answer
        try:
            await self.send(body, scenario=scenario, msg_id=msg_id)
            return await asyncio.wait_for(answer, timeout)
        finally:
            # Answered, timed out, cancelled or failed: the entry goes, so a late answer finds nobody waiting.
            self._pending.pop(msg_id, None)
            if answer.done() and not answer.cancelled():
                answer.exception()  # failed while send() was still running: its error was raised from there

    async def recv(self) -> Envelope:
        """The next message. PINGs are answered here, and answers to ``request()`` handed to it; neither is
        returned (an answer nobody waits for any more is).

        Raises:
            LinkClosed: the connection ended (the hub's stated reason included when it gave one).
            ProtocolError: the hub sent a broken frame; the link is closed.
        """
        try:
            return await self._next()
        except (CrcError, OSError) as exc:
            # Whatever ended the read ended the link: no answer can come to what is still pending.
            self._fail_pending(self.closed_reason or getattr(exc, "reason", str(exc)))
            raise

    async def _next(self) -> Envelope:
        while True:
            try:
                frame = await self.ws.recv(decode=False)
            except websockets.ConnectionClosed as exc:
                raise LinkClosed(self.closed_reason or f"{exc}") from exc
            self.last_received = time.monotonic()
            if not isinstance(frame, bytes):
                await self._abandon(ProtocolError(ErrorCode.MALFORMED_FRAME, "hub sent a text frame"))
            refused = refusal(frame, self.session.max_frame)
            if refused is not None:
                self.closed_reason = f"{refused.code}: {refused.message} (unsealed, so unauthenticated)"
                await self.ws.close()
                raise LinkClosed(self.closed_reason)
            try:
                envelope = self.session.open(frame, time.time())
            except ProtocolError as exc:
                await self._abandon(exc)
                raise
            if envelope.type is MsgType.PING:
                await self.send(Pong(), reply_to=envelope.id)
                continue
            if self._settle(envelope):
                continue
            if isinstance(envelope.body, Error) and not envelope.reply_to:
                # An unsolicited sealed ERROR precedes the hub closing the session (revoked, replaced...).
                self.sealed_close = envelope.body
                self.closed_reason = f"{envelope.body.code}: {envelope.body.message}"
            return envelope

    def _settle(self, envelope: Envelope) -> bool:
        """Hand an answer to the ``request()`` waiting for it; False when it is no answer or nobody waits."""
        body = envelope.body
        if not envelope.reply_to or not isinstance(body, Response | Error):
            return False
        answer = self._pending.pop(envelope.reply_to, None)
        if answer is None:
            return False
        if not answer.done():
            if isinstance(body, Response):
                answer.set_result(body.data)
            else:
                answer.set_exception(RemoteError(body.code, body.message, body.details))
        return True

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for answer in pending.values():
            if not answer.done():
                answer.set_exception(LinkClosed(reason))

    async def _abandon(self, error: ProtocolError) -> None:
        self.closed_reason = str(error)
        await self.ws.close()
        raise error

    async def _heartbeat_loop(self) -> None:
        """PING on the hub's interval; a hub silent for ``dead_after`` is treated as gone (half-open socket)."""
        interval, dead_after = self.welcome.heartbeat_interval, self.welcome.dead_after
        with contextlib.suppress(CrcError, asyncio.CancelledError):
            while True:
                await asyncio.sleep(interval)
                if time.monotonic() - self.last_received > dead_after:
                    self.closed_reason = f"hub silent for {dead_after:.0f} s"
                    self._fail_pending(self.closed_reason)
                    await self.ws.close()
                    return
                await self.send(Ping())

    async def close(self, reason: str = "closed by this client") -> None:
        """Close the session; requests still waiting fail with ``LinkClosed(reason)``."""
        self._fail_pending(reason)
        self._heartbeat.cancel()
        if self.session.state.value == "ready":
            self.session.close()
        await self.ws.close()
