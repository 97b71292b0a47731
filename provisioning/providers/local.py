"""This computer as a provider: each "machine" runs the real Linux startup script, for demos and tests.

Two kinds of local machine:

- **network namespaces** (when root, ``ip netns`` works, and the hub is reachable at a non-loopback address):
  each machine is a namespace on a bridge of its scenario (``10.203.X.0/24``, the host at ``.1``), with its
  own address, and its own ``/etc/hosts``: ``ip netns exec`` binds ``/etc/netns/NAME/hosts`` over it, so hosts
  distribution is real and machines reach each other by name;
- **plain processes** otherwise: the same script under a folder of its own (``CRC_ROOT``), managing a hosts
  file in that folder.

The script installs the daemon into ``STATE/SCENARIO/MACHINE/root/opt/crc/venv`` from the hub's wheels and
starts it under a supervising shell (no systemd). ``destroy`` stops every process, deletes namespaces, the
bridge and the folder; what to delete is read from the folder (``scenario.json``, ``machine.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from provisioning.providers.base import ProvidedMachine, Provider, ProviderError, Teardown
from provisioning.scenario_file import MachinePlan

SUBNET_PREFIX = "10.203"
NETNS_DIR = Path("/etc/netns")


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "crc" / "local"


def netns_available() -> bool:
    """Root, and ``ip netns`` works here (containers may forbid it)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    probe = f"crc-probe-{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False).returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return True


def _short(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:10]


@dataclass
class ScenarioState:
    netns: bool
    bridge: str = ""
    subnet: int = -1  # X in 10.203.X.0/24

    @property
    def gateway(self) -> str:
        return f"{SUBNET_PREFIX}.{self.subnet}.1"


@dataclass
class MachineState:
    name: str
    boot_pid: int
    netns: str = ""
    address: str = ""
    host_link: str = ""


class LocalProvider(Provider):
    """Args:
    state_dir: where machines live (default ``~/.local/state/crc/local``).
    netns: force namespaces on (True) or off (False); None decides per scenario (see the module doc).
    python: the interpreter the startup scripts use (default: the one running this code, without its venv).
    """

    kind = "local"

    def __init__(self, state_dir: Path | None = None, *, netns: bool | None = None, python: str = "") -> None:
        self.state_dir = state_dir or default_state_dir()
        self.netns = netns
        self.python = python or getattr(sys, "_base_executable", "") or sys.executable

    # --- layout
    def scenario_dir(self, scenario: str) -> Path:
        return self.state_dir / scenario

    def machine_dir(self, scenario: str, machine: str) -> Path:
        return self.scenario_dir(scenario) / "machines" / machine

    def _load_scenario(self, scenario: str) -> ScenarioState | None:
        path = self.scenario_dir(scenario) / "scenario.json"
        with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
            return ScenarioState(**json.loads(path.read_text()))
        return None

    def _save(self, path: Path, state: ScenarioState | MachineState) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(state)))

    # --- Provider
    def _wants_netns(self, hub_url: str) -> bool:
        if self.netns is not None:
            return self.netns
        return not _is_loopback(hub_url) and netns_available()

    async def prepare(self, scenario: str, hub_url: str) -> str:
        """With namespaces, a loopback hub URL becomes the bridge address (the hub must listen there too)."""
        state = self._load_scenario(scenario)
        if state is None:
            state = await self._prepare(scenario, hub_url)
        if state.netns and _is_loopback(hub_url):
            return machine_url(hub_url, state.gateway)
        return hub_url

    async def _prepare(self, scenario: str, hub_url: str) -> ScenarioState:
        self.scenario_dir(scenario).mkdir(parents=True, exist_ok=True)
        state = ScenarioState(netns=self._wants_netns(hub_url))
        if state.netns:
            state.bridge = f"crcb{_short(str(self.state_dir), scenario)[:8]}"
            state.subnet = await asyncio.to_thread(_free_subnet)
            await _ip("link", "add", state.bridge, "type", "bridge")
            await _ip("addr", "add", f"{state.gateway}/24", "dev", state.bridge)
            await _ip("link", "set", state.bridge, "up")
        self._save(self.scenario_dir(scenario) / "scenario.json", state)
        return state

    def gateway(self, scenario: str) -> str:
        """The host's address on the scenario's bridge ('' without namespaces): where machines find the hub."""
        state = self._load_scenario(scenario)
        return state.gateway if state and state.netns else ""

    async def create(self, scenario: str, machine: MachinePlan, script: str) -> ProvidedMachine:
        if machine.os != "linux":
            raise ProviderError(f"machine {machine.name!r}: the local provider runs Linux machines only")
        state = self._load_scenario(scenario)
        if state is None:
            raise ProviderError(f"scenario {scenario!r} was not prepared on this provider (call prepare first)")
        folder = self.machine_dir(scenario, machine.name)
        if (folder / "machine.json").exists():
            raise ProviderError(f"machine {machine.name!r} of scenario {scenario!r} exists already ({folder})")
        root = folder / "root"
        (root / "etc").mkdir(parents=True, exist_ok=True)
        script_path = folder / "boot.sh"
        fd = os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(script)
        env = {**os.environ, "CRC_ROOT": str(root), "CRC_SERVICE": "process", "CRC_PYTHON": self.python}
        record = MachineState(machine.name, 0)
        argv = ["bash", str(script_path)]
        if state.netns:
            # Reserved before any await: machines are created concurrently and each needs its own address.
            taken = {r.address for _, r in self._records(scenario)}
            free = [i for i in range(2, 255) if f"{SUBNET_PREFIX}.{state.subnet}.{i}" not in taken]
            if not free:
                raise ProviderError("a local scenario with namespaces holds at most 253 machines")
            record.netns = f"crc-{scenario}-{machine.name}"
            record.address = f"{SUBNET_PREFIX}.{state.subnet}.{free[0]}"
            record.host_link = f"cv{_short(record.netns)}"
            self._save(folder / "machine.json", record)  # from here on, destroy knows what to remove
            await self._make_namespace(state, record, machine.hostname)
            env["CRC_HOSTS_FILE"] = "/etc/hosts"
            argv = ["ip", "netns", "exec", record.netns, *argv]
        else:
            hosts = root / "etc" / "hosts"
            hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{machine.hostname}\n")
        record.boot_pid = await asyncio.to_thread(_spawn_detached, argv, env, folder / "boot.out")
        self._save(folder / "machine.json", record)
        return ProvidedMachine(machine.name, record.netns or str(folder), "booting", record.address)

    async def _make_namespace(self, state: ScenarioState, record: MachineState, hostname: str) -> None:
        ns = record.netns
        short = _short(ns)
        host_side, ns_side = f"cv{short}", f"cp{short}"
        hosts_dir = NETNS_DIR / ns
        hosts_dir.mkdir(parents=True, exist_ok=True)
        (hosts_dir / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n::1\tlocalhost\n{record.address}\t{hostname}\n{state.gateway}\tcrc-hub-host\n"
        )
        await _ip("netns", "add", ns)
        await _ip("link", "add", host_side, "type", "veth", "peer", "name", ns_side)
        await _ip("link", "set", ns_side, "netns", ns)
        await _ip("link", "set", host_side, "master", state.bridge, "up")
        await _ip("-n", ns, "link", "set", ns_side, "name", "eth0")
        await _ip("-n", ns, "addr", "add", f"{record.address}/24", "dev", "eth0")
        await _ip("-n", ns, "link", "set", "eth0", "up")
        await _ip("-n", ns, "link", "set", "lo", "up")
        await _ip("-n", ns, "route", "add", "default", "via", state.gateway)

    def _records(self, scenario: str) -> list[tuple[Path, MachineState]]:
        records = []
        for path in sorted((self.scenario_dir(scenario) / "machines").glob("*/machine.json")):
            with contextlib.suppress(ValueError, TypeError, OSError):
                records.append((path.parent, MachineState(**json.loads(path.read_text()))))
        return records

    async def machines(self, scenario: str) -> list[ProvidedMachine]:
        found = []
        for folder, record in self._records(scenario):
            daemon = _read_pid(folder / "root" / "run" / "crc" / "daemon.pid")
            if daemon and _alive(daemon):
                state = "running"
            elif _alive(record.boot_pid):
                state = "booting"
            else:
                state = "stopped"
            found.append(ProvidedMachine(record.name, record.netns or str(folder), state, record.address))
        return found

    async def destroy(
        self, scenario: str, say: Callable[[str], None] | None = None, *, only: Collection[str] = ()
    ) -> Teardown:
        teardown = Teardown()
        folder = self.scenario_dir(scenario)
        if not folder.exists():
            return teardown
        for machine_folder, record in self._records(scenario):
            if only and record.name not in only:
                continue
            groups = [record.boot_pid, _read_pid(machine_folder / "root" / "run" / "crc" / "daemon.pid")]
            await asyncio.to_thread(_stop_groups, [g for g in groups if g])
            if record.netns:
                await asyncio.to_thread(_kill_namespace_processes, record.netns)
                await _ip("netns", "del", record.netns, check=False)
                if record.host_link:  # gone with the namespace, unless a process still holds it
                    await _ip("link", "del", record.host_link, check=False)
                shutil.rmtree(NETNS_DIR / record.netns, ignore_errors=True)
            teardown.machines.append(record.name)
            if only:
                shutil.rmtree(machine_folder, ignore_errors=True)
        if only:  # the scenario's bridge and folder stay for its other machines
            return teardown
        state = self._load_scenario(scenario)
        if state is not None and state.bridge:
            await _ip("link", "del", state.bridge, check=False)
            teardown.other.append(f"bridge {state.bridge}")
        shutil.rmtree(folder, ignore_errors=True)
        teardown.other.append(str(folder))
        return teardown


async def _ip(*args: str, check: bool = True) -> None:
    done = await asyncio.to_thread(subprocess.run, ["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise ProviderError(f"ip {' '.join(args)} failed: {done.stderr.strip() or done.returncode}")


def _free_subnet() -> int:
    shown = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    used = {int(m) for m in re.findall(rf"inet {re.escape(SUBNET_PREFIX)}\.(\d+)\.", shown)}
    for candidate in range(0, 256):
        if candidate not in used:
            return candidate
    raise ProviderError(f"every {SUBNET_PREFIX}.X.0/24 subnet is in use")


def _spawn_detached(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Start ``argv`` in a session of its own that outlives this process; its pid.

    A shell starts it in the background and exits at once, so nothing here is left to wait for it.
    """
    launcher = 'setsid "$@" >"$CRC_BOOT_LOG" 2>&1 </dev/null & echo $!'
    done = subprocess.run(
        ["sh", "-c", launcher, "sh", *argv],
        env={**env, "CRC_BOOT_LOG": str(log)},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise ProviderError(f"could not start {argv[0]}: {done.stderr.strip()}")
    pid = int(done.stdout.strip())
    # setsid runs a moment after the shell forked: return once the child leads its own group, so that
    # killing the group (destroy) can never hit the shell's.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            if os.getpgid(pid) == pid:
                break
        except ProcessLookupError:
            break  # already over (a script that failed at once); nothing left to kill
        time.sleep(0.005)
    return pid


def _read_pid(path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return 0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return True


def _stop_groups(groups: list[int], timeout: float = 10.0) -> None:
    """SIGTERM each process group (setsid made each leader its group), SIGKILL what is left after ``timeout``."""
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _kill_namespace_processes(netns: str) -> None:
    shown = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=False).stdout
    for pid in (int(p) for p in shown.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_loopback(hub_url: str) -> bool:
    host = urlsplit(hub_url if "://" in hub_url else f"http://{hub_url}").hostname or ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "")


def machine_url(hub_url: str, host: str) -> str:
    """``hub_url`` with its host replaced (keeping scheme, port and path)."""
    parts = urlsplit(hub_url)
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
