from pathlib import Path

import pytest

from server.settings import HubSettings, SettingsError, settings_from


def test_cli_values_win_over_environment_and_defaults(tmp_path: Path) -> None:
    env = {"CRC_HUB_PORT": "9000", "CRC_HUB_HOST": "0.0.0.0", "CRC_DATA_DIR": str(tmp_path / "env")}
    settings = settings_from(port=8123, data_dir=tmp_path / "cli", env=env)
    assert settings.port == 8123
    assert settings.host == "0.0.0.0"
    assert settings.data_dir == tmp_path / "cli"
    assert settings.database == tmp_path / "cli" / "hub.sqlite3"


def test_defaults_apply_when_nothing_is_given(tmp_path: Path) -> None:
    settings = settings_from(env={"XDG_DATA_HOME": str(tmp_path)})
    assert (settings.host, settings.port) == ("127.0.0.1", 8750)
    assert settings.data_dir == tmp_path / "crc" / "hub"
    assert settings.dead_after < 30


def test_a_malformed_port_in_the_environment_is_named() -> None:
    with pytest.raises(SettingsError, match="CRC_HUB_PORT"):
        settings_from(env={"CRC_HUB_PORT": "eighty"})


def test_a_malformed_heartbeat_setting_is_named() -> None:
    with pytest.raises(SettingsError, match="CRC_HEARTBEAT_INTERVAL"):
        settings_from(env={"CRC_HEARTBEAT_INTERVAL": "often"})


def test_dead_after_must_exceed_the_heartbeat_interval(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="dead_after"):
        HubSettings(data_dir=tmp_path, heartbeat_interval=5, dead_after=5)


def test_an_out_of_range_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="port"):
        HubSettings(data_dir=tmp_path, port=70000)
