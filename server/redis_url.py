"""Redis clients from URLs, for the hub's Redis store (and, later, its backplane).

Accepted forms (anything else is a ``ValueError`` naming what is wrong):

    redis://[[user]:password@]host[:port][/db]          plain TCP (port 6379, db 0 by default)
    rediss://[[user]:password@]host[:port][/db]         the same over TLS
    redis+sentinel://[[user:]password@]host[:port][,host[:port]...]/service[/db]
                                                        the current master of ``service``, as Sentinel says
                                                        (sentinel port 26379 by default)

In the Sentinel form a lone ``password@`` is a password (there is no use for a lone user name); it is sent to the
master, not to the sentinels, which usually run without one (pass ``sentinel_kwargs={"password": ...}`` if yours
do not). Clients never decode replies: the store keeps bytes. ``describe(url)`` is the URL with any password
masked, for logs; ``endpoint(client)`` says where a client points, for error messages.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

SCHEMES = ("redis", "rediss", "redis+sentinel")
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379
_FORMS = "redis://[user:pass@]host:port/db, rediss://... or redis+sentinel://[pass@]host:port[,host:port]/service[/db]"


class SentinelRedis(redis.asyncio.Redis):
    """A client of the master that Sentinel names; closing it also closes its connections to the sentinels."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                sentinel, self.sentinel_manager = self.sentinel_manager, None
                await sentinel.aclose()


def redis_from_url(url: str, **kwargs: Any) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` (see the module docstring); ``kwargs`` go to the connection pool.

    No connection is made yet: a server that is down shows at the first command.

    Raises:
        ValueError: the URL is not one of the accepted forms, or asks for decoded replies.
    """
    if kwargs.get("decode_responses"):
        raise ValueError("redis clients of the hub never decode replies (decode_responses must stay False)")
    kwargs["decode_responses"] = False
    # After Redis restarts, every pooled connection is dead but looks open; the first command on each fails
    # before reaching the server. A few quick retries on a fresh connection hide that blink.
    kwargs.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 3))
    kwargs.setdefault("retry_on_error", [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError])
    scheme = _scheme(url)
    if scheme == "redis+sentinel":
        return _sentinel_client(url, kwargs)
    _check_plain(url)
    return redis.asyncio.Redis.from_url(url, **kwargs)


def describe(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query option) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:***"
        elif scheme.lower() == "redis+sentinel" or not user:
            userinfo = "***"  # a lone word before @ is the password in the sentinel form
        netloc = f"{userinfo}@{hosts}"
    tail = re.sub(r"(?i)((?:^|[?&])(?:sentinel_)?password=)[^&#]*", r"\1***", tail)
    return f"{scheme}://{netloc}{slash}{tail}"


def endpoint(client: redis.asyncio.Redis) -> str:
    """Where ``client`` points, without credentials: ``host:port``, or the sentinel service and sentinels."""
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        sentinels = ",".join(_address(s.connection_pool.connection_kwargs) for s in pool.sentinel_manager.sentinels)
        return f"sentinel service {pool.service_name!r} via {sentinels}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return _address(kwargs)


def _address(kwargs: dict[str, Any]) -> str:
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{kwargs.get('port', DEFAULT_PORT)}"


def _scheme(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"not a redis URL: {describe(str(url))!r} (expected {_FORMS})")
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported redis URL scheme {scheme!r} in {describe(url)!r} (expected {_FORMS})")
    return scheme


def _check_plain(url: str) -> None:
    """Check a ``redis://`` or ``rediss://`` URL here, so its mistakes read the same whatever redis-py says."""
    shown = describe(url)
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in redis URL {shown!r}") from None
    if not parts.hostname:
        raise ValueError(f"no host in redis URL {shown!r}")
    if port == 0:
        raise ValueError(f"bad port in redis URL {shown!r}")
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the path of redis URL {shown!r} must be a database number, not {path!r}")
    if parts.fragment:
        raise ValueError(f"redis URL {shown!r} must not have a fragment")
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "decode_responses" and value.lower() not in ("", "0", "false", "no", "n", "f"):
            raise ValueError(f"redis URL {shown!r}: the hub never decodes replies (drop decode_responses)")


def _sentinel_client(url: str, kwargs: dict[str, Any]) -> SentinelRedis:
    shown = describe(url)
    rest = url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ValueError(f"sentinel URL {shown!r} takes no query or fragment (pass options as arguments)")
    netloc, _, path = rest.partition("/")
    username: str | None = None
    password: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        if colon:
            username, password = unquote(user) or None, unquote(secret)
        else:
            password = unquote(user)
    sentinels = [_host_port(item, shown) for item in netloc.split(",")]
    segments = path.split("/") if path else []
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise ValueError(f"sentinel URL {shown!r} names no service: expected .../SERVICE_NAME[/DB]")
    if len(segments) > 2:
        raise ValueError(f"sentinel URL {shown!r} has too many path parts: expected .../SERVICE_NAME[/DB]")
    service = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"sentinel URL {shown!r}: the database must be a number, not {segments[1]!r}")
        db = int(segments[1])
    if username is not None:
        kwargs.setdefault("username", username)
    if password is not None:
        kwargs.setdefault("password", password)
    kwargs.setdefault("db", db)
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None)
    if sentinel_kwargs is None:
        sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinel = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    client: SentinelRedis = sentinel.master_for(service, redis_class=SentinelRedis, **kwargs)
    client.sentinel_manager = sentinel
    return client


def _host_port(item: str, shown: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [ipv6]:port
        host, bracket, port_text = item[1:].partition("]")
        if not bracket or (port_text and not port_text.startswith(":")):
            raise ValueError(f"bad sentinel address {item!r} in {shown!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"sentinel URL {shown!r} has an empty sentinel host (expected host:port[,host:port])")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port {port_text!r} in {shown!r}")
    return host, int(port_text)
