"""The deployment files in deploy/ stay in step with the CLI they call."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest

from crc_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "crc-hub@.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


@pytest.mark.parametrize("key", ["ExecStart", "ExecReload"])
def test_the_hub_units_commands_are_valid_crc_command_lines(key: str) -> None:
    command = _unit()["Service"][key].replace("%i", "8751").replace("%H", "host")
    argv = shlex.split(command)
    assert argv[0].endswith("/crc")
    args = build_parser().parse_args(argv[1:])
    assert args.command_name == "hub"


def test_stopping_the_hub_unit_sends_sigterm_which_drains() -> None:
    service = _unit()["Service"]
    assert service["KillSignal"] == "SIGTERM"
    assert float(service["TimeoutStopSec"]) >= 30  # longer than the default drain timeout


def test_the_daemon_unit_does_not_restart_a_revoked_daemon() -> None:
    text = (ROOT / "clients" / "linux" / "crc-daemon.service").read_text()
    assert "RestartPreventExitStatus=3" in text
