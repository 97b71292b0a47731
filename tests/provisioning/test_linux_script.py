"""The Linux startup script and the daemon's systemd unit pass their linters; rendering keeps values inert.

The script itself runs for real in tests/e2e/test_provisioning_local.py (local provider) and
tests/e2e/test_provisioning_vultr.py (Vultr emulator booting instances).
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, render_config
from protocol import Identity
from protocol.boot import report_key
from provisioning.startup import LockRef, RenderError, StartupParams, WheelRef, _check_block, render, render_linux

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "clients" / "linux" / "crc-daemon.service"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAK'quoted$(touch /tmp/pwned)`x`\n-----END CERTIFICATE-----\n"
REAL_PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBmh1\n"
    "-----END CERTIFICATE-----\n"
)
HAS_SHELLCHECK = shutil.which("shellcheck") is not None


def make_params(hub: str = "https://hub.example.net:8750", hub_ca_pem: str = "") -> StartupParams:
    config = DaemonConfig(
        hub=hub,
        scenario="shop",
        machine_name="web-1",
        identity=Identity.generate(secrets.token_bytes),
        master_key=Identity.generate(secrets.token_bytes).public,
        hub_pin="sha256:" + "ab" * 32,
    )
    return StartupParams(config, WheelRef("cloudremotecontrol-0.1.0-py3-none-any.whl", "cd" * 32), hub_ca_pem)


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed (scripts/test.sh installs it)"
)
@pytest.mark.parametrize("hub_ca_pem", ["", REAL_PEM], ids=["plain", "with-ca"])
def test_the_rendered_script_passes_shellcheck(tmp_path: Path, hub_ca_pem: str) -> None:
    script = tmp_path / "boot.sh"
    script.write_text(render_linux(make_params(hub_ca_pem=hub_ca_pem)))
    done = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_script_holds_the_config_and_report_key_once_and_only_in_inert_places() -> None:
    params = make_params(hub_ca_pem=CA_PEM)
    script = render_linux(params)
    config = render_config(params.config)
    assert script.count(config.rstrip("\n")) == 1
    key_hex = report_key(params.config.identity).hex()
    assert [line for line in script.splitlines() if key_hex in line] == [f"CRC_REPORT_KEY={key_hex}"]
    # The config sits in a quoted heredoc: nothing in it is expanded by the shell.
    assert "<<'CRC_CONFIG_END'" in script
    # Values are single-quoted, so $( ) and backticks in them stay text.
    assert "CRC_HUB_CA_PEM='-----BEGIN CERTIFICATE-----" in script
    assert re.search(r"CRC_HUB_HTTP=https://hub.example.net:8750\n", script)


def test_bash_reads_the_settings_back_unchanged(tmp_path: Path) -> None:
    script = render_linux(make_params(hub_ca_pem=CA_PEM))
    settings = script[script.index("# --- rendered by crc") : script.index('CRC_ROOT="${CRC_ROOT:-}"')]
    probe = tmp_path / "probe.sh"
    probe.write_text(settings + '\nprintf "%s" "$CRC_HUB_CA_PEM"\n')
    done = subprocess.run(["bash", str(probe)], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == CA_PEM.strip()
    assert not Path("/tmp/pwned").exists()


def test_a_value_that_would_end_its_block_is_refused() -> None:
    with pytest.raises(RenderError, match="CRC_CONFIG_END"):
        _check_block("a = 1\nCRC_CONFIG_END\nb = 2\n", "CRC_CONFIG_END")


def test_wheel_references_are_checked() -> None:
    with pytest.raises(RenderError):
        WheelRef("../../etc/passwd", "cd" * 32)
    with pytest.raises(RenderError):
        WheelRef("cloudremotecontrol-0.1.0-py3-none-any.whl", "not-a-digest")


def test_render_picks_the_script_by_os() -> None:
    params = make_params()
    assert render(params, "linux").startswith("#!/bin/bash")
    assert "$ErrorActionPreference" in render(params, "windows")
    with pytest.raises(RenderError, match="freebsd"):
        render(params, "freebsd")


def test_the_hub_url_for_downloads_is_http_whatever_form_the_config_uses() -> None:
    for hub, expected in [
        ("wss://hub:8750/v1/ws", "https://hub:8750"),
        ("ws://10.0.0.1:8750", "http://10.0.0.1:8750"),
        ("https://hub:8750/", "https://hub:8750"),
    ]:
        assert make_params(hub=hub).hub_http == expected


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not available here")
def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # verify insists that ExecStart's program exists: point it at a stand-in with the same arguments.
    stand_in = tmp_path / "crc-daemon"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "crc-daemon.service"
    text = UNIT.read_text()
    assert "ExecStart=/opt/crc/venv/bin/crc-daemon " in text
    unit.write_text(text.replace("ExecStart=/opt/crc/venv/bin/crc-daemon ", f"ExecStart={stand_in} "))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_machines_install_only_hash_pinned_files_from_the_hub_with_no_index_fallback() -> None:
    script = render_linux(make_params())
    lock = LockRef.local()
    assert f"CRC_LOCK={lock.name}" in script and f"CRC_LOCK_SHA256={lock.sha256}" in script
    assert '--no-index --find-links "$CRC_HUB_HTTP/v1/dist/"' in script
    assert 'pip_install --require-hashes -r "$LOCK_FILE"' in script
    assert 'pip_install --no-deps "$WHEEL_FILE"' in script
    assert "package index" not in script.replace("no package index", "")
    for template in (render_linux(make_params()), render_windows_for_test()):
        assert "pypi.org" not in template


def render_windows_for_test() -> str:
    from provisioning.startup import render_windows

    return render_windows(make_params())
