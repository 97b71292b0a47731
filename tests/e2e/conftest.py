"""End-to-end fixtures: a real hub and real daemons as subprocesses, driven in-process through the master SDK.

    hub          a running hub (``crc hub --dev``) on a free port; ``kill()`` / ``restart()`` keep its port and data
    make_hub     the same, with heartbeat settings, or not started yet (to enrol masters first)
    master       an SDK ``Master`` connected to ``hub`` with the dev master key
    daemons      a factory of ``crc-daemon`` processes, each with its own state dir and hosts file
    deploy       creates a scenario through the SDK, writes its daemon configs and (by default) starts them

The logs of the processes of a failed test are printed at its teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from tests.e2e.support import START_TIMEOUT, Daemons, Deployment, HubProcess, Process


# failure reports: show the processes' logs of a failed test
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(getattr(getattr(request.node, f"rep_{when}", None), "failed", False) for when in ("setup", "call"))


def _dump_logs(processes: Sequence[Process]) -> None:
    for process in processes:
        print(process.log_tail(60))


@pytest.fixture
def make_hub(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., HubProcess]]:
    """``make_hub(heartbeat_interval=..., dead_after=..., start=True)``: a hub process of its own."""
    hubs: list[HubProcess] = []

    def make(
        *,
        heartbeat_interval: float | None = None,
        dead_after: float | None = None,
        start: bool = True,
        env: dict[str, str] | None = None,
    ) -> HubProcess:
        hub = HubProcess(
            tmp_path / f"hub{len(hubs)}", heartbeat_interval=heartbeat_interval, dead_after=dead_after, env=env
        )
        hubs.append(hub)
        if start:
            hub.start()
        return hub

    yield make
    if _failed(request):
        _dump_logs(hubs)
    for hub in hubs:
        hub.cleanup()


@pytest.fixture
def hub(make_hub: Callable[..., HubProcess]) -> HubProcess:
    return make_hub()


@pytest.fixture
def daemons(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemons]:
    group = Daemons(tmp_path / "daemons")
    yield group
    if _failed(request):
        _dump_logs(list(group.started.values()))
    group.cleanup()


@pytest.fixture
async def master(hub: HubProcess) -> AsyncIterator[Master]:
    async with await Master.connect(hub.url, hub.key_path, timeout=10) as connected:
        yield connected


@pytest.fixture
def deploy(hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path) -> Callable[..., Awaitable[Deployment]]:
    """``await deploy("shop", "mysql", "web", start=True, ready=True)``."""

    async def create(name: str, *machines: str, start: bool = True, ready: bool = True) -> Deployment:
        minted = await master.create_scenario(name, [(m, "linux") for m in machines])
        configs = {}
        for m in minted:
            path = tmp_path / "configs" / name / f"{m.name}.toml"
            write_config(path, DaemonConfig(hub.url, name, m.name, m.identity, master.identity.public))
            configs[m.name] = path
        deployment = Deployment(name, configs, daemons)
        if start:
            for machine in machines:
                deployment.start(machine)
            if ready:
                await master.wait_ready(name, timeout=START_TIMEOUT)
        return deployment

    return create


@pytest.fixture(scope="session")
def daemon_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub dist folder with the daemon wheel built from this checkout and its dependencies (built once)."""
    from provisioning.dist import build_dist

    folder = tmp_path_factory.mktemp("dist")
    build_dist(folder)
    return folder


@pytest.fixture
def dist_hub(tmp_path: Path, daemon_dist: Path, request: pytest.FixtureRequest) -> Iterator[HubProcess]:
    """A hub that serves ``daemon_dist`` at /v1/dist/, for machines installed by startup scripts."""
    hub = HubProcess(tmp_path / "dist-hub", extra_args=["--dist-dir", str(daemon_dist)])
    hub.start()
    yield hub
    if _failed(request):
        _dump_logs([hub])
    hub.cleanup()
