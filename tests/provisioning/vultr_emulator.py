"""A local emulator of the Vultr API v2 endpoints provisioning uses (startup scripts and instances).

Follows ``/work/shared/reference/vultr-api-v2.md``: Bearer auth (401 ``Invalid API token.``), JSON bodies only
(400 without ``Content-Type: application/json``), 201/202/204 success codes, ``{"error", "status"}`` error bodies,
429 above ``rate_limit`` requests per second, opaque cursors with ``per_page`` (max 500), ``meta.links.next``.

Instances are created ``pending`` (``main_ip`` 0.0.0.0, ``server_status`` none) and become ``active``/``running``
with a main IP (``installingbooting``) after ``polls_until_active`` reads of that instance, or once
``seconds_until_active`` have passed (whichever comes first when both are set); then ``ok`` after
``polls_until_ok`` more reads. At that "first boot", an instance created with a ``script_id`` or ``user_data``
calls ``on_boot(instance, script_text)`` once (awaited when it returns an awaitable); ``script_text`` is the
decoded startup script, or None when only user data was given (see :meth:`VultrEmulator.user_data_of`).

Tests steer it with :meth:`VultrEmulator.fail_next` (a queue of statuses to answer next, e.g. 429, 500) and
read :attr:`VultrEmulator.requests` (every request seen, with its time and answer status).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

BootHook = Callable[[dict[str, Any], str | None], Awaitable[None] | None]

IMAGE_SOURCES = ("os_id", "iso_id", "snapshot_id", "app_id", "image_id")
DEFAULT_PER_PAGE = 100
MAX_PER_PAGE = 500
LOCKED_TEXT = "Unable to destroy server: Unable to remove VM: Server is currently locked"
FAULT_TEXTS = {
    400: "Bad request.",
    401: "Invalid API token.",
    403: "Unauthorized IP address.",
    404: "Not found.",
    429: "Rate limit exceeded.",
    500: "Internal server error.",
    502: "Bad gateway.",
    503: "Service unavailable.",
    504: "Gateway timeout.",
}
OS_NAMES = {2136: "Debian 12 x64 (bookworm)", 2284: "Ubuntu 24.04 LTS x64", 501: "Windows 2022 Standard x64"}


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    at: float  # time.monotonic()
    status: int


@dataclass
class _Fault:
    status: int
    message: str


@dataclass
class _EmulatedInstance:
    data: dict[str, Any]
    created_at: float
    script_id: str | None
    user_data: bytes | None
    reads: int = 0
    reads_active: int = 0
    booted: bool = False


@dataclass
class VultrEmulator:
    """The emulated API; serve :attr:`app` (routes under ``/v2``) and point a client at ``http://HOST:PORT/v2``."""

    api_key: str = "emulator-key"
    base_url: str = ""  # for the tests' convenience: set it once the app is served
    polls_until_active: int | None = 1
    seconds_until_active: float | None = None
    polls_until_ok: int = 1
    rate_limit: int | None = 30  # requests per second; None: no limit
    locked_deletes: bool = False  # DELETE while server_status is none/locked answers 500 "locked", as Vultr may
    on_boot: BootHook | None = None
    requests: list[SeenRequest] = field(default_factory=list)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, _EmulatedInstance] = field(default_factory=dict)
    _faults: deque[_Fault] = field(default_factory=deque)
    _accepted: deque[float] = field(default_factory=deque)
    _ips: Iterator[int] = field(default_factory=lambda: itertools.count(10))
    app: web.Application = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.app = web.Application(middlewares=[self._middleware])
        self.app.router.add_post("/v2/startup-scripts", self._create_script)
        self.app.router.add_get("/v2/startup-scripts", self._list_scripts)
        self.app.router.add_get("/v2/startup-scripts/{id}", self._get_script)
        self.app.router.add_delete("/v2/startup-scripts/{id}", self._delete_script)
        self.app.router.add_post("/v2/instances", self._create_instance)
        self.app.router.add_get("/v2/instances", self._list_instances)
        self.app.router.add_get("/v2/instances/{id}", self._get_instance)
        self.app.router.add_get("/v2/instances/{id}/user-data", self._get_user_data)
        self.app.router.add_delete("/v2/instances/{id}", self._delete_instance)

    # ------------------------------------------------------------------------------------------ test controls

    def fail_next(self, *statuses: int, message: str | None = None) -> None:
        """Answer the next requests (any endpoint) with these statuses, in order, before serving normally."""
        for status in statuses:
            self._faults.append(_Fault(status, message or FAULT_TEXTS.get(status, f"HTTP {status}")))

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests were seen, optionally only this method and/or this path (e.g. ``/v2/instances``)."""
        return sum(
            1 for seen in self.requests if (method is None or seen.method == method) and (path in (None, seen.path))
        )

    def statuses(self, method: str | None = None, path: str | None = None) -> list[int]:
        return [
            seen.status
            for seen in self.requests
            if (method is None or seen.method == method) and (path is None or seen.path == path)
        ]

    def user_data_of(self, instance_id: str) -> bytes | None:
        return self.instances[instance_id].user_data

    # ------------------------------------------------------------------------------------------ plumbing

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        now = time.monotonic()
        response = await self._answer(request, handler, now)
        self.requests.append(SeenRequest(request.method, request.path, dict(request.query), now, response.status))
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], now: float
    ) -> web.StreamResponse:
        if self.rate_limit is not None:
            while self._accepted and now - self._accepted[0] >= 1.0:
                self._accepted.popleft()
            if len(self._accepted) >= self.rate_limit:
                return _error(429, "Rate limit exceeded.")
            self._accepted.append(now)
        if self._faults:
            fault = self._faults.popleft()
            return _error(fault.status, fault.message)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API token.")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "Not found.")
        except web.HTTPMethodNotAllowed:
            return _error(405, "Method not allowed.")

    # ------------------------------------------------------------------------------------------ startup scripts

    async def _create_script(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        name, script, kind = body.get("name"), body.get("script"), body.get("type", "boot")
        if not isinstance(name, str) or not name:
            return _error(400, "Missing required field: name")
        if not isinstance(script, str) or not script:
            return _error(400, "Missing required field: script")
        if _b64decode(script) is None:
            return _error(400, "Invalid script: it must be base64 encoded")
        if kind not in ("boot", "pxe"):
            return _error(400, "Invalid script type: use boot or pxe")
        stamp = _now_text()
        record = {
            "id": str(uuid.uuid4()),
            "date_created": stamp,
            "date_modified": stamp,
            "name": name,
            "type": kind,
            "script": script,
        }
        self.scripts[record["id"]] = record
        return _json(201, {"startup_script": record})

    async def _list_scripts(self, request: web.Request) -> web.Response:
        listed = [{k: v for k, v in script.items() if k != "script"} for script in self.scripts.values()]
        return _page(request, "startup_scripts", listed)

    async def _get_script(self, request: web.Request) -> web.Response:
        script = self.scripts.get(request.match_info["id"])
        if script is None:
            return _error(404, "Invalid startup script id")
        return _json(200, {"startup_script": script})

    async def _delete_script(self, request: web.Request) -> web.Response:
        if self.scripts.pop(request.match_info["id"], None) is None:
            return _error(404, "Invalid startup script id")
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------------ instances

    async def _create_instance(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        problem = self._check_create(body)
        if problem:
            return _error(400, f"Server add failed: {problem}")
        user_data = _b64decode(body["user_data"]) if body.get("user_data") is not None else None
        os_id = body.get("os_id")
        data: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "os": OS_NAMES.get(os_id, "Custom") if isinstance(os_id, int) else "Custom",
            "ram": 1024,
            "disk": 0,
            "main_ip": "0.0.0.0",
            "vcpu_count": 1,
            "region": body["region"],
            "plan": body["plan"],
            "date_created": _now_text(),
            "status": "pending",
            "allowed_bandwidth": 1,
            "netmask_v4": "",
            "gateway_v4": "0.0.0.0",
            "power_status": "running",
            "server_status": "none",
            "v6_network": "",
            "v6_main_ip": "",
            "v6_network_size": 0,
            "label": body.get("label") or "",
            "internal_ip": "",
            "kvm": "",
            "hostname": body.get("hostname") or body.get("label") or "vultr.guest",
            "tag": "",
            "tags": list(body.get("tags") or []),
            "os_id": os_id if isinstance(os_id, int) else 159,
            "app_id": body.get("app_id") or 0,
            "image_id": body.get("image_id") or "",
            "firewall_group_id": body.get("firewall_group_id") or "",
            "features": ["ipv6"] if body.get("enable_ipv6") else [],
            "user_scheme": body.get("user_scheme") or "root",
        }
        self.instances[data["id"]] = _EmulatedInstance(
            data=data, created_at=time.monotonic(), script_id=body.get("script_id"), user_data=user_data
        )
        return _json(202, {"instance": {**data, "default_password": "Emul4tor!" + data["id"][:8]}})

    def _check_create(self, body: dict[str, Any]) -> str | None:
        for name in ("region", "plan"):
            if not isinstance(body.get(name), str) or not body[name]:
                return f"missing required field {name}"
        sources = [name for name in IMAGE_SOURCES if body.get(name) not in (None, "", 0)]
        if len(sources) != 1:
            return f"exactly one of {', '.join(IMAGE_SOURCES)} is required (got {len(sources)})"
        for name in ("os_id", "app_id"):
            if body.get(name) is not None and (not isinstance(body[name], int) or isinstance(body[name], bool)):
                return f"{name} must be an integer"
        tags = body.get("tags")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            return "tags must be a list of strings"
        for name in ("label", "hostname", "script_id"):
            if body.get(name) is not None and not isinstance(body[name], str):
                return f"{name} must be a string"
        if body.get("script_id") and body["script_id"] not in self.scripts:
            return "invalid startup script id"
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or _b64decode(user_data) is None):
            return "user_data must be a base64 encoded string"
        if body.get("backups") is not None and body["backups"] not in ("enabled", "disabled"):
            return "backups must be enabled or disabled"
        return None

    async def _advance(self, instance: _EmulatedInstance, *, read: bool) -> None:
        """Move an instance along its life: pending -> active (boot hook) -> ok."""
        data = instance.data
        if read:
            instance.reads += 1
        if data["status"] == "pending":
            by_polls = self.polls_until_active is not None and instance.reads >= self.polls_until_active
            by_time = (
                self.seconds_until_active is not None
                and time.monotonic() - instance.created_at >= self.seconds_until_active
            )
            if not (by_polls or by_time):
                return
            octet = next(self._ips)
            data.update(
                status="active",
                server_status="installingbooting",
                main_ip=f"192.0.2.{octet % 250 + 1}",
                netmask_v4="255.255.255.0",
                gateway_v4="192.0.2.254",
                disk=25,
            )
            await self._boot(instance)
            return
        if data["server_status"] == "installingbooting" and read:
            instance.reads_active += 1
            if instance.reads_active >= self.polls_until_ok:
                data["server_status"] = "ok"

    async def _boot(self, instance: _EmulatedInstance) -> None:
        if instance.booted:
            return
        instance.booted = True
        if self.on_boot is None or (instance.script_id is None and instance.user_data is None):
            return
        script_text = None
        if instance.script_id is not None and instance.script_id in self.scripts:
            decoded = _b64decode(self.scripts[instance.script_id]["script"]) or b""
            script_text = decoded.decode("utf-8", errors="replace")
        result = self.on_boot(dict(instance.data), script_text)
        if inspect.isawaitable(result):
            await result

    async def _list_instances(self, request: web.Request) -> web.Response:
        query = request.query
        for instance in self.instances.values():
            await self._advance(instance, read=False)
        listed = [
            instance.data
            for instance in self.instances.values()
            if ("label" not in query or instance.data["label"] == query["label"])
            and ("tag" not in query or query["tag"] in instance.data["tags"])
            and ("region" not in query or instance.data["region"] == query["region"])
            and ("main_ip" not in query or instance.data["main_ip"] == query["main_ip"])
        ]
        return _page(request, "instances", listed)

    async def _get_instance(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return _error(404, "Invalid instance-id")
        await self._advance(instance, read=True)
        return _json(200, {"instance": instance.data})

    async def _get_user_data(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return _error(404, "Invalid instance-id")
        encoded = base64.b64encode(instance.user_data or b"").decode("ascii")
        return _json(200, {"user_data": {"data": encoded}})

    async def _delete_instance(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return _error(404, "Invalid instance-id")
        await self._advance(instance, read=False)
        if self.locked_deletes and instance.data["server_status"] in ("none", "locked"):
            return _error(500, LOCKED_TEXT)
        del self.instances[request.match_info["id"]]
        return web.Response(status=204)


# ------------------------------------------------------------------------------------------------ helpers


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json(status, {"error": message, "status": status})


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_type != "application/json":
        return _error(400, "Invalid Content-Type: application/json is required.")
    try:
        body = json.loads(await request.text())
    except ValueError:
        return _error(400, "Invalid JSON body.")
    if not isinstance(body, dict):
        return _error(400, "The JSON body must be an object.")
    return body


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _now_text() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode("ascii").rstrip("=")


def _decode_cursor(cursor: str) -> int | None:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        offset = decoded["offset"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return offset if isinstance(offset, int) and offset >= 0 else None


def _page(request: web.Request, key: str, items: list[dict[str, Any]]) -> web.Response:
    raw_per_page = request.query.get("per_page", str(DEFAULT_PER_PAGE))
    if not raw_per_page.isdigit() or not 1 <= int(raw_per_page) <= MAX_PER_PAGE:
        return _error(400, f"per_page must be between 1 and {MAX_PER_PAGE}.")
    per_page = int(raw_per_page)
    offset = 0
    if request.query.get("cursor"):
        decoded = _decode_cursor(request.query["cursor"])
        if decoded is None:
            return _error(400, "Invalid cursor.")
        offset = decoded
    page = items[offset : offset + per_page]
    following = offset + per_page
    links = {
        "next": _encode_cursor(following) if following < len(items) else "",
        "prev": _encode_cursor(max(0, offset - per_page)) if offset > 0 else "",
    }
    return _json(200, {key: page, "meta": {"total": len(items), "links": links}})
