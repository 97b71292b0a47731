"""Expected failures of the ``crc`` CLI: one line on stderr and a documented exit code, never a traceback."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import HubProcess, run_crc

FAILED, USAGE, STILL_WAITING = 1, 2, 124  # the exit codes the README documents


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    process = HubProcess(tmp_path_factory.mktemp("cli-errors") / "hub")
    process.start()
    created = run_crc(process, "scenario", "create", "offline", "--machine", "web:linux", "--out",
                      str(process.data_dir.parent / "cfg"))  # fmt: skip
    assert created.returncode == 0, created.stderr
    yield process
    process.cleanup()


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [
        ["scenario", "show", "nope"],
        ["run", "nope", "all", "--", "true"],
        ["wait", "nope", "--timeout", "2"],
        ["ping", "nope"],
        ["results", "nope"],
        ["watch", "nope", "--no-follow"],
        ["hosts", "nope"],
        ["job", "run", "nope", "all", "report"],
        ["machine", "revoke", "nope", "web"],
    ],
)
def test_an_unknown_scenario_is_one_line(hub: HubProcess, command: list[str]) -> None:
    one_line(run_crc(hub, *command), FAILED, "not_found", "'nope'")


def test_a_key_the_hub_never_enrolled_is_one_line(hub: HubProcess, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    assert run_crc(hub, "--key", str(other), "keygen").returncode == 0
    one_line(run_crc(hub, "--key", str(other), "scenario", "list"), FAILED, "unknown_identity")


def test_a_missing_key_file_names_the_command_that_makes_one(hub: HubProcess, tmp_path: Path) -> None:
    one_line(run_crc(hub, "--key", str(tmp_path / "absent.key"), "scenario", "list"), FAILED, "crc keygen")


def test_no_hub_running_is_one_line_naming_the_address(hub: HubProcess) -> None:
    address = f"http://127.0.0.1:{unused_port()}"
    one_line(run_crc(hub, "--hub", address, "scenario", "list"), FAILED, "cannot reach the hub", address)


def test_a_malformed_hub_url_is_one_line(hub: HubProcess) -> None:
    one_line(run_crc(hub, "--hub", "ftp://hub", "scenario", "list"), FAILED, "must look like http://")


def test_an_offline_machine_leaves_the_order_queued_and_exits_124(hub: HubProcess) -> None:
    result = run_crc(hub, "ping", "offline", "--timeout", "1")
    assert result.returncode == STILL_WAITING, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "web: queued" in result.stdout


def test_an_existing_scenario_is_one_line(hub: HubProcess, tmp_path: Path) -> None:
    result = run_crc(hub, "scenario", "create", "offline", "--machine", "web:linux", "--out", str(tmp_path))
    one_line(result, FAILED, "already_exists")


def test_update_on_a_hub_without_a_daemon_wheel_names_crc_hub_dist(hub: HubProcess) -> None:
    one_line(run_crc(hub, "update", "offline"), FAILED, "crc update:", "`crc hub dist`")


def test_a_bad_argument_is_a_usage_error(hub: HubProcess) -> None:
    result = run_crc(hub, "token", "create", "--ttl", "3x")
    assert result.returncode == USAGE
    assert "Traceback" not in result.stderr and "is not a duration" in result.stderr
