"""The hub's typed settings, from CLI flags and ``CRC_*`` environment variables."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocol import DEFAULT_MAX_FRAME
from protocol.orders import MAX_ORDER_TTL
from server.tls import TlsFiles


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class HubSettings:
    """Everything one hub process is configured with.

    Attributes:
        data_dir: where the database and the hub's own key live.
        dev_master_key: a master public key to enrol at start-up (``crc hub --dev``: one-person setups, demos).
        heartbeat_interval: seconds between PINGs on every session.
        dead_after: a session that sent nothing for this long is dropped (half-open sockets).
        max_skew: largest accepted clock difference for message timestamps, in seconds.
        handshake_timeout: a connection that has not authenticated after this long is dropped.
        output_limit: bytes of stdout and of stderr kept per command.
        redis_url: share store and backplane with other replicas through Redis (empty: embedded, one process).
        replica_id: this replica's name among replicas (default: host name, pid and a random suffix).
        presence_ttl: seconds a dead replica's machines stay claimed before other replicas may serve them.
        event_log_max: with Redis, each scenario's event log is trimmed to about this many newest events.
        session_rate / session_burst: messages per second one session may send on average / in a burst; beyond,
            messages are dropped with a rate_limited error (the protocol resends what matters: results, acks).
        max_pending_handshakes: connections allowed to be authenticating at once (more get HTTP 429).
        handshake_failure_limit: failed handshakes per source address per minute before it gets HTTP 429.
        drain_spread: daemons told to reconnect during a drain spread their reconnects over this many seconds.
        drain_timeout: a drain waits at most this long for daemons to leave and deliveries to finish.
        max_queued_per_machine: orders waiting for one machine beyond which submits are refused (queue_full).
        dist: folder of wheels served at ``/v1/dist/`` to machines installing the daemon (default DATA_DIR/dist).
        rest_rate, rest_burst: REST requests per second one access token may make on average, and in a burst
            (beyond: HTTP 429 ``rate_limited``). Failed sign-ins count against the source address like failed
            handshakes (``handshake_failure_limit`` per minute).
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8750
    dev_master_key: str = ""
    heartbeat_interval: float = 5.0
    dead_after: float = 20.0
    max_frame: int = DEFAULT_MAX_FRAME
    max_skew: float = 120.0
    handshake_timeout: float = 10.0
    output_limit: int = 256 * 1024
    order_ttl_max: float = MAX_ORDER_TTL  # never more: daemons refuse what they could not de-duplicate
    max_queued_per_machine: int = 10_000
    redis_url: str = ""
    replica_id: str = ""
    presence_ttl: float = 15.0
    event_log_max: int = 100_000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_rate: float = 2000.0
    session_burst: float = 5000.0
    max_pending_handshakes: int = 1000
    handshake_failure_limit: int = 30
    drain_spread: float = 5.0
    drain_timeout: float = 30.0
    max_upload_bytes: int = 512 * 1024 * 1024
    dist: Path | None = None
    rest_rate: float = 50.0
    rest_burst: float = 200.0

    @property
    def dist_dir(self) -> Path:
        return self.dist or self.data_dir / "dist"

    @property
    def tls_files(self) -> TlsFiles | None:
        """The certificate to serve: the one given, else ``DATA_DIR/tls`` when ``init-tls`` made one."""
        if self.tls_cert is not None:
            return TlsFiles(self.tls_cert, self.tls_key or self.tls_cert)
        files = TlsFiles.in_data_dir(self.data_dir)
        return files if files.exist() else None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"port must be 0-65535, not {self.port}")
        if self.heartbeat_interval <= 0 or self.dead_after <= self.heartbeat_interval:
            raise SettingsError("dead_after must be greater than heartbeat_interval, both positive")
        if not 0 < self.order_ttl_max <= MAX_ORDER_TTL:
            raise SettingsError(f"order_ttl_max must be positive and at most {MAX_ORDER_TTL:.0f} s")

    @property
    def database(self) -> Path:
        return self.data_dir / "hub.sqlite3"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "hub.key"


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def default_replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("CRC_DATA_DIR"):
        return Path(env["CRC_DATA_DIR"])
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "crc" / "hub"


def settings_from(
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: str | Path | None = None,
    dev_master_key: str = "",
    redis_url: str | None = None,
    replica_id: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    dist: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> HubSettings:
    """Combine CLI values (which win) with ``CRC_HUB_*`` environment variables and defaults."""
    env = os.environ if env is None else env
    raw_port = port if port is not None else env.get("CRC_HUB_PORT") or 8750
    try:
        port_value = int(raw_port)
    except ValueError:
        raise SettingsError(f"CRC_HUB_PORT={raw_port!r} is not a port number") from None
    return HubSettings(
        data_dir=Path(data_dir) if data_dir else default_data_dir(env),
        host=host or env.get("CRC_HUB_HOST") or "127.0.0.1",
        port=port_value,
        dev_master_key=dev_master_key,
        redis_url=redis_url or env.get("CRC_REDIS_URL", ""),
        replica_id=replica_id or env.get("CRC_REPLICA_ID") or default_replica_id(),
        event_log_max=int(_env_float(env, "CRC_EVENT_LOG_MAX", 100_000)),
        tls_cert=tls_cert,
        tls_key=tls_key,
        dist=dist or (Path(env["CRC_DIST_DIR"]) if env.get("CRC_DIST_DIR") else None),
        heartbeat_interval=_env_float(env, "CRC_HEARTBEAT_INTERVAL", 5.0),
        dead_after=_env_float(env, "CRC_DEAD_AFTER", 20.0),
        max_queued_per_machine=int(_env_float(env, "CRC_MAX_QUEUED", 10_000)),
        handshake_failure_limit=int(_env_float(env, "CRC_HANDSHAKE_FAILURE_LIMIT", 30)),
        rest_rate=_env_float(env, "CRC_REST_RATE", 50.0),
        rest_burst=_env_float(env, "CRC_REST_BURST", 200.0),
    )
