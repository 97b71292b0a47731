"""Rotating a machine's key: the daemon makes the new pair itself, reports the public half over its
authenticated session, and switches to it at once; the machine keeps its id, queue and history, results signed
with the old key still verify, and the old key no longer gets in."""

from __future__ import annotations

import stat

from clients.daemon.config import load_config
from clients.master.sdk import Master
from tests.e2e.support import Daemons, eventually


async def test_a_rotated_machine_keeps_working_under_its_new_key(master: Master, deploy, daemons: Daemons) -> None:
    shop = await deploy("rot", "box")
    before = (await master.scenario("rot")).machine("box")
    [first] = await master.run("rot", "box", "echo before")
    assert first.ok and first.verified

    new_key = await master.rotate_machine_key("rot", "box", timeout=30)
    after = (await master.scenario("rot")).machine("box")
    assert new_key == after.public_key != before.public_key
    assert after.id == before.id and after.former_keys == [before.public_key] and after.status == "ready"

    [second] = await master.run("rot", "box", "echo after")
    assert second.ok and second.verified
    history = await master.results("rot")
    assert len(history) == 3 and all(r.verified for r in history)  # the rotation order's own result included

    daemon = shop.daemon("box")
    key_file = daemon.state_dir / "machine-key.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert new_key.split(":", 1)[1] not in key_file.read_text()  # it holds the private half, not the public
    config_key = load_config(daemon.config).identity.private_text()
    assert config_key not in key_file.read_text()

    # A restart picks the rotated key up from the state dir (the config file still has the old one).
    daemon.restart()
    await master.wait_ready("rot", timeout=20)
    [third] = await master.run("rot", "box", "echo restarted", wait_timeout=20)
    assert third.ok and third.verified

    # The old key is refused: a daemon holding only the config's key cannot get in (it keeps backing off).
    intruder = daemons.start(daemon.config, name="old-key")
    await eventually(lambda: "bad_signature" in intruder.log_text(), timeout=20, what="the old key refused")
    intruder.kill()
    [fourth] = await master.run("rot", "box", "echo still me", wait_timeout=20)
    assert fourth.ok and fourth.verified
