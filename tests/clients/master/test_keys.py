import secrets
import stat
from pathlib import Path

import pytest

from clients.master.keys import KeyFileError, default_key_path, load_master_key, write_private_key
from protocol import Identity


def test_the_default_key_path_follows_crc_key_then_xdg_config_home(tmp_path: Path) -> None:
    assert default_key_path({"CRC_KEY": "/k"}) == Path("/k")
    assert default_key_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "crc" / "master.key"


def test_a_key_is_written_owner_only_and_never_silently_replaced(tmp_path: Path) -> None:
    path = tmp_path / "crc" / "master.key"
    identity = Identity.generate(secrets.token_bytes)
    write_private_key(path, identity)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(path).id == identity.id
    with pytest.raises(KeyFileError, match="--force"):
        write_private_key(path, Identity.generate(secrets.token_bytes))
    other = Identity.generate(secrets.token_bytes)
    write_private_key(path, other, overwrite=True)
    assert load_master_key(path).id == other.id


def test_a_missing_key_says_to_run_keygen(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="crc keygen"):
        load_master_key(tmp_path / "none.key")


def test_a_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.key"
    path.write_text("hello\n")
    with pytest.raises(KeyFileError, match="not a crc private key"):
        load_master_key(path)
