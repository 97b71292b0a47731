"""The scenarios feature in process (a real Hub on a SQLite store and the local backplane, no sockets)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol import Identity
from server.core.hub import Hub
from server.features.scenarios import scenario_summary, scenario_wire
from server.settings import settings_from
from server.store import MachineSpec, MachineStatus, SqliteStore


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings = settings_from(data_dir=tmp_path, replica_id="here", env={})
    store = SqliteStore(settings.database)
    yield Hub(settings, store, Identity.generate(os.urandom))
    await store.close()


def spec(name: str) -> MachineSpec:
    return MachineSpec(name, "linux", "web", Identity.generate(os.urandom).public.to_text())


async def test_a_machine_whose_replica_died_is_offline_in_the_list_as_in_the_scenario(hub: Hub) -> None:
    """The store still says ready (its replica died without saying so), but no replica holds its session: the
    scenario list (WebSocket and REST share scenario_summary) and the scenario view agree that it is offline."""
    master = await hub.store.enroll_master("ana", Identity.generate(os.urandom).public.to_text(), time.time())
    scenario = await hub.store.create_scenario(master.id, "shop", [spec("db"), spec("web")], time.time())
    db = next(m for m in await hub.store.machines(scenario.id) if m.name == "db")
    await hub.store.update_machine(db.id, status=MachineStatus.READY, last_seen=time.time())

    summary = await scenario_summary(hub, scenario)
    shown = await scenario_wire(hub, scenario)

    assert summary == {"name": "shop", "created": scenario.created, "machines": 2, "ready": 0}
    assert {m["name"]: m["status"] for m in shown["machines"]} == {"db": "offline", "web": "offline"}
