"""An async client for the parts of the Vultr API v2 that provisioning needs: startup scripts and instances.

Follows the reference sheet (``/work/shared/reference/vultr-api-v2.md``):

- ``Authorization: Bearer <key>``; ``Content-Type: application/json`` on every JSON body (the API answers 400
  without it); ``Accept: application/json``.
- Success codes: 200 for reads, 201 for a new startup script, 202 for a new instance, 204 for deletes.
- Errors arrive as ``{"error": "<text>", "status": <int>}`` and become one :class:`VultrError` tree.
- The API allows 30 requests/s per source IP. A client-side throttle keeps every request (retries included)
  under ``requests_per_second``; a 429 is still retried with jittered backoff (``protocol.retry.backoff_delays``).
- 500/502/503/504 and connection errors are retried only where repeating the call is harmless (GET, DELETE).
  A POST is retried only on 429 or when the connection could not even be opened: a 5xx or a timeout after
  ``POST /instances`` may still have created a server (look it up by label or tag before trying again).
- Lists are paged with ``per_page`` and an opaque ``cursor``, following ``meta.links.next`` until it is empty.
- A 429's ``Retry-After`` (seconds or an HTTP date) is honoured in full, within ``rate_limit_wait_max`` per call.
- A new instance answers 404 "instance not found" for a while after its 202 (terraform-provider-vultr#462):
  :meth:`VultrClient.wait_active` waits before its first poll and takes a 404 as "not yet" for ``not_found_for``.
- DELETE answers 500 "... Server is currently locked" while ``server_status`` is ``none``/``locked`` (the whole
  install; ansible-collection-vultr#113, PR #89): :meth:`VultrClient.delete_instance` retries it until the lock
  clears, within ``lock_wait``, saying what it waits for.
- A deleted instance answers 404 "instance not found" now and 400 "invalid instance ID" in 2021
  (terraform-provider-vultr#688, #177): both are :class:`VultrNotFound` on ``/instances/{id}``.
- ``time_scale`` multiplies every wait the client makes (1.0 = real seconds); only emulators and tests change it.

The API key is never logged and never appears in an exception message or in a ``repr``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import aiohttp

from protocol.retry import backoff_delays

__all__ = [
    "DEFAULT_BASE_URL",
    "NO_IP",
    "Instance",
    "StartupScript",
    "VultrAuthError",
    "VultrBadRequest",
    "VultrClient",
    "VultrConnectionError",
    "VultrError",
    "VultrLocked",
    "VultrNotFound",
    "VultrRateLimited",
    "VultrServerError",
    "VultrTimeout",
    "VultrUnprocessable",
]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.vultr.com/v2"
API_KEY_ENV = "VULTR_API_KEY"
NO_IP = "0.0.0.0"  # what `main_ip` says until an address is assigned
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
IMAGE_SOURCES = ("os_id", "iso_id", "snapshot_id", "app_id", "image_id")
MAX_PER_PAGE = 500
LOCKED_MARK = "currently locked"  # 500 "Unable to destroy server: Unable to remove VM: Server is currently locked"
GONE_MARKS = ("instance not found", "invalid instance id", "invalid instance-id")


# --------------------------------------------------------------------------------------------------- errors


class VultrError(Exception):
    """A failed Vultr call: ``status`` is the HTTP status (0 when no answer arrived), ``message`` the API's text."""

    def __init__(self, status: int, message: str, *, method: str | None = None, path: str | None = None) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        where = f" ({method} {path})" if method and path else ""
        super().__init__(f"Vultr API error {status}: {message}{where}" if status else f"{message}{where}")


class VultrBadRequest(VultrError):
    """400: the API rejected the request's shape or values (e.g. ``Server add failed: ...``)."""


class VultrAuthError(VultrError):
    """401/403: the key is wrong, missing, or not allowed from this IP."""


class VultrNotFound(VultrError):
    """404: no such instance or startup script."""


class VultrUnprocessable(VultrError):
    """422 "Validation Error" (the newest spec lists it for list-instances): a filter or value the API refuses."""

    def __init__(self, status: int, message: str, *, method: str | None = None, path: str | None = None) -> None:
        super().__init__(status, f"the API refused the request as invalid: {message}", method=method, path=path)


class VultrRateLimited(VultrError):
    """429 again and again, after every retry was spent."""


class VultrServerError(VultrError):
    """5xx that retrying did not fix (or that was not retried because the call was a create)."""


class VultrLocked(VultrServerError):
    """500 "Server is currently locked": the instance cannot be destroyed until its install is done."""


class VultrConnectionError(VultrError):
    """No HTTP answer: the connection failed or timed out (``status`` is 0)."""


class VultrTimeout(VultrError, TimeoutError):
    """An instance did not become ready within the time given to :meth:`VultrClient.wait_active`."""


def _error_for(status: int, message: str, method: str, path: str) -> VultrError:
    kind: type[VultrError]
    gone = any(mark in message.lower() for mark in GONE_MARKS)
    if status == 400 and gone and path.startswith("/instances/"):
        kind = VultrNotFound  # a deleted instance answered 400 "invalid instance ID" in 2021 (TF #177)
    elif status == 400:
        kind = VultrBadRequest
    elif status in (401, 403):
        kind = VultrAuthError
    elif status == 404:
        kind = VultrNotFound
    elif status == 422:
        kind = VultrUnprocessable
    elif status == 429:
        kind = VultrRateLimited
    elif status == 500 and LOCKED_MARK in message.lower():
        kind = VultrLocked
    elif status >= 500:
        kind = VultrServerError
    else:
        kind = VultrError
    return kind(status, message, method=method, path=path)


# --------------------------------------------------------------------------------------------------- models


def parse_date(value: object) -> datetime | None:
    """A Vultr timestamp in either form seen (``2020-10-10T01:56:20+00:00``, ``2020-07-07 18:52:56``) or None.

    Offsets other than UTC are kept; a naive time is taken as UTC; anything unparseable gives None.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(item for item in value if isinstance(item, str))
    return ()


def _decode_base64_text(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class StartupScript:
    """A startup script. ``script`` is the decoded text, or None when the API left it out (as lists may)."""

    id: str
    name: str
    type: str
    date_created: datetime | None
    date_modified: datetime | None
    script: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> StartupScript:
        return cls(
            id=_str(data.get("id")),
            name=_str(data.get("name")),
            type=_str(data.get("type"), "boot"),
            date_created=parse_date(data.get("date_created")),
            date_modified=parse_date(data.get("date_modified")),
            script=_decode_base64_text(data.get("script")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Instance:
    """A Vultr instance, parsed leniently: missing or oddly typed fields get neutral defaults.

    ``default_password`` is only sent in the create response: keep the object :meth:`VultrClient.create_instance`
    returns if you need it. ``raw`` holds the whole object as the API sent it.
    """

    id: str
    label: str = ""
    hostname: str = ""
    region: str = ""
    plan: str = ""
    os: str = ""
    os_id: int | None = None
    app_id: int | None = None
    image_id: str | None = None
    status: str = ""
    power_status: str = ""
    server_status: str = ""
    main_ip: str = NO_IP
    v6_main_ip: str | None = None
    internal_ip: str | None = None
    vcpu_count: int | None = None
    ram: int | None = None
    disk: int | None = None
    date_created: datetime | None = None
    tags: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    user_scheme: str | None = None
    default_password: str | None = field(default=None, repr=False)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def has_ip(self) -> bool:
        return self.main_ip not in ("", NO_IP)

    @property
    def is_ready(self) -> bool:
        """Active, running and with a public IPv4 address (the OS may still be booting: see the reference)."""
        return self.status == "active" and self.power_status == "running" and self.has_ip

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> Instance:
        return cls(
            id=_str(data.get("id")),
            label=_str(data.get("label")),
            hostname=_str(data.get("hostname")),
            region=_str(data.get("region")),
            plan=_str(data.get("plan")),
            os=_str(data.get("os")),
            os_id=_int(data.get("os_id")),
            app_id=_int(data.get("app_id")),
            image_id=_opt_str(data.get("image_id")),
            status=_str(data.get("status")),
            power_status=_str(data.get("power_status")),
            server_status=_str(data.get("server_status")),
            main_ip=_str(data.get("main_ip"), NO_IP) or NO_IP,
            v6_main_ip=_opt_str(data.get("v6_main_ip")),
            internal_ip=_opt_str(data.get("internal_ip")),
            vcpu_count=_int(data.get("vcpu_count")),
            ram=_int(data.get("ram")),
            disk=_int(data.get("disk")),
            date_created=parse_date(data.get("date_created")),
            tags=_strings(data.get("tags")),
            features=_strings(data.get("features")),
            user_scheme=_opt_str(data.get("user_scheme")),
            default_password=_opt_str(data.get("default_password")),
            raw=dict(data),
        )


# --------------------------------------------------------------------------------------------------- client


class _Throttle:
    """Spaces request starts at least ``1 / rate`` seconds apart (no burst), so retries count too."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("requests_per_second must be positive (or None to turn the throttle off)")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self._clock()
        slot = max(now, self._next)  # reserved synchronously: concurrent callers queue up in order
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


@dataclass(frozen=True)
class _Answer:
    status: int
    body: Any


class VultrClient:
    """Async Vultr API v2 client. Use as ``async with VultrClient() as vultr: ...`` (or call :meth:`close`).

    Args:
        api_key: the API key; ``VULTR_API_KEY`` from the environment when None.
        base_url: the API root, e.g. an emulator's ``http://127.0.0.1:PORT/v2``.
        session: an aiohttp session to use (and not close); by default the client opens and closes its own.
        max_retries: retries after the first attempt for a retryable failure.
        backoff_initial, backoff_max: the jittered exponential backoff between retries, in seconds.
        requests_per_second: the client-side throttle (the API allows 30/s per IP); None turns it off.
        request_timeout: total seconds for one HTTP attempt.
        random_unit: the jitter's source of floats in [0, 1).
        rate_limit_wait_max: the most seconds one call waits in all for 429s (``Retry-After`` included); a
            ``Retry-After`` beyond what is left fails the call at once, saying so.
        time_scale: real seconds per API second for every wait (emulators compress time; 1.0 otherwise).
        sleep: how the client waits (tests record the waits instead).
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        session: aiohttp.ClientSession | None = None,
        max_retries: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 12.0,
        requests_per_second: float | None = 25.0,
        request_timeout: float = 60.0,
        random_unit: Callable[[], float] = random.random,
        rate_limit_wait_max: float = 300.0,
        time_scale: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        if not key or not key.strip():
            raise VultrError(0, f"no Vultr API key: pass api_key or set the {API_KEY_ENV} environment variable")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        self.rate_limit_wait_max = rate_limit_wait_max
        self.time_scale = time_scale
        self._sleep = sleep
        self._api_key = key.strip()
        self._headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._random_unit = random_unit
        self._throttle = _Throttle(requests_per_second)
        self._session = session
        self._owns_session = session is None

    def __repr__(self) -> str:
        return f"VultrClient(base_url={self.base_url!r}, api_key=<redacted>)"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session the client opened itself (a session passed in is left to its owner)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    # ---------------------------------------------------------------------------------------- startup scripts

    async def create_startup_script(self, name: str, script_text: str | bytes, type: str = "boot") -> StartupScript:
        """Upload a startup script (``boot`` runs once at first boot; ``pxe`` is run by iPXE)."""
        raw = script_text.encode() if isinstance(script_text, str) else script_text
        body = {"name": name, "script": base64.b64encode(raw).decode("ascii"), "type": type}
        # 201 per the spec; some Vultr endpoints answer 200 to a create, and the object is the same (issue 16)
        answer = await self._request("POST", "/startup-scripts", json_body=body, ok=(201, 200))
        return StartupScript.from_api(_object(answer.body, "startup_script"))

    async def get_startup_script(self, script_id: str) -> StartupScript:
        answer = await self._request("GET", f"/startup-scripts/{script_id}", ok=(200,))
        return StartupScript.from_api(_object(answer.body, "startup_script"))

    async def delete_startup_script(self, script_id: str) -> None:
        await self._request("DELETE", f"/startup-scripts/{script_id}", ok=(204,))

    async def list_startup_scripts(self, *, per_page: int = 100) -> AsyncIterator[StartupScript]:
        """Every startup script, following the pages."""
        async for item in self._paginate("/startup-scripts", "startup_scripts", {}, per_page):
            yield StartupScript.from_api(item)

    # ---------------------------------------------------------------------------------------------- instances

    async def create_instance(
        self,
        region: str,
        plan: str,
        os_id: int | None = None,
        *,
        label: str,
        hostname: str | None = None,
        tags: Sequence[str] = (),
        script_id: str | None = None,
        user_data: bytes | None = None,
        image_id: str | None = None,
        app_id: int | None = None,
        snapshot_id: str | None = None,
        enable_ipv6: bool | None = None,
        sshkey_ids: Sequence[str] = (),
        firewall_group_id: str | None = None,
        backups: bool | None = None,
        user_scheme: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Instance:
        """Deploy an instance (202; it starts ``pending`` with ``main_ip`` 0.0.0.0). Not retried on 5xx.

        Exactly one image source: ``os_id``, ``image_id``, ``app_id`` or ``snapshot_id``. ``user_data`` is the
        raw bytes (sent base64). The returned object carries ``default_password``, which later reads do not.
        ``extra`` adds any other documented field as is.
        """
        sources = {"os_id": os_id, "image_id": image_id, "app_id": app_id, "snapshot_id": snapshot_id}
        given = {name: value for name, value in sources.items() if value is not None}
        if len(given) != 1:
            raise ValueError(f"give exactly one image source of {', '.join(sources)} (got {len(given)})")
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of strings, not one string")
        body: dict[str, Any] = {"region": region, "plan": plan, "label": label, "tags": list(tags), **given}
        if hostname is not None:
            body["hostname"] = hostname
        if script_id is not None:
            body["script_id"] = script_id
        if user_data is not None:
            body["user_data"] = base64.b64encode(user_data).decode("ascii")  # a JSON string, not bytes
        if enable_ipv6 is not None:
            body["enable_ipv6"] = enable_ipv6
        if sshkey_ids:
            body["sshkey_id"] = list(sshkey_ids)
        if firewall_group_id is not None:
            body["firewall_group_id"] = firewall_group_id
        if backups is not None:
            body["backups"] = "enabled" if backups else "disabled"
        if user_scheme is not None:
            body["user_scheme"] = user_scheme
        if extra:
            body.update(extra)
        answer = await self._request("POST", "/instances", json_body=body, ok=(202, 201, 200))
        instance = Instance.from_api(_object(answer.body, "instance"))
        log.info("created Vultr instance %s (%s) in %s", instance.id, instance.label, instance.region)
        return instance

    async def get_instance(self, instance_id: str) -> Instance:
        answer = await self._request("GET", f"/instances/{instance_id}", ok=(200,))
        return Instance.from_api(_object(answer.body, "instance"))

    async def list_instances(
        self,
        tag: str | None = None,
        label: str | None = None,
        *,
        region: str | None = None,
        main_ip: str | None = None,
        per_page: int = 100,
    ) -> AsyncIterator[Instance]:
        """Every instance matching the filters, following the pages.

        ``tag`` is sent as the (deprecated) ``tag`` filter and also checked here against ``tags``, since the API
        has no ``tags`` filter and may ignore the old one.
        """
        params = {"tag": tag, "label": label, "region": region, "main_ip": main_ip}
        async for item in self._paginate("/instances", "instances", params, per_page):
            instance = Instance.from_api(item)
            if tag is not None and tag not in instance.tags:
                continue
            if label is not None and instance.label != label:
                continue
            yield instance

    async def get_user_data(self, instance_id: str) -> bytes:
        """The instance's user data, decoded."""
        answer = await self._request("GET", f"/instances/{instance_id}/user-data", ok=(200,))
        data = _object(answer.body, "user_data").get("data")
        return base64.b64decode(data) if isinstance(data, str) else b""

    async def delete_instance(
        self,
        instance_id: str,
        *,
        lock_wait: float = 900.0,
        lock_poll: float = 10.0,
        say: Callable[[str], None] | None = None,
    ) -> bool:
        """Destroy an instance; True if this call deleted it, False if it was already gone (404 or 400).

        A 500 "locked" (the install is still running) is retried every ``lock_poll`` seconds until the lock
        clears or ``lock_wait`` seconds passed (then :class:`VultrLocked`); ``say`` hears what is awaited, once
        and whenever ``server_status`` changes.
        """
        started = time.monotonic()
        attempts = 0
        max_attempts = math.ceil(lock_wait / max(lock_poll, 0.001)) + 2  # a count bound as well as a time bound
        last_state: str | None = None
        while True:
            try:
                await self._request("DELETE", f"/instances/{instance_id}", ok=(204, 200))
                return True
            except VultrNotFound:
                log.debug("Vultr instance %s was already gone", instance_id)
                return False
            except VultrLocked as exc:
                attempts += 1
                waited = self._elapsed(started)
                if waited >= lock_wait or attempts >= max_attempts:
                    raise VultrLocked(
                        exc.status, f"{exc.message} (still locked after {waited:.0f} s)", method="DELETE",
                        path=f"/instances/{instance_id}",
                    ) from None  # fmt: skip
                try:
                    state = (await self.get_instance(instance_id)).server_status or "?"
                except VultrNotFound:
                    return False
                if say is not None and state != last_state:
                    say(
                        f"instance {instance_id} is locked by Vultr (server_status {state}) until its install "
                        f"ends; retrying the delete every {lock_poll:g} s for up to {lock_wait:g} s"
                    )
                last_state = state
                await self._pause(lock_poll)

    async def wait_active(
        self,
        instance_id: str,
        timeout: float = 900.0,
        poll_interval: float = 5.0,
        *,
        first_poll_after: float | None = None,
        not_found_for: float = 120.0,
    ) -> Instance:
        """Poll until the instance is ``active``, ``running`` and has a main IP; :class:`VultrTimeout` otherwise.

        The first poll comes ``first_poll_after`` seconds after the call (default: two poll intervals, Terraform's
        10 s for the default 5 s; at most half the timeout), and a 404 is "not yet" for
        ``not_found_for`` seconds: a new instance is not found for a while (terraform-provider-vultr#462;
        Terraform waits 10 s and tolerates 60 not-found checks). This is not "booted": ``server_status`` may
        still be ``installingbooting`` and cloud-init still running.
        """
        started = time.monotonic()
        max_polls = math.ceil(timeout / max(poll_interval, 0.001)) + 2
        delay = 2 * poll_interval if first_poll_after is None else first_poll_after
        await self._pause(min(delay, timeout / 2))
        instance: Instance | None = None
        for _ in range(max_polls):
            try:
                instance = await self.get_instance(instance_id)
            except VultrNotFound as exc:
                if self._elapsed(started) >= not_found_for:
                    raise VultrNotFound(
                        exc.status, f"instance {instance_id} still not found {not_found_for:g} s after it was "
                        f"created: {exc.message}", method=exc.method, path=exc.path,
                    ) from None  # fmt: skip
                instance = None
            if instance is not None and instance.is_ready:
                return instance
            if self._elapsed(started) >= timeout:
                break
            await self._pause(poll_interval)
        state = (
            f"status={instance.status!r}, power_status={instance.power_status!r}, main_ip={instance.main_ip!r}"
            if instance is not None
            else "not found yet"
        )
        raise VultrTimeout(0, f"instance {instance_id} not ready after {timeout:g} s ({state})")

    async def _pause(self, api_seconds: float) -> None:
        if api_seconds > 0:
            await self._sleep(api_seconds * self.time_scale)

    def _elapsed(self, since: float) -> float:
        """API seconds since ``since`` (a ``time.monotonic()``)."""
        return (time.monotonic() - since) / self.time_scale

    # ---------------------------------------------------------------------------------------------- transport

    async def _paginate(
        self, path: str, key: str, filters: Mapping[str, str | None], per_page: int
    ) -> AsyncIterator[dict[str, Any]]:
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}")
        params = {name: value for name, value in filters.items() if value is not None}
        params["per_page"] = str(per_page)
        seen: set[str] = set()
        while True:
            answer = await self._request("GET", path, params=params, ok=(200,))
            body = answer.body if isinstance(answer.body, dict) else {}
            items = body.get(key)
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    yield item
            cursor = _next_cursor(body)
            if not cursor or cursor in seen:  # "" ends the list; a repeated cursor would loop forever
                return
            seen.add(cursor)
            params["cursor"] = cursor

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...],
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        """One API call with throttling and retries; returns the parsed answer or raises a :class:`VultrError`."""
        idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        delays: Iterator[float] = backoff_delays(
            self._random_unit, initial=self.backoff_initial, maximum=self.backoff_max
        )
        headers = dict(self._headers)
        data: bytes | None = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = _json_dumps(json_body)
        url = self.base_url + path
        attempt = 0
        rate_waited = 0.0
        while True:
            await self._throttle.wait()
            try:
                async with self._get_session().request(
                    method, url, headers=headers, data=data, params=params, timeout=self._timeout
                ) as response:
                    status = response.status
                    text = await response.text()
                    retry_after = response.headers.get("Retry-After")
            except aiohttp.ClientConnectorError as exc:  # never connected: safe to repeat even a POST
                failure: VultrError = VultrConnectionError(
                    0, f"cannot reach the Vultr API: {self._redact(str(exc))}", method=method, path=path
                )
                retryable = True
            except (aiohttp.ClientError, TimeoutError) as exc:
                detail = self._redact(str(exc)) or type(exc).__name__
                failure = VultrConnectionError(0, f"no answer from the Vultr API: {detail}", method=method, path=path)
                retryable = idempotent
            else:
                body = _json_or_none(text)
                if status in ok:
                    log.debug("Vultr %s %s -> %d", method, path, status)
                    return _Answer(status, body)
                failure = _error_for(status, self._redact(_error_text(body, text, status)), method, path)
                retryable = status == 429 or (
                    idempotent and status in RETRYABLE_STATUSES and not isinstance(failure, VultrLocked)
                )
            if not retryable or attempt >= self.max_retries:
                if retryable:
                    log.warning("Vultr %s %s failed after %d retries: %s", method, path, attempt, failure)
                raise failure
            attempt += 1
            delay = next(delays)
            if failure.status == 429:
                asked = retry_after_seconds(retry_after)
                if asked is not None:
                    delay = max(delay, asked)  # honoured in full: the newest spec documents the header
                if rate_waited + delay > self.rate_limit_wait_max:
                    raise VultrRateLimited(
                        429, f"rate limited; waiting {delay:.0f} s more would pass this client's "
                        f"{self.rate_limit_wait_max:g} s bound ({failure.message})", method=method, path=path,
                    )  # fmt: skip
                rate_waited += delay
            log.info("Vultr %s %s: %s; retry %d/%d in %.2f s", method, path, failure, attempt, self.max_retries, delay)
            await self._pause(delay)

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<redacted>")


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3); None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def _json_dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def _json_or_none(text: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error_text(body: Any, text: str, status: int) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]:
        return str(body["error"])
    snippet = text.strip()[:200]
    return snippet or f"HTTP {status} without an error text"


def _next_cursor(body: Mapping[str, Any]) -> str:
    meta = body.get("meta")
    links = meta.get("links") if isinstance(meta, dict) else None
    cursor = links.get("next") if isinstance(links, dict) else None
    return cursor if isinstance(cursor, str) else ""


def _object(body: Any, key: str) -> dict[str, Any]:
    """``body[key]`` when it is an object; a clear error when the API answered something else."""
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, dict):
        raise VultrError(0, f"unexpected Vultr API answer: no {key!r} object")
    return value
