"""``crc-daemon``: run this machine's daemon (normally from systemd or a Windows service)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clients.daemon import enroll as enrollment
from clients.daemon import localsocket, supervisor, update
from clients.daemon.agent import DAEMON_VERSION, Daemon, DaemonOptions, Revoked
from clients.daemon.config import ConfigError, load_config, write_config
from clients.daemon.platform import current_platform, platform_executor
from crc_cli.logformat import LOG_FORMATS, configure_logging
from protocol import CrcError, ProtocolError
from protocol.enrollment import EnrollmentToken

EXIT_CONFIG = 2
# systemd's unit sets RestartPreventExitStatus=3: a revoked machine must not hammer the hub forever. Only a
# revocation sealed inside the authenticated session exits so; unsealed refusals are retried with backoff.
EXIT_REVOKED = 3


def build_parser() -> argparse.ArgumentParser:
    platform = current_platform()
    parser = argparse.ArgumentParser(
        prog="crc-daemon", description="CRC daemon: connects out to the hub and runs signed orders."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=platform.config_file,
        help=f"TOML config (default {platform.config_file})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=platform.state_dir,
        help=f"journal and spool (default {platform.state_dir})",
    )
    parser.add_argument(
        "--hosts-file",
        type=Path,
        default=platform.hosts_file,
        help=f"hosts file to manage (default {platform.hosts_file})",
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=os.environ.get("CRC_LOG_FORMAT") or "text",
        help="text (default) or json: one JSON object per log line (env CRC_LOG_FORMAT)",
    )
    parser.add_argument("--version", action="version", version=f"crc-daemon {DAEMON_VERSION}")
    parser.epilog = (
        "crc-daemon service {install,uninstall,start,stop} manages the Windows service; "
        "crc-daemon kv {set,get,wait} uses the scenario's futures from scripts on this machine; "
        "crc-daemon supervise [OPTIONS] runs the daemon as a child and restarts it into updated builds; "
        "crc-daemon enroll --hub URL --token T joins a scenario with an enrollment token."
    )
    return parser


def build_service_parser() -> argparse.ArgumentParser:
    """``crc-daemon service ...``: manage the Windows service (clients/windows/service.py)."""
    parser = argparse.ArgumentParser(prog="crc-daemon service", description="Manage the crc-daemon Windows service.")
    actions = parser.add_subparsers(dest="action", required=True, metavar="{install,uninstall,start,stop}")
    install = actions.add_parser("install", help="register the service (automatic start, restart on failure)")
    install.add_argument("--config", type=Path, default=None, help="TOML config the service runs with")
    for name, text in (("uninstall", "stop and remove the service"), ("start", "start it"), ("stop", "stop it")):
        actions.add_parser(name, help=text)
    return parser


def service_main(argv: Sequence[str]) -> int:
    """Run ``crc-daemon service ACTION``; exits 2 off Windows."""
    args = build_service_parser().parse_args(argv)
    if sys.platform != "win32":
        print(
            f"crc-daemon: 'service {args.action}' works only on Windows (this system is {sys.platform}); "
            "on Linux install clients/linux/crc-daemon.service with systemd",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from clients.windows import service

    try:
        if args.action == "install":
            service.install(args.config)
        else:
            getattr(service, args.action)()
    except (ConfigError, service.WindowsOnly) as exc:
        print(f"crc-daemon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # pywintypes.error, OSError, CalledProcessError: say what failed, no traceback
        print(f"crc-daemon: service {args.action} failed: {exc}", file=sys.stderr)
        return 1
    print(f"crc-daemon: service {args.action}: done")
    return 0


def build_enroll_parser() -> argparse.ArgumentParser:
    platform = current_platform()
    parser = argparse.ArgumentParser(
        prog="crc-daemon enroll",
        description="join a scenario with an enrollment token (`crc enroll create`): make this machine's key pair, "
        "register it, write the daemon config and start the service",
    )
    parser.add_argument("--hub", required=True, help="the hub's URL (https://host:port)")
    parser.add_argument(
        "--token",
        help="the enrollment token, or @FILE to read it from a file (default: env CRC_ENROLL_TOKEN; a token on "
        "the command line is visible to other users of this machine while it runs)",
    )
    parser.add_argument("--name", help="this machine's name in the scenario (default: its host name)")
    parser.add_argument("--hub-fingerprint", default="", help="sha256:<hex> of the hub's TLS certificate")
    parser.add_argument("--config", type=Path, default=platform.config_file, help=f"default {platform.config_file}")
    parser.add_argument("--no-service", action="store_true", help="only register and write the config")
    parser.add_argument("--force", action="store_true", help="replace an existing config (a new machine)")
    return parser


def _token_text(raw: str | None) -> str:
    if raw is None:
        return os.environ.get("CRC_ENROLL_TOKEN", "")
    if raw.startswith("@"):
        return Path(raw[1:]).read_text()
    return raw


def enroll_main(argv: Sequence[str]) -> int:
    """``crc-daemon enroll``: exit 0 joined (and started), 1 the hub refused or is unreachable, 2 bad input."""
    args = build_enroll_parser().parse_args(argv)
    try:
        token = EnrollmentToken.parse(_token_text(args.token))
    except (ProtocolError, OSError) as exc:
        print(f"crc-daemon enroll: {getattr(exc, 'message', None) or exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.config.exists() and not args.force:
        print(f"crc-daemon enroll: {args.config} exists: this machine has joined already (--force: join anew)",
              file=sys.stderr)  # fmt: skip
        return EXIT_CONFIG
    name = args.name or enrollment.default_name()
    try:
        config = asyncio.run(enrollment.enroll(args.hub, token, name, current_platform().name,
                                               hub_pin=args.hub_fingerprint))  # fmt: skip
    except enrollment.EnrollError as exc:
        print(f"crc-daemon enroll: {exc}", file=sys.stderr)
        return 1
    write_config(args.config, config)
    where = f"{token.claims.scenario}/{name} (role {token.claims.role})"
    if args.no_service:
        print(f"crc-daemon enroll: joined {where}; config {args.config}; start `crc-daemon --config {args.config}`")
        return 0
    try:
        _install_service(args.config)
    except CrcError as exc:
        print(f"crc-daemon enroll: joined {where}, config {args.config}, but the service: {exc}", file=sys.stderr)
        return 1
    print(f"crc-daemon enroll: joined {where}; the crc-daemon service is running")
    return 0


def _install_service(config: Path) -> None:
    if sys.platform == "win32":
        from clients.windows import service

        service.install(config)
        service.start()
    else:
        from clients.linux import service as systemd

        systemd.install(config)


def _ask_daemon(command: str, path: Path, request: dict[str, Any], wait: float) -> dict[str, Any] | int:
    """The local daemon's answer, or the exit status after saying why there is none (124: timed out)."""
    try:
        answer = localsocket.call(path, request, timeout=wait + 30)
    except OSError as exc:
        print(f"crc-daemon {command}: cannot reach the daemon at {path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if not answer.get("ok"):
        print(f"crc-daemon {command}: {answer.get('code')}: {answer.get('error')}", file=sys.stderr)
        return 124 if answer.get("code") == "timeout" else 1
    return answer


def kv_main(argv: Sequence[str]) -> int:
    """``crc-daemon kv set|get|wait``: futures for scripts on this machine, through the local daemon."""
    parser = argparse.ArgumentParser(prog="crc-daemon kv", description="Per-scenario keys, through the local daemon.")
    parser.add_argument("--socket", type=Path, help="the daemon's socket (default $CRC_DAEMON_SOCKET)")
    actions = parser.add_subparsers(dest="op", required=True)
    p = actions.add_parser("set", help="set KEY (this machine may set only NAME/...)")
    p.add_argument("key")
    p.add_argument("value")
    p.add_argument("--ttl", type=float, default=0.0, help="seconds until it expires (default: never)")
    p = actions.add_parser("get", help="print KEY's value (exit 1 if unset)")
    p.add_argument("key")
    p = actions.add_parser("wait", help="wait until KEY is set, then print its value (exit 124 on timeout)")
    p.add_argument("key")
    p.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args(argv)
    default = current_platform().state_dir / localsocket.SOCKET_NAME
    path = args.socket or Path(os.environ.get("CRC_DAEMON_SOCKET") or default)
    request = {"op": args.op, "key": args.key}
    if args.op == "set":
        request.update(value=args.value, ttl=args.ttl)
    if args.op == "wait":
        request["timeout"] = args.timeout
    answer = _ask_daemon("kv", path, request, args.timeout if args.op == "wait" else 0.0)
    if isinstance(answer, int):
        return answer
    if "value" in answer:
        print(answer["value"])
    return 0


def message_main(op: str, argv: Sequence[str]) -> int:
    """``crc-daemon send TARGET TOPIC DATA`` / ``crc-daemon recv [TOPIC] [--timeout S]``: scenario messages."""
    parser = argparse.ArgumentParser(prog=f"crc-daemon {op}")
    parser.add_argument("--socket", type=Path, help="the daemon's socket (default $CRC_DAEMON_SOCKET)")
    if op == "send":
        parser.description = "Send a named message to a machine, a role (role:R) or all machines of the scenario."
        parser.add_argument("target")
        parser.add_argument("topic")
        parser.add_argument("data")
    else:
        parser.description = "Print the next scenario message for this machine (of TOPIC, or any), waiting for it."
        parser.add_argument("topic", nargs="?", default="")
        parser.add_argument("--timeout", type=float, default=60.0)
        parser.add_argument("--json", action="store_true", help="print topic, sender and data as JSON")
    args = parser.parse_args(argv)
    path = args.socket or Path(os.environ.get("CRC_DAEMON_SOCKET") or current_platform().state_dir / "daemon.sock")
    if op == "send":
        request = {"op": "send", "target": args.target, "topic": args.topic, "data": args.data}
        wait = 0.0
    else:
        request, wait = {"op": "recv", "topic": args.topic, "timeout": args.timeout}, args.timeout
    answer = _ask_daemon(op, path, request, wait)
    if isinstance(answer, int):
        return answer
    if op == "send":
        print(f"sent to {', '.join(answer['to'])}", file=sys.stderr)
    elif args.json:
        print(json.dumps({k: answer[k] for k in ("topic", "sender", "data", "seq")}))
    else:
        print(answer["data"])
    return 0


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows' loops take no signal handlers
            loop.add_signal_handler(sig, stop.set)
    if os.environ.get(supervisor.STOP_ON_EOF_ENV):
        supervisor.stop_when_stdin_closes(loop, stop)


async def _run(daemon: Daemon) -> None:
    stop = asyncio.Event()
    _stop_on_signals(stop)
    await daemon.run(stop)


def supervise_main(argv: Sequence[str]) -> int:
    """``crc-daemon supervise [OPTIONS]``: run the daemon as a child process and restart it into updated builds
    (what the Windows service does; for hosts without a service manager). OPTIONS are the daemon's."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format, "%(asctime)s crc-daemon-supervisor %(levelname)s %(message)s")
    try:
        load_config(args.config)  # a bad config is said once, here, not by every child
    except ConfigError as exc:
        print(f"crc-daemon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    supervision = supervisor.Supervision(args.state_dir, Path(sys.prefix), tuple(argv))

    async def run() -> int:
        stop = asyncio.Event()
        _stop_on_signals(stop)
        return await supervisor.supervise(supervision, stop)

    return asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["service"]:
        return service_main(argv[1:])
    if argv[:1] == ["kv"]:
        return kv_main(argv[1:])
    if argv[:1] == ["supervise"]:
        return supervise_main(argv[1:])
    if argv[:1] == ["enroll"]:
        return enroll_main(argv[1:])
    if argv[:1] in (["send"], ["recv"]):
        return message_main(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    update.launch(args.state_dir, argv)  # may exec another installed build (self-update) and never return
    if args.log_format not in LOG_FORMATS:  # argparse checks choices on the command line, not in defaults
        print(f"crc-daemon: CRC_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level, args.log_format, "%(asctime)s crc-daemon %(levelname)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"crc-daemon: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    options = DaemonOptions(state_dir=args.state_dir, hosts_file=args.hosts_file, platform=current_platform())
    try:
        daemon = Daemon(config, options, executor=platform_executor())
        asyncio.run(_run(daemon))
    except Revoked as exc:
        print(f"crc-daemon: {exc}; exiting", file=sys.stderr)
        return EXIT_REVOKED
    return daemon.exit_code


if __name__ == "__main__":
    sys.exit(main())
