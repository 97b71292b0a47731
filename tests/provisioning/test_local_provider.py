"""The local provider with plain processes (no namespaces) and tiny stand-in startup scripts.

The real Linux startup script is exercised end to end elsewhere; here a few lines of bash play its part: one
that starts a "daemon" (a ``setsid sleep`` whose pid it writes where the real script does) when told to, and
waits to be told to finish. Every wait is bounded and every test destroys what it made, even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from provisioning.providers import LocalProvider, ProvidedMachine, ProviderError, Teardown
from provisioning.providers.local import _is_loopback, default_state_dir, machine_url
from provisioning.scenario_file import MachinePlan

pytestmark = pytest.mark.timeout(60)

HUB = "http://127.0.0.1:8750"

# Waits for $CRC_ROOT/go, then starts the "daemon" in a session of its own; waits for $CRC_ROOT/done, then ends.
# A plain background child stays in the boot script's process group (destroy must stop it too).
SCRIPT = """#!/bin/bash
echo "root=$CRC_ROOT service=$CRC_SERVICE python=$CRC_PYTHON"
sleep 30 &
echo $! > "$CRC_ROOT/child.pid"
for _ in $(seq 300); do [ -e "$CRC_ROOT/go" ] && break; sleep 0.05; done
mkdir -p "$CRC_ROOT/run/crc"
setsid sleep 30 >/dev/null 2>&1 </dev/null &
echo $! > "$CRC_ROOT/run/crc/daemon.pid.tmp"
mv "$CRC_ROOT/run/crc/daemon.pid.tmp" "$CRC_ROOT/run/crc/daemon.pid"
for _ in $(seq 300); do [ -e "$CRC_ROOT/done" ] && break; sleep 0.05; done
echo finished
"""


def plan(name: str = "db", os_name: str = "linux") -> MachinePlan:
    return MachinePlan(name, os_name, name, "ewr", "vc2-1c-2gb", 2136)


def alive(pid: int) -> bool:
    """``os.kill(pid, 0)`` succeeds, and the process is not a zombie waiting for a parent that never reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:  # gone in between
        return False


async def eventually(check: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s: {check}")
        await asyncio.sleep(0.05)


async def wait_for_pid(path: Path, timeout: float = 10.0) -> int:
    await eventually(lambda: path.exists() and path.read_text().strip().isdigit(), timeout)
    return int(path.read_text().strip())


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalProvider]:
    """A provider without namespaces; every scenario it holds is destroyed afterwards, whatever happened."""
    provider = LocalProvider(tmp_path / "local", netns=False)
    try:
        yield provider
    finally:
        if provider.state_dir.exists():
            for scenario in sorted(p.name for p in provider.state_dir.iterdir()):
                await provider.destroy(scenario)


async def states(provider: LocalProvider, scenario: str = "shop") -> dict[str, str]:
    return {m.name: m.state for m in await provider.machines(scenario)}


def root(provider: LocalProvider, machine: str, scenario: str = "shop") -> Path:
    return provider.machine_dir(scenario, machine) / "root"


def boot_pid(provider: LocalProvider, machine: str, scenario: str = "shop") -> int:
    record = json.loads((provider.machine_dir(scenario, machine) / "machine.json").read_text())
    return int(record["boot_pid"])


# ------------------------------------------------------------------------------------------------ prepare


async def test_prepare_without_namespaces_keeps_the_hub_url(local: LocalProvider) -> None:
    assert await local.prepare("shop", HUB) == HUB
    assert await local.prepare("shop", HUB) == HUB  # a second prepare reuses the recorded state
    assert json.loads((local.scenario_dir("shop") / "scenario.json").read_text()) == {
        "netns": False,
        "bridge": "",
        "subnet": -1,
    }
    assert local.gateway("shop") == ""
    assert local.gateway("never-prepared") == ""


async def test_prepare_of_a_namespaced_scenario_points_a_loopback_hub_at_the_bridge(local: LocalProvider) -> None:
    # A scenario recorded as namespaced (no ip commands run: the state exists already).
    folder = local.scenario_dir("lab")
    folder.mkdir(parents=True)
    (folder / "scenario.json").write_text(json.dumps({"netns": True, "bridge": "", "subnet": 7}))

    assert local.gateway("lab") == "10.203.7.1"
    assert await local.prepare("lab", "http://127.0.0.1:8750/hub") == "http://10.203.7.1:8750/hub"
    assert await local.prepare("lab", "https://hub.example.com:8750") == "https://hub.example.com:8750"


def test_the_default_state_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "crc" / "local"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir() == Path.home() / ".local" / "state" / "crc" / "local"


def test_the_default_python_is_a_real_interpreter() -> None:
    assert Path(LocalProvider(netns=False).python).exists()
    assert LocalProvider(netns=False, python="/opt/py/bin/python3").python == "/opt/py/bin/python3"


# ------------------------------------------------------------------------------------------------ create


async def test_create_without_prepare_is_an_error(local: LocalProvider) -> None:
    with pytest.raises(ProviderError, match="'shop' was not prepared"):
        await local.create("shop", plan(), SCRIPT)
    assert not local.scenario_dir("shop").exists()


async def test_a_windows_machine_is_an_error(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    with pytest.raises(ProviderError, match=r"machine 'win'.*Linux machines only"):
        await local.create("shop", plan("win", "windows"), SCRIPT)
    assert not local.machine_dir("shop", "win").exists()


async def test_create_runs_the_script_in_a_folder_of_its_own(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    folder = local.machine_dir("shop", "web_1")

    created = await local.create("shop", plan("web_1"), SCRIPT)

    assert created == ProvidedMachine("web_1", str(folder), "booting", "")
    assert stat.S_IMODE((folder / "boot.sh").stat().st_mode) == 0o700
    assert (folder / "boot.sh").read_text() == SCRIPT
    assert (folder / "root" / "etc" / "hosts").read_text() == (
        "127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\tweb-1\n"
    )
    record = json.loads((folder / "machine.json").read_text())
    assert record["name"] == "web_1" and record["netns"] == "" and record["address"] == ""
    assert record["boot_pid"] > 0 and alive(record["boot_pid"])
    assert os.getpgid(record["boot_pid"]) == record["boot_pid"]  # its own process group (setsid)
    await eventually(lambda: "root=" in (folder / "boot.out").read_text())
    assert (folder / "boot.out").read_text().splitlines()[0] == (
        f"root={folder / 'root'} service=process python={local.python}"
    )


async def test_creating_the_same_machine_twice_is_an_error(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.create("shop", plan(), SCRIPT)
    first = boot_pid(local, "db")

    with pytest.raises(ProviderError, match="machine 'db' of scenario 'shop' exists already"):
        await local.create("shop", plan(), SCRIPT)

    assert boot_pid(local, "db") == first  # the record of the first one is untouched
    assert [m.name for m in await local.machines("shop")] == ["db"]


# ------------------------------------------------------------------------------------------------ machines


async def test_machines_follow_the_processes_from_booting_to_running_to_stopped(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    assert await local.machines("shop") == []
    await local.create("shop", plan(), SCRIPT)
    machine_root = root(local, "db")
    boot = boot_pid(local, "db")

    assert await states(local) == {"db": "booting"}  # the script runs, no daemon yet

    (machine_root / "go").touch()
    daemon = await wait_for_pid(machine_root / "run" / "crc" / "daemon.pid")
    assert alive(daemon) and os.getpgid(daemon) == daemon
    assert await states(local) == {"db": "running"}

    (machine_root / "done").touch()  # the script ends; the daemon lives on
    await eventually(lambda: not alive(boot))
    assert await states(local) == {"db": "running"}

    os.kill(daemon, signal.SIGKILL)
    await eventually(lambda: not alive(daemon))
    [machine] = await local.machines("shop")
    assert machine == ProvidedMachine("db", str(local.machine_dir("shop", "db")), "stopped", "")


async def test_a_script_that_ends_without_a_daemon_is_stopped(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.create("shop", plan(), "#!/bin/bash\nexit 3\n")
    boot = boot_pid(local, "db")

    await eventually(lambda: not alive(boot))

    assert await states(local) == {"db": "stopped"}


async def test_machines_of_other_scenarios_are_not_listed(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.prepare("shop-2", HUB)
    await local.create("shop", plan("db"), SCRIPT)
    await local.create("shop", plan("web"), SCRIPT)
    await local.create("shop-2", plan("db"), SCRIPT)

    assert sorted(await states(local)) == ["db", "web"]
    assert [m.provider_id for m in await local.machines("shop-2")] == [str(local.machine_dir("shop-2", "db"))]
    assert await local.machines("absent") == []


# ------------------------------------------------------------------------------------------------ destroy


async def test_destroy_stops_every_process_group_and_removes_the_folder(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.prepare("shop-2", HUB)
    await local.create("shop", plan("db"), SCRIPT)
    await local.create("shop", plan("web"), SCRIPT)
    await local.create("shop-2", plan("db"), SCRIPT)
    (root(local, "db") / "go").touch()  # db gets a daemon; web is still booting
    (root(local, "db", "shop-2") / "go").touch()
    daemon = await wait_for_pid(root(local, "db") / "run" / "crc" / "daemon.pid")
    other_daemon = await wait_for_pid(root(local, "db", "shop-2") / "run" / "crc" / "daemon.pid")
    children = [await wait_for_pid(root(local, name) / "child.pid") for name in ("db", "web")]
    boots = [boot_pid(local, name) for name in ("db", "web")]
    pids = [daemon, *children, *boots]
    assert all(alive(pid) for pid in pids)

    teardown = await local.destroy("shop")

    assert teardown == Teardown(machines=["db", "web"], other=[str(local.scenario_dir("shop"))])
    await eventually(lambda: not any(alive(pid) for pid in pids), timeout=5)
    assert not local.scenario_dir("shop").exists()
    assert await local.machines("shop") == []
    # The other scenario is untouched.
    assert alive(other_daemon) and alive(boot_pid(local, "db", "shop-2"))
    assert await states(local, "shop-2") == {"db": "running"}

    again = await local.destroy("shop")
    assert again == Teardown() and again.empty

    await local.destroy("shop-2")
    await eventually(lambda: not alive(other_daemon), timeout=5)


async def test_destroying_only_some_machines_leaves_the_others_and_the_scenario(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.create("shop", plan("db"), SCRIPT)
    await local.create("shop", plan("web"), SCRIPT)
    (root(local, "db") / "go").touch()
    (root(local, "web") / "go").touch()
    db = await wait_for_pid(root(local, "db") / "run" / "crc" / "daemon.pid")
    web = await wait_for_pid(root(local, "web") / "run" / "crc" / "daemon.pid")

    teardown = await local.destroy("shop", only=["db"])

    assert teardown == Teardown(machines=["db"])
    await eventually(lambda: not alive(db), timeout=5)
    assert alive(web) and await states(local) == {"web": "running"}
    assert local.scenario_dir("shop").exists() and not local.machine_dir("shop", "db").exists()
    await local.destroy("shop")
    await eventually(lambda: not alive(web), timeout=5)


async def test_destroy_stops_a_daemon_whose_boot_script_has_ended(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.create("shop", plan(), SCRIPT)
    machine_root = root(local, "db")
    (machine_root / "go").touch()
    (machine_root / "done").touch()
    daemon = await wait_for_pid(machine_root / "run" / "crc" / "daemon.pid")
    child = await wait_for_pid(machine_root / "child.pid")
    boot = boot_pid(local, "db")
    await eventually(lambda: not alive(boot))
    assert alive(daemon) and alive(child)  # the leader is gone, its group is not

    assert (await local.destroy("shop")).machines == ["db"]

    await eventually(lambda: not alive(daemon) and not alive(child), timeout=5)


async def test_destroy_of_a_scenario_that_was_never_prepared_is_a_no_op(local: LocalProvider) -> None:
    assert await local.destroy("ghost") == Teardown()


async def test_destroy_of_a_prepared_scenario_without_machines(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    assert await local.destroy("shop") == Teardown(other=[str(local.scenario_dir("shop"))])
    assert not local.scenario_dir("shop").exists()


async def test_destroy_skips_an_unreadable_machine_record(local: LocalProvider) -> None:
    await local.prepare("shop", HUB)
    await local.create("shop", plan(), SCRIPT)
    broken = local.machine_dir("shop", "broken")
    broken.mkdir(parents=True)
    (broken / "machine.json").write_text("{not json")

    assert [m.name for m in await local.machines("shop")] == ["db"]
    assert (await local.destroy("shop")).machines == ["db"]
    assert not local.scenario_dir("shop").exists()


# ------------------------------------------------------------------------------------------------ URL helpers


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8750", True),
        ("http://127.5.6.7:8750", True),
        ("http://[::1]:8750", True),
        ("http://localhost:8750/x", True),
        ("ws://LOCALHOST:8750", True),
        ("127.0.0.1:8750", True),
        ("", True),
        ("https://10.0.0.1:443", False),
        ("https://hub.example.com:8750", False),
        ("http://[fd00::1]:8750", False),
    ],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert _is_loopback(url) is loopback


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8750", "http://10.203.0.1:8750"),
        ("http://[::1]:8750", "http://10.203.0.1:8750"),
        ("http://localhost:8750/x", "http://10.203.0.1:8750/x"),
        ("https://10.0.0.1:443", "https://10.203.0.1:443"),
        ("https://localhost/hub?x=1#f", "https://10.203.0.1/hub?x=1#f"),
    ],
)
def test_machine_url_replaces_only_the_host(url: str, expected: str) -> None:
    assert machine_url(url, "10.203.0.1") == expected
