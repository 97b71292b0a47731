"""A real daemon with a state dir too long for a socket path: a local user who took the name the daemon once fell
back to in /tmp gets none of its scripts' kv traffic, and the scripts' values reach the hub (issue 15, item 11)."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from clients.daemon import localsocket
from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from tests.clients.daemon.test_local_socket import NOBODY, Listener
from tests.e2e.support import START_TIMEOUT, DaemonProcess, Daemons, HubProcess


async def test_a_predictable_tmp_name_held_by_another_process_gets_no_kv_traffic(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    (machine,) = await master.create_scenario("longstate", [("box", "linux")])
    config = tmp_path / "box.toml"
    write_config(config, DaemonConfig(hub.url, "longstate", "box", machine.identity, master.identity.public))
    state_dir = tmp_path / ("deep-" * 24) / "state"
    assert len(os.fsencode(state_dir / localsocket.SOCKET_NAME)) > localsocket.UNIX_PATH_MAX

    # The name the daemon used to fall back to, taken first by another local user (nobody, when we are root).
    held = Path(tempfile.gettempdir()) / f"crc-daemon-{machine.identity.id}.sock"
    held.unlink(missing_ok=True)
    attacker = Listener(held, tmp_path, NOBODY if os.geteuid() == 0 else -1)
    try:
        daemon = DaemonProcess("longstate-box", config, state_dir, tmp_path / "hosts")
        daemons.started["longstate-box"] = daemon
        daemon.start()
        await master.wait_ready("longstate", timeout=START_TIMEOUT)

        script = 'crc-daemon kv set box/ready up && crc-daemon kv get box/ready && echo "socket=$CRC_DAEMON_SOCKET"'
        (result,) = await master.run("longstate", "box", script, wait_timeout=20)
        assert result.ok, result.stderr
        value, socket_line = result.stdout.decode().splitlines()
        assert value == "up"
        assert await master.kv_get("longstate", "box/ready") == b"up"

        socket_dir = Path(socket_line.removeprefix("socket=")).parent
        assert socket_dir != held.parent and socket_dir != state_dir
        info = os.lstat(socket_dir)
        assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.geteuid()
        assert attacker.requests() == b""  # the held name was never contacted
        assert stat.S_ISSOCK(os.lstat(held).st_mode)  # and not taken back from its holder either

        assert daemon.terminate() == 0
        assert not socket_dir.exists()  # the private folder goes with the daemon
    finally:
        attacker.stop()
        held.unlink(missing_ok=True)
