"""A hub serving TLS with the certificate from `crc hub init-tls`; daemons and masters pin it."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from clients.daemon.config import DaemonConfig, write_config
from clients.master.sdk import Master
from tests.e2e.support import PYTHON, ROOT, Daemons, HubProcess, child_env, eventually


def _init_tls(hub: HubProcess) -> str:
    done = subprocess.run(
        [PYTHON, "-m", "crc_cli", "hub", "init-tls", "--data-dir", str(hub.data_dir)],
        env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_daemons_with_the_pin_work_over_tls_and_a_daemon_with_another_pin_never_connects(
    tmp_path: Path,
) -> None:
    hub = HubProcess(tmp_path / "hub")
    daemons = Daemons(tmp_path / "daemons")
    try:
        pin = _init_tls(hub)
        await asyncio.to_thread(hub.start)
        assert hub.url.startswith("https://")
        async with await Master.connect(hub.url, hub.key_path, pin=pin) as master:
            minted = await master.create_scenario("secure", [("good", "linux"), ("fooled", "linux")])
            pins = {"good": pin, "fooled": "sha256:" + "ab" * 32}
            for m in minted:
                config = tmp_path / f"{m.name}.toml"
                write_config(
                    config,
                    DaemonConfig(hub.url, "secure", m.name, m.identity, master.identity.public, hub_pin=pins[m.name]),
                )
                daemons.start(config)

            (result,) = await master.run("secure", "good", "echo over tls", wait_timeout=20)
            assert (result.stdout, result.verified) == (b"over tls\n", True)
            fooled = daemons.started["fooled"]
            await eventually(lambda: "not the pinned" in fooled.log_text(), timeout=15, what="pin refusal logged")
            assert (await master.scenario("secure")).machine("fooled").status == "offline"
    finally:
        daemons.cleanup()
        hub.cleanup()
