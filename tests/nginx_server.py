"""A real nginx in front of hub replicas, configured from deploy/nginx/crc-hub.conf with the ports rewritten."""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_CONF = ROOT / "deploy" / "nginx" / "crc-hub.conf"
MISSING = "nginx is not installed: run `bash scripts/test.sh`, which installs it (apt-get install nginx)"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(conf: str, listen_port: int, upstream_ports: Sequence[int]) -> str:
    """The deploy config with our listen port and one ``server`` line per replica."""
    conf = re.sub(r"listen 127\.0\.0\.1:\d+;", f"listen 127.0.0.1:{listen_port};", conf)
    template = re.search(r"^(\s*)server 127\.0\.0\.1:\d+ (.*)$", conf, re.M)
    assert template, "deploy/nginx/crc-hub.conf has no upstream server line"
    indent, options = template.group(1), template.group(2)
    servers = "\n".join(f"{indent}server 127.0.0.1:{port} {options}" for port in upstream_ports)
    conf = re.sub(r"^\s*server 127\.0\.0\.1:\d+ .*\n", "", conf, flags=re.M)
    return conf.replace("upstream crc_hub_replicas {\n", "upstream crc_hub_replicas {\n" + servers + "\n", 1)


class Nginx:
    """nginx in the foreground (``daemon off``) with everything under ``directory``."""

    def __init__(self, directory: Path, upstream_ports: Sequence[int]) -> None:
        self.directory = directory
        self.port = free_port()
        self.upstream_ports = list(upstream_ports)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        d = self.directory
        d.mkdir(parents=True, exist_ok=True)
        (d / "crc-hub.conf").write_text(render(DEPLOY_CONF.read_text(), self.port, self.upstream_ports))
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temp = "\n".join(f"    {kind}_temp_path {d / kind};" for kind in kinds)
        main = d / "nginx.conf"
        main.write_text(
            f"daemon off;\nworker_processes 1;\npid {d / 'nginx.pid'};\nerror_log {d / 'error.log'} info;\n"
            f"events {{ worker_connections 4096; }}\n"
            f"http {{\n    access_log off;\n{temp}\n    include {d / 'crc-hub.conf'};\n}}\n"
        )
        return main

    def start(self) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(MISSING)
        config = self._write_config()
        check = subprocess.run([binary, "-t", "-c", str(config), "-p", str(self.directory)], capture_output=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx rejects the config: {check.stderr.decode(errors='replace')}")
        with (self.directory / "stdout.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [binary, "-c", str(config), "-p", str(self.directory)], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        path = self.directory / "error.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
