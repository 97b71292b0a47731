"""The job versions a master remembers beside its key: only ever going up, private, and never guessed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from clients.master.job_versions import JobVersions, JobVersionsError


def test_versions_are_remembered_beside_the_key_and_only_go_up(tmp_path: Path) -> None:
    memory = JobVersions.beside(tmp_path / "master.key")
    assert memory.path == tmp_path / "master.key.job-versions" and memory.highest() == {}
    memory.saw("report", 3)
    memory.saw("report", 2)
    memory.saw("backup", 1)
    assert JobVersions.beside(tmp_path / "master.key").highest() == {"backup": 1, "report": 3}
    assert stat.S_IMODE(memory.path.stat().st_mode) == 0o600


@pytest.mark.parametrize("text", ["not json", "[1, 2]", '{"report": "3"}', '{"report": true}'])
def test_an_unreadable_memory_is_an_error_not_an_empty_one(tmp_path: Path, text: str) -> None:
    memory = JobVersions.beside(tmp_path / "master.key")
    memory.path.write_text(text)
    with pytest.raises(JobVersionsError, match="fix or remove it"):
        memory.highest()
