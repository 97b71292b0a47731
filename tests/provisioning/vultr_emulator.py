"""A local emulator of the Vultr API v2 endpoints provisioning uses (startup scripts and instances).

Follows ``/work/shared/reference/vultr-api-v2.md``: Bearer auth (401 ``Invalid API token.``), JSON bodies only
(400 without ``Content-Type: application/json``), 201/202/204 success codes, ``{"error", "status"}`` error bodies,
429 above ``rate_limit`` requests per second, opaque cursors with ``per_page`` (max 500), ``meta.links.next``.

Instances are created ``pending`` (``main_ip`` 0.0.0.0, ``server_status`` none) and become ``active``/``running``
with a main IP after ``polls_until_active`` reads of that instance, or once ``seconds_until_active`` (or a draw
from ``pending_seconds``) have passed, whichever comes first; ``server_status`` is then ``locked`` until
``locked_seconds`` after the create (``windows_locked_seconds`` for Windows), then ``installingbooting``, then
``ok`` after ``polls_until_ok`` more reads. At that "first boot", ``on_boot(GuestBoot)`` is called once (awaited
when it returns an awaitable) with what the guest OS would run: see :class:`GuestBoot`.

Times are API seconds: ``time_factor`` real seconds each (tests compress time; the client's ``time_scale`` must
match). :meth:`VultrEmulator.realistic` turns every behaviour below on; each cites its source where it is coded.

Tests steer it with :meth:`VultrEmulator.fail_next` (a queue of statuses to answer next, e.g. 429, 500) and
read :attr:`VultrEmulator.requests` (every request seen, with its time and answer status).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import itertools
import json
import random
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

TagFilter = Literal["honoured", "ignored", "legacy_only"]

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
NOT_FOUND_TEXT = "instance not found"  # TF #462 (just created) and TF #688 (deleted): {"error":..., "status":404}
OS_NAMES = {
    2136: "Debian 12 x64 (bookworm)",
    2284: "Ubuntu 24.04 LTS x64",
    501: "Windows 2022 Standard x64",
    521: "Windows Core 2022 Standard x64",
    1765: "Windows 2022 Datacenter x64",
}
# Where Vultr puts a boot script and how it runs it ("Vultr startup scripts quickstart guide", 2020): Linux saves
# it as /tmp/firstboot.exec and runs it once with bash as root; Windows saves it as C:\image\firstboot.cmd and
# runs it once with cmd.exe as Administrator, output in C:\image\firstboot.log.
LINUX_BOOT = ("/tmp/firstboot.exec", ("/bin/bash", "/tmp/firstboot.exec"), "/tmp/firstboot.log")
WINDOWS_BOOT = (
    "C:\\image\\firstboot.cmd",
    ("cmd.exe", "/c", "C:\\image\\firstboot.cmd"),
    "C:\\image\\firstboot.log",
)
# A 502/504 from Vultr's front end is nginx's own HTML page, not JSON: ANS #113 shows `server: nginx` on the
# API's answers, and nginx's stock error pages are HTML.
NGINX_PAGE = "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1>"
NGINX_PAGE += "</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"


@dataclass(frozen=True)
class GuestBoot:
    """What an instance's OS runs at its first boot, handed to the emulator's ``on_boot`` hook.

    Attributes:
        instance: the instance object as the API shows it at that moment.
        os: ``linux`` or ``windows`` (from the image).
        source: ``startup_script`` or ``user_data``.
        path: where the guest saved the file it runs (``C:\\image\\firstboot.cmd`` for a Windows boot script).
        command: how the guest runs it (``cmd.exe /c C:\\image\\firstboot.cmd``; bash; ``cloud-init``).
        log_path: where its output goes.
        content: the file's bytes exactly as uploaded (base64-decoded).
    """

    instance: dict[str, Any]
    os: str
    source: str
    path: str
    command: tuple[str, ...]
    log_path: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


BootHook = Callable[[GuestBoot], Awaitable[None] | None]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str  # without the query string
    query: dict[str, str]
    at: float  # the emulator's clock (time.monotonic() unless a test gives another)
    status: int


@dataclass
class _Fault:
    status: int
    message: str
    retry_after: str | None = None
    html: bool = False


@dataclass
class _EmulatedInstance:
    data: dict[str, Any]
    created_at: float
    script_id: str | None
    user_data: bytes | None
    os: str = "linux"
    active_after: float | None = None  # API seconds after the create (None: by polls only)
    reads: int = 0
    reads_active: int = 0
    booted: bool = False
    unlisted: int = 0  # list calls that still leave it out (``list_lags_creates``)


@dataclass
class VultrEmulator:
    """The emulated API; serve :attr:`app` (routes under ``/v2``) and point a client at ``http://HOST:PORT/v2``."""

    api_key: str = "emulator-key"
    base_url: str = ""  # for the tests' convenience: set it once the app is served
    polls_until_active: int | None = 1
    seconds_until_active: float | None = None
    polls_until_ok: int = 1
    # Pending for a draw from this range of seconds (30-90 s: the reference sheet §3 and §7.3, from ANS #119 "1/2
    # min per instance" and an operator's ~60 s note; longer for Windows in hiveclip's 15 min allowance).
    pending_seconds: tuple[float, float] | None = None
    seed: int = 16
    # GET /instances/{id} answers 404 "instance not found" for this long after the 202 (TF #462: Terraform
    # waits 10 s then tolerates 60 not-found checks; the reporter needed 60 s).
    not_found_seconds: float = 0.0
    rate_limit: int | None = 30  # requests per second per source IP (SPEC intro); None: no limit
    retry_after: int | None = 1  # the 429's Retry-After seconds (the newest spec documents the header)
    # DELETE while server_status is none/locked answers 500 "Unable to destroy server: ... Server is currently
    # locked" (ANS #113, 2024, and PR #89: the state to wait out is server_status in none/locked).
    locked_deletes: bool = False
    locked_seconds: float = 0.0  # active but server_status "locked" until this long after the create
    windows_locked_seconds: float | None = None  # the same for Windows ("minutes, more for Windows": issue 16)
    # The deprecated `tag` list filter (SPEC marks it deprecated; govultr v2.16.0 deprecated `tag`, v3.10.0
    # removed it): honoured against `tags`, ignored (every instance listed), or matched only against the old
    # singular `tag` field, which instances created with `tags` have as "" (VM 2024 fixture: `"tag": ""`).
    # Vultr's own MCP server (vultr/vultr-mcp, 2025-26) treats `tag` as a filter the API applies: "honoured" is
    # today's likeliest behaviour, the other two stand for older or other deployments (reference §10.2).
    tag_filter: TagFilter = "honoured"
    # Error bodies carry keys beyond error/status: clients must read `error` and ignore the rest (TF's
    # utility.go reads exactly those two; nothing promises there are no others).
    error_extras: bool = False
    # Vultr's Windows images are not shown to run cloudbase-init (reference §4, §7.1): user_data on Windows
    # runs nothing unless this switch says the image has it.
    cloudbase_init: bool = False
    # Real seconds per API second (tests compress pending, locks, windows; Retry-After stays in API seconds).
    time_factor: float = 1.0
    clock: Callable[[], float] = time.monotonic
    # A deleted (or unknown) instance: 404 "Invalid instance-id" (dstack's client), or, as in 2021, 400
    # {"error":"invalid instance ID","status":400} (TF #177).
    gone_as_400: bool = False
    # The status a startup-script create answers: 201 per the SPEC; 200 is accepted by clients since some
    # Vultr creates answer 200 (issue 16 lists it among the real API's answers).
    script_create_status: int = 201
    # Listings are eventually consistent: a new instance is left out of this many list calls after its create
    # (kubermatic/machine-controller issue #1704, "tags are only eventually consistent in Vultr", and PR #1706),
    # and a deleted one stays listed for this many more (no source shows that side: assumed by symmetry, reference
    # §10.1). GET by id finds both as they really are.
    list_lags_deletes: int = 0
    list_lags_creates: int = 0
    # A test fault, not a modelled behaviour (no source shows it): DELETE answers 204 and the instance stays,
    # standing for any instance a teardown cannot get rid of.
    instances_survive_deletes: bool = False
    _ghosts: dict[str, list[Any]] = field(default_factory=dict)
    snapshots: dict[str, str] = field(default_factory=dict)  # snapshot id -> the OS name it holds
    on_boot: BootHook | None = None
    boots: list[GuestBoot] = field(default_factory=list)  # every first boot that ran something of ours
    requests: list[SeenRequest] = field(default_factory=list)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    instances: dict[str, _EmulatedInstance] = field(default_factory=dict)
    _faults: deque[_Fault] = field(default_factory=deque)
    _accepted: deque[float] = field(default_factory=deque)
    _ips: Iterator[int] = field(default_factory=lambda: itertools.count(10))
    _cursors: dict[str, int] = field(default_factory=dict)
    _random: random.Random = field(init=False, repr=False)
    _epoch: float = field(init=False, repr=False)
    app: web.Application = field(init=False, repr=False)

    @classmethod
    def realistic(cls, time_factor: float, **options: Any) -> VultrEmulator:
        """Every behaviour of the real API on, with its time compressed by ``time_factor``."""
        settings: dict[str, Any] = {
            "polls_until_active": None,
            "pending_seconds": (30.0, 90.0),
            "not_found_seconds": 20.0,
            "locked_deletes": True,
            "locked_seconds": 180.0,
            "windows_locked_seconds": 900.0,
            "polls_until_ok": 3,
            "tag_filter": "ignored",
            "error_extras": True,
            "list_lags_deletes": 1,
            "list_lags_creates": 1,
            "time_factor": time_factor,
            **options,
        }
        return cls(**settings)

    def now(self) -> float:
        """API seconds since the emulator started."""
        return (self.clock() - self._epoch) / self.time_factor

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._epoch = self.clock()
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

    def fail_next(
        self, *statuses: int, message: str | None = None, retry_after: str | None = None, html: bool = False
    ) -> None:
        """Answer the next requests (any endpoint) with these statuses, in order, before serving normally.

        ``retry_after`` sets a ``Retry-After`` header; ``html`` answers nginx's HTML page instead of JSON.
        """
        for status in statuses:
            text = message or FAULT_TEXTS.get(status, f"HTTP {status}")
            self._faults.append(_Fault(status, text, retry_after, html))

    def server_status(self, instance_id: str) -> str:
        instance = self.instances[instance_id]
        self._advance_by_time(instance)
        return str(instance.data["server_status"])

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
        now = self.clock()
        response = await self._answer(request, handler, now)
        self.requests.append(SeenRequest(request.method, request.path, dict(request.query), now, response.status))
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]], now: float
    ) -> web.StreamResponse:
        if self.rate_limit is not None:
            while self._accepted and now - self._accepted[0] >= 1.0:  # per real second: it is about load
                self._accepted.popleft()
            if len(self._accepted) >= self.rate_limit:
                retry = str(self.retry_after) if self.retry_after is not None else None
                return self._error(429, "Rate limit exceeded.", retry_after=retry)
            self._accepted.append(now)
        if self._faults:
            fault = self._faults.popleft()
            if fault.html:
                return _nginx_page(fault.status)
            return self._error(fault.status, fault.message, retry_after=fault.retry_after)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "Invalid API token.")
        try:
            response = await handler(request)
        except web.HTTPNotFound:
            return self._error(404, "Not found.")
        except web.HTTPMethodNotAllowed:
            return self._error(405, "Method not allowed.")
        if self.error_extras and response.status >= 400 and isinstance(response, web.Response) and response.text:
            body = json.loads(response.text)
            return self._error(response.status, str(body.get("error", "")))
        return response

    def _error(self, status: int, message: str, *, retry_after: str | None = None) -> web.Response:
        body: dict[str, Any] = {"error": message, "status": status}
        if self.error_extras:
            body.update(request_id=secrets.token_hex(8), details={"hint": "emulated extra keys"})
        response = _json(status, body)
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

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
        return _json(self.script_create_status, {"startup_script": record})

    async def _list_scripts(self, request: web.Request) -> web.Response:
        listed = [{k: v for k, v in script.items() if k != "script"} for script in self.scripts.values()]
        return _page(request, "startup_scripts", listed, self._cursors)

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
        if isinstance(os_id, int):
            os_name = OS_NAMES.get(os_id, "Custom")
        elif body.get("snapshot_id"):
            os_name = self.snapshots[body["snapshot_id"]]
            os_id = 164  # "Snapshot" in the /v2/os listing (reference §5)
        elif body.get("app_id") or body.get("image_id"):
            os_name, os_id = "Application", 186  # a Marketplace app (reference §5)
        else:
            os_name = "Custom"
        data: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "os": os_name,
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
            "tag": body.get("tag") if isinstance(body.get("tag"), str) else "",  # the deprecated singular tag
            "tags": list(body.get("tags") or []),
            "os_id": os_id if isinstance(os_id, int) else 159,
            "app_id": body.get("app_id") or 0,
            "image_id": body.get("image_id") or "",
            "snapshot_id": body.get("snapshot_id") or "",
            "backups": body.get("backups") or "",  # echoed as sent (ANS #131's instance shows "backups")
            "firewall_group_id": body.get("firewall_group_id") or "",
            "features": ["ipv6"] if body.get("enable_ipv6") else [],
            "user_scheme": body.get("user_scheme") or "root",
        }
        active_after = self.seconds_until_active
        if self.pending_seconds is not None:
            low, high = self.pending_seconds
            drawn = self._random.uniform(low, high)
            active_after = drawn if active_after is None else min(active_after, drawn)
        self.instances[data["id"]] = _EmulatedInstance(
            data=data,
            created_at=self.now(),
            script_id=body.get("script_id"),
            user_data=user_data,
            os="windows" if "windows" in os_name.lower() else "linux",
            active_after=active_after,
            unlisted=self.list_lags_creates,
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
        if body.get("snapshot_id") and body["snapshot_id"] not in self.snapshots:
            return "invalid snapshot id"
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or _b64decode(user_data) is None):
            return "user_data must be a base64 encoded string"
        if body.get("backups") is not None and body["backups"] not in ("enabled", "disabled"):
            return "backups must be enabled or disabled"
        return None

    def _locked_until(self, instance: _EmulatedInstance) -> float:
        seconds = self.locked_seconds
        if instance.os == "windows" and self.windows_locked_seconds is not None:
            seconds = self.windows_locked_seconds
        return instance.created_at + seconds

    def _advance_by_time(self, instance: _EmulatedInstance) -> None:
        data = instance.data
        if data["server_status"] == "locked" and self.now() >= self._locked_until(instance):
            data["server_status"] = "installingbooting"

    async def _advance(self, instance: _EmulatedInstance, *, read: bool) -> None:
        """Move an instance along its life: pending -> active (boot hook; locked, then installing) -> ok."""
        data = instance.data
        if read:
            instance.reads += 1
        self._advance_by_time(instance)
        if data["status"] == "pending":
            by_polls = self.polls_until_active is not None and instance.reads >= self.polls_until_active
            by_time = instance.active_after is not None and self.now() - instance.created_at >= instance.active_after
            if not (by_polls or by_time):
                return
            octet = next(self._ips)
            data.update(
                status="active",
                server_status="locked" if self.now() < self._locked_until(instance) else "installingbooting",
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

    def guest_boot(self, instance: _EmulatedInstance) -> GuestBoot | None:
        """What the guest would run at first boot, or None when it runs nothing of ours."""
        if instance.script_id is not None and instance.script_id in self.scripts:
            content = _b64decode(self.scripts[instance.script_id]["script"]) or b""
            path, command, log_path = WINDOWS_BOOT if instance.os == "windows" else LINUX_BOOT
            return GuestBoot(dict(instance.data), instance.os, "startup_script", path, command, log_path, content)
        if instance.user_data is not None:
            if instance.os == "windows" and not self.cloudbase_init:
                return None  # nothing on Vultr's Windows images is shown to read user-data (reference §4)
            # Linux: cloud-init's Vultr datasource reads user-data (canonical/cloud-init DataSourceVultr.py)
            runner = "cloudbase-init" if instance.os == "windows" else "cloud-init"
            return GuestBoot(dict(instance.data), instance.os, "user_data", "", (runner,), "", instance.user_data)
        return None

    async def _boot(self, instance: _EmulatedInstance) -> None:
        if instance.booted:
            return
        instance.booted = True
        boot = self.guest_boot(instance)
        if boot is not None:
            self.boots.append(boot)
        if self.on_boot is None or boot is None:
            return
        result = self.on_boot(boot)
        if inspect.isawaitable(result):
            await result

    async def _list_instances(self, request: web.Request) -> web.Response:
        query = request.query
        for instance in self.instances.values():
            await self._advance(instance, read=False)
        ghosts = [ghost[0] for ghost in self._ghosts.values() if ghost[1] > 0]
        for ghost in self._ghosts.values():
            ghost[1] -= 1
        present = [instance.data for instance in self.instances.values() if instance.unlisted <= 0]
        for instance in self.instances.values():
            instance.unlisted -= 1
        listed = [
            data
            for data in present + ghosts
            if ("label" not in query or data["label"] == query["label"])
            and ("tag" not in query or self._tag_matches(data, query["tag"]))
            and ("region" not in query or data["region"] == query["region"])
            and ("main_ip" not in query or data["main_ip"] == query["main_ip"])
        ]
        return _page(request, "instances", listed, self._cursors)

    def _gone(self) -> web.Response:
        return _error(400, "invalid instance ID") if self.gone_as_400 else _error(404, "Invalid instance-id")

    def _tag_matches(self, data: dict[str, Any], tag: str) -> bool:
        if self.tag_filter == "ignored":
            return True
        if self.tag_filter == "legacy_only":
            return bool(data["tag"] == tag)
        return tag in data["tags"]

    def _hidden(self, instance: _EmulatedInstance) -> bool:
        """Just created: GET answers 404 "instance not found" for a while (TF #462)."""
        return self.now() - instance.created_at < self.not_found_seconds

    async def _get_instance(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return self._gone()
        if self._hidden(instance):
            return _error(404, NOT_FOUND_TEXT)
        await self._advance(instance, read=True)
        return _json(200, {"instance": instance.data})

    async def _get_user_data(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return self._gone()
        encoded = base64.b64encode(instance.user_data or b"").decode("ascii")
        return _json(200, {"user_data": {"data": encoded}})

    async def _delete_instance(self, request: web.Request) -> web.Response:
        instance = self.instances.get(request.match_info["id"])
        if instance is None:
            return self._gone()
        # A DELETE inside the not-found window is not modelled as 404: nothing shows what Vultr does then.
        await self._advance(instance, read=False)
        if self.locked_deletes and instance.data["server_status"] in ("none", "locked"):
            return _error(500, LOCKED_TEXT)
        if self.instances_survive_deletes:
            return web.Response(status=204)
        del self.instances[request.match_info["id"]]
        if self.list_lags_deletes:
            self._ghosts[instance.data["id"]] = [dict(instance.data), self.list_lags_deletes]
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


def _new_cursor(cursors: dict[str, int] | None, offset: int) -> str:
    token = secrets.token_urlsafe(12)
    if cursors is not None:
        cursors[token] = offset
    return token


def _nginx_page(status: int) -> web.Response:
    reasons = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Temporarily Unavailable"}
    reason = reasons.get(status, "Gateway Time-out")
    return web.Response(status=status, text=NGINX_PAGE.format(status=status, reason=reason), content_type="text/html")


def _page(
    request: web.Request, key: str, items: list[dict[str, Any]], cursors: dict[str, int] | None = None
) -> web.Response:
    raw_per_page = request.query.get("per_page", str(DEFAULT_PER_PAGE))
    if not raw_per_page.isdigit() or not 1 <= int(raw_per_page) <= MAX_PER_PAGE:
        return _error(400, f"per_page must be between 1 and {MAX_PER_PAGE}.")
    per_page = int(raw_per_page)
    offset = 0
    if request.query.get("cursor"):
        # Opaque (SPEC: "cursor" is only ever a value the API handed out): random tokens remembered here
        decoded = cursors.get(request.query["cursor"]) if cursors is not None else None
        if decoded is None:
            return _error(400, "Invalid cursor.")
        offset = decoded
    page = items[offset : offset + per_page]
    following = offset + per_page
    links = {
        "next": _new_cursor(cursors, following) if following < len(items) else "",
        "prev": _new_cursor(cursors, max(0, offset - per_page)) if offset > 0 else "",
    }
    return _json(200, {key: page, "meta": {"total": len(items), "links": links}})
