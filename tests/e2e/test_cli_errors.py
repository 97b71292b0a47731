"""Expected failures of the ``crc`` CLI: one line on stderr and a documented exit code, never a traceback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.support import HubProcess, assert_one_line_error, run_crc

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
def test_an_unknown_scenario_is_assert_one_line_error(hub: HubProcess, command: list[str]) -> None:
    assert_one_line_error(run_crc(hub, *command), FAILED, "not_found", "'nope'")


def test_a_key_the_hub_never_enrolled_is_assert_one_line_error(hub: HubProcess, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    assert run_crc(hub, "--key", str(other), "keygen").returncode == 0
    assert_one_line_error(run_crc(hub, "--key", str(other), "scenario", "list"), FAILED, "unknown_identity")


def test_a_missing_key_file_names_the_command_that_makes_one(hub: HubProcess, tmp_path: Path) -> None:
    assert_one_line_error(run_crc(hub, "--key", str(tmp_path / "absent.key"), "scenario", "list"), FAILED, "crc keygen")


def test_no_hub_running_is_one_line_naming_the_address(hub: HubProcess) -> None:
    address = f"http://127.0.0.1:{unused_port()}"
    assert_one_line_error(run_crc(hub, "--hub", address, "scenario", "list"), FAILED, "cannot reach the hub", address)


def test_a_malformed_hub_url_is_assert_one_line_error(hub: HubProcess) -> None:
    assert_one_line_error(run_crc(hub, "--hub", "ftp://hub", "scenario", "list"), FAILED, "must look like http://")


def test_an_offline_machine_leaves_the_order_queued_and_exits_124(hub: HubProcess) -> None:
    result = run_crc(hub, "ping", "offline", "--timeout", "1")
    assert result.returncode == STILL_WAITING, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "web: queued" in result.stdout


def test_an_existing_scenario_is_assert_one_line_error(hub: HubProcess, tmp_path: Path) -> None:
    result = run_crc(hub, "scenario", "create", "offline", "--machine", "web:linux", "--out", str(tmp_path))
    assert_one_line_error(result, FAILED, "already_exists")


def test_update_on_a_hub_without_the_locked_dependencies_names_crc_hub_dist(hub: HubProcess) -> None:
    assert_one_line_error(run_crc(hub, "update", "offline"), FAILED, "crc update:", "`crc hub dist`")


def test_a_bad_argument_is_a_usage_error(hub: HubProcess) -> None:
    result = run_crc(hub, "token", "create", "--ttl", "3x")
    assert result.returncode == USAGE
    assert "Traceback" not in result.stderr and "is not a duration" in result.stderr


def test_a_plan_ttl_over_the_longest_an_order_may_live_is_a_usage_error(hub: HubProcess, tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text('{"name": "p", "steps": [{"id": "a", "target": "all", "command": "true"}]}')
    for ttl in ("60d", "never"):
        result = run_crc(hub, "plan", "run", "offline", str(plan), "--ttl", ttl)
        assert_one_line_error(result, USAGE, "crc plan run: --ttl", "at most 7d", "nothing was sent")


def test_a_windows_hostname_over_15_characters_is_refused_before_anything_is_made(
    hub: HubProcess, tmp_path: Path
) -> None:
    scenario = tmp_path / "win.toml"
    scenario.write_text(
        '[scenario]\nname = "win"\n[provider]\nkind = "vultr"\n'
        '[[machine]]\nname = "w"\nos = "windows"\nhostname = "a-sixteen-chars1"\n'
    )
    result = run_crc(
        hub, "up", str(scenario), env={"VULTR_API_KEY": "unused", "VULTR_API_URL": "http://127.0.0.1:9/v2"}
    )
    assert_one_line_error(result, 2, "a-sixteen-chars1", "at most 15")
