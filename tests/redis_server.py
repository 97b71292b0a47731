"""A real ``redis-server`` for the tests, on a free port of 127.0.0.1, with its data in a directory of its own.

``RedisServer(directory)`` runs one with the append-only file on and snapshots off: ``stop()`` shuts it down
cleanly (the AOF is flushed) and ``start()`` brings it back on the same port and directory with the same data;
``kill()`` is a SIGKILL; ``extra_args`` are more ``redis-server`` options (``--appendfsync always``...).
``RedisSentinel`` runs ``redis-server <conf> --sentinel`` monitoring a server.
Everything talks RESP over a plain socket, so this helper does not depend on the client under test.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

START_TIMEOUT = 10.0
NOAUTH = b"-NOAUTH Authentication required."
STOP_TIMEOUT = 10.0
MISSING = (
    "redis-server is not on PATH: the Redis store tests need a real one. Run `bash scripts/test.sh` "
    "(it installs the redis-server package when it can), or `apt-get install redis-server`."
)


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(host: str, port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command, return the first line of the reply (enough for PING, FLUSHALL, SHUTDOWN, simple GETs)."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(a.encode())}\r\n".encode() + a.encode() + b"\r\n" for a in args
    )
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    return reply.strip()


class _Process:
    """A redis-server process on a fixed port, restartable."""

    host = "127.0.0.1"

    def __init__(self, directory: Path, port: int | None = None) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(MISSING)
        self.binary = binary
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def _argv(self) -> list[str]:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(self._argv(), cwd=self.directory, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                if command(self.host, self.port, "PING", timeout=0.5) in (b"+PONG", NOAUTH):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server did not answer PING in {START_TIMEOUT}s:\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: the server flushes its AOF first)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class RedisServer(_Process):
    """``url``, ``host``, ``port``; ``start()``, ``stop()``, ``kill()``; ``password`` to require one."""

    def __init__(
        self, directory: Path, port: int | None = None, *, password: str | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        super().__init__(directory, port)
        self.password = password
        self.extra_args = list(extra_args)

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            self.binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
            "--save", "", "--appendonly", "yes", "--daemonize", "no", "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + self.extra_args

    def flushall(self) -> None:
        reply = command(self.host, self.port, "FLUSHALL")
        if reply != b"+OK":
            raise RuntimeError(f"FLUSHALL answered {reply!r}")


class RedisSentinel(_Process):
    """A sentinel watching ``server`` as ``service``; its config file lives (and is rewritten) in ``directory``."""

    def __init__(self, directory: Path, server: RedisServer, service: str = "crc-test") -> None:
        super().__init__(directory)
        self.server = server
        self.service = service
        self.config = self.directory / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind {self.host}\nprotected-mode no\ndir {self.directory}\n"
            f"sentinel monitor {service} {server.host} {server.port} 1\n"
            f"sentinel down-after-milliseconds {service} 60000\n"
        )

    @property
    def url(self) -> str:
        return f"redis+sentinel://{self.host}:{self.port}/{self.service}/0"

    def _argv(self) -> list[str]:
        return [self.binary, str(self.config), "--sentinel"]
