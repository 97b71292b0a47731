"""``crc hub``: run a hub, or enrol a master's public key into its data dir."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from crc_cli.logformat import LOG_FORMATS, configure_logging
from protocol import ProtocolError, PublicKey
from provisioning.dist import DistError, build_dist
from server import eventloop
from server.admin import admin_token_path, read_admin_token
from server.app import serve
from server.settings import SettingsError, default_data_dir, settings_from
from server.store import SqliteStore, StoreConflict, StoreError
from server.tls import TlsError, TlsFiles, create_self_signed

HUB_LOG_FORMAT = "%(asctime)s crc-hub %(levelname)s %(name)s: %(message)s"


def _log_format(args: argparse.Namespace) -> str:
    fmt = getattr(args, "log_format", None) or os.environ.get("CRC_LOG_FORMAT") or "text"
    return fmt if fmt in LOG_FORMATS else "text"


DevMasterKey = Callable[[str | None], tuple[str, str]]
"""``--dev``: the master key file given (or the default one) -> its public key text, and how to name it."""


def add_hub_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], *, dev_master_key: DevMasterKey | None = None
) -> None:
    hub = subparsers.add_parser("hub", help="run the hub (or manage its data dir)")
    hub.add_argument("--host", help="address to listen on (default 127.0.0.1, env CRC_HUB_HOST)")
    hub.add_argument("--port", type=int, help="port (default 8750, 0 for any free one; env CRC_HUB_PORT)")
    hub.add_argument("--data-dir", type=Path, help="database and hub key (env CRC_DATA_DIR)")
    hub.add_argument("--dev", action="store_true", help="enrol the local master key (created if missing)")
    hub.add_argument("--ready-file", type=Path, help="write the hub URL here once listening")
    hub.add_argument(
        "--redis",
        help="share state with other replicas: redis://HOST:PORT/DB, rediss://..., "
        "redis+sentinel://HOST:26379/SERVICE (env CRC_REDIS_URL)",
    )
    hub.add_argument(
        "--event-loop", choices=eventloop.LOOPS, help="asyncio (default), uvloop (faster; the 'fast' extra) or auto"
    )
    hub.add_argument("--replica-id", help="this replica's name (default: host-pid-random; env CRC_REPLICA_ID)")
    hub.add_argument("--tls-cert", type=Path, help="PEM certificate (default: DATA_DIR/tls/hub.crt if present)")
    hub.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    hub.add_argument(
        "--dist-dir", type=Path, help="wheels served to machines at /v1/dist/ (default DATA_DIR/dist; env CRC_DIST_DIR)"
    )
    hub.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,  # absent: keep the value of crc's global --log-format (or CRC_LOG_FORMAT)
        help="text (default) or json: one JSON object per log line (env CRC_LOG_FORMAT)",
    )
    hub.set_defaults(func=run_hub, dev_master_key=dev_master_key)
    actions = hub.add_subparsers(dest="hub_action")
    enrol = actions.add_parser("enroll-master", help="allow a master's public key to connect")
    enrol.add_argument("name")
    enrol.add_argument("public_key", help="ed25519:... as printed by `crc keygen` / `crc pubkey`")
    enrol.add_argument("--data-dir", type=Path, dest="enrol_data_dir", help="the hub's data dir")
    enrol.set_defaults(func=enroll_master)
    init_tls = actions.add_parser("init-tls", help="create a key and self-signed certificate; prints its pin")
    init_tls.add_argument("--name", action="append", default=[], help="DNS name of the hub (repeatable)")
    init_tls.add_argument("--ip", action="append", default=[], help="IP address of the hub (repeatable)")
    init_tls.add_argument("--data-dir", type=Path, dest="tls_data_dir", help="the hub's data dir")
    init_tls.add_argument("--force", action="store_true", help="replace an existing certificate")
    init_tls.set_defaults(func=init_tls_command)
    remove = actions.add_parser(
        "remove-master", help="remove a master: delete its scenarios (revoking their machines), close its sessions"
    )
    remove.add_argument("master_name", metavar="NAME")
    remove.add_argument("--url", default="http://127.0.0.1:8750", help="the hub's own address (loopback)")
    _admin_data_dir(remove)
    remove.set_defaults(func=admin_call, admin_path="/v1/admin/remove-master")
    dist = actions.add_parser(
        "dist", help="put the daemon wheel and its dependencies where the hub serves them to new machines"
    )
    dist.add_argument("--data-dir", type=Path, dest="dist_data_dir", help="the hub's data dir")
    dist.add_argument("--dir", type=Path, dest="dist_target", help="the folder (default DATA_DIR/dist)")
    dist.add_argument("--no-deps", action="store_true", help="only the daemon wheel; machines get the rest from PyPI")
    dist.set_defaults(func=dist_command)
    drain = actions.add_parser("drain", help="move this replica's daemons to other replicas, then stop it")
    drain.add_argument("--url", default="http://127.0.0.1:8750", help="the replica's own address (loopback)")
    _admin_data_dir(drain)
    drain.set_defaults(func=admin_call, admin_path="/v1/admin/drain")
    rebalance = actions.add_parser("rebalance", help="ask a share of this replica's daemons to reconnect")
    rebalance.add_argument("--url", default="http://127.0.0.1:8750", help="the replica's own address (loopback)")
    rebalance.add_argument("--share", type=float, default=0.5, help="0-1: how many of its daemons to move")
    _admin_data_dir(rebalance)
    rebalance.set_defaults(func=admin_call, admin_path="/v1/admin/rebalance")


def _admin_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, dest="admin_data_dir",
        help="the data dir of the hub at --url: its admin.token is the credential (env CRC_DATA_DIR)",
    )  # fmt: skip


def run_hub(args: argparse.Namespace) -> int:
    dev_key = ""
    if args.dev:
        if args.dev_master_key is None:
            print("crc hub: --dev needs the master's commands (run it as `crc hub --dev`)", file=sys.stderr)
            return 2
        dev_key, described = args.dev_master_key(args.key)
        print(f"dev mode: master key {described} is enrolled", file=sys.stderr)
    try:
        settings = settings_from(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            dev_master_key=dev_key,
            redis_url=args.redis,
            replica_id=args.replica_id,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            dist=args.dist_dir,
        )
    except SettingsError as exc:
        print(f"crc hub: {exc}", file=sys.stderr)
        return 2
    configure_logging(logging.INFO, _log_format(args), HUB_LOG_FORMAT)
    try:
        loop = eventloop.chosen(args.event_loop)
    except eventloop.EventLoopError as exc:
        print(f"crc hub: {exc}", file=sys.stderr)
        return 2
    try:
        eventloop.run(serve(settings, ready_file=args.ready_file), loop)
    except TlsError as exc:
        print(f"crc hub: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"crc hub: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0


def admin_call(args: argparse.Namespace) -> int:
    """POST to a replica's loopback-only admin endpoint, with the admin token from its data dir; print the answer."""
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    url = args.url.rstrip("/") + args.admin_path
    if not _is_loopback_url(args.url):
        # The token would travel to wherever --url points: only the hub's own loopback address may have it.
        print(f"crc hub: {args.url} is not a loopback address; admin commands talk to http://127.0.0.1:PORT "
              "on the hub's machine", file=sys.stderr)  # fmt: skip
        return 2
    data_dir = args.admin_data_dir or args.data_dir or default_data_dir()
    try:
        token = read_admin_token(data_dir)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"crc hub: cannot read the admin token {admin_token_path(data_dir)}: {reason} (give the hub's "
              "--data-dir, and run as the hub's user)", file=sys.stderr)  # fmt: skip
        return 1
    if getattr(args, "share", None) is not None:
        url += f"?share={args.share}"
    if getattr(args, "master_name", None):
        url += "?" + urllib.parse.urlencode({"name": args.master_name})
    request = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            print(json.dumps(json.loads(answer.read())))
    except urllib.error.HTTPError as exc:
        body = " ".join(exc.read().decode(errors="replace").split())
        print(f"crc hub: {url} answered {exc.code}: {body}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"crc hub: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    return 0


def _is_loopback_url(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def init_tls_command(args: argparse.Namespace) -> int:
    settings = settings_from(data_dir=args.tls_data_dir or args.data_dir)
    files = TlsFiles.in_data_dir(settings.data_dir)
    if files.exist() and not args.force:
        print(f"crc hub init-tls: {files.cert} exists already; pass --force to replace it", file=sys.stderr)
        return 1
    pin = create_self_signed(files, args.name or ["localhost"], args.ip or ["127.0.0.1"])
    print(f"wrote {files.cert} and {files.key} (0600); the hub now serves https/wss", file=sys.stderr)
    print(pin)
    return 0


def dist_command(args: argparse.Namespace) -> int:
    settings = settings_from(data_dir=args.dist_data_dir or args.data_dir, dist=args.dist_target or args.dist_dir)
    try:
        wheels = build_dist(settings.dist_dir, dependencies=not args.no_deps)
    except DistError as exc:
        print(f"crc hub dist: {exc}", file=sys.stderr)
        return 1
    print(f"{settings.dist_dir}: {len(wheels)} wheels, served at /v1/dist/", file=sys.stderr)
    for name in wheels:
        print(name)
    return 0


def enroll_master(args: argparse.Namespace) -> int:
    try:
        key = PublicKey.from_text(args.public_key)
        settings = settings_from(data_dir=args.enrol_data_dir or args.data_dir)
    except (ProtocolError, SettingsError) as exc:
        print(f"crc hub enroll-master: {exc}", file=sys.stderr)
        return 2

    async def enrol() -> str:
        store = SqliteStore(settings.database)
        try:
            return (await store.enroll_master(args.name, key.to_text(), time.time())).id
        finally:
            await store.close()

    try:
        master_id = asyncio.run(enrol())
    except (StoreConflict, StoreError) as exc:
        print(f"crc hub enroll-master: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled master {args.name!r} ({master_id}) in {settings.data_dir}")
    return 0
