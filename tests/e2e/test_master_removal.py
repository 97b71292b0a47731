"""Removing a master (``crc hub remove-master NAME``): its scenarios go (their machines' keys revoked, daemons
disconnected for good), its sessions close, it cannot come back; other masters are untouched."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.master.keys import write_private_key
from clients.master.sdk import Master
from protocol import Identity, RemoteError
from tests.e2e.support import Daemons, HubProcess, run_crc


async def test_a_removed_master_loses_its_scenarios_sessions_and_access(tmp_path: Path, daemons: Daemons) -> None:
    hub_dir = tmp_path / "bobs-hub"
    bob_key = tmp_path / "bob.key"
    write_private_key(bob_key, Identity.generate(secrets.token_bytes))
    hub = HubProcess(hub_dir)
    bob_public = Identity.from_private_text(bob_key.read_text()).public.to_text()
    assert run_crc(hub, "hub", "enroll-master", "bob", bob_public, "--data-dir", str(hub.data_dir)).returncode == 0
    hub.start()
    try:
        alice = await Master.connect(hub.url, hub.key_path)
        bob = await Master.connect(hub.url, bob_key)
        [box] = await bob.create_scenario("bobs", [("box", "linux")])
        config = tmp_path / "box.toml"
        write_config(config, DaemonConfig(hub.url, "bobs", "box", box.identity, bob.identity.public))
        daemon = daemons.start(config)
        await bob.wait_ready("bobs", timeout=20)
        await alice.create_scenario("alices", [("web", "linux")])

        removed = await asyncio.to_thread(
            run_crc, hub, "hub", "remove-master", "bob", "--url", hub.url, "--data-dir", str(hub.data_dir)
        )
        assert removed.returncode == 0, removed.stderr
        answer = json.loads(removed.stdout)
        assert answer["name"] == "bob" and answer["scenarios"] == ["bobs"] and answer["revoked"] == [box.id]

        assert await daemon.wait_exit(20) == 3  # its key was revoked: the daemon stops for good
        with pytest.raises(RemoteError, match="unknown_identity"):  # at once: no waiting for a reconnect
            await asyncio.wait_for(bob.scenarios(), 10)
        with pytest.raises(RemoteError, match="unknown_identity"):
            await Master.connect(hub.url, bob_key)
        assert [s["name"] for s in await alice.scenarios()] == ["alices"]

        again = await asyncio.to_thread(
            run_crc, hub, "hub", "remove-master", "bob", "--url", hub.url, "--data-dir", str(hub.data_dir)
        )
        assert again.returncode == 1 and "404" in again.stderr
        await bob.close()
        await alice.close()
    finally:
        hub.cleanup()
