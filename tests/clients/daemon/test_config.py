import secrets
import stat
from pathlib import Path

import pytest

from clients.daemon.config import ConfigError, DaemonConfig, load_config, write_config
from protocol import Identity


def _config() -> DaemonConfig:
    machine = Identity.generate(secrets.token_bytes)
    master = Identity.generate(secrets.token_bytes)
    return DaemonConfig("http://127.0.0.1:8750", "shop", "mysql", machine, master.public)


def test_a_written_config_loads_back_identically_and_is_private(tmp_path: Path) -> None:
    config = _config()
    path = tmp_path / "etc" / "daemon.toml"
    write_config(path, config)
    loaded = load_config(path)
    assert loaded.machine_id == config.machine_id
    assert loaded.master_key == config.master_key
    assert (loaded.hub, loaded.scenario, loaded.machine_name, loaded.parallel) == (
        "http://127.0.0.1:8750",
        "shop",
        "mysql",
        1,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_missing_config_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no daemon config at"):
        load_config(tmp_path / "nope.toml")


def test_invalid_toml_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("hub = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize("key", ["hub", "scenario", "machine_name", "private_key", "master_public_key"])
def test_each_required_key_is_named_when_missing(tmp_path: Path, key: str) -> None:
    path = tmp_path / "daemon.toml"
    write_config(path, _config())
    path.write_text("\n".join(line for line in path.read_text().splitlines() if not line.startswith(f"{key} ")))
    with pytest.raises(ConfigError, match=key):
        load_config(path)


def test_a_machine_id_that_does_not_match_the_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    write_config(path, _config())
    path.write_text(path.read_text().replace("machine_id = ", 'machine_id = "someoneelse" #'))
    with pytest.raises(ConfigError, match="does not match"):
        load_config(path)


def test_a_garbled_private_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "daemon.toml"
    write_config(path, _config())
    text = path.read_text()
    garbled = "\n".join(
        'private_key = "ed25519-private:!!notbase64!!"' if line.startswith("private_key") else line
        for line in text.splitlines()
    )
    path.write_text(garbled)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "notbase64" not in str(info.value)
