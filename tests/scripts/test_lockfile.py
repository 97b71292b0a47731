"""scripts/lockfile.py check: the lock agrees with pyproject.toml, and a deliberate mismatch fails fast."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "lockfile.py"
LOCK = ROOT / "requirements" / "test.lock"
PYPROJECT = ROOT / "pyproject.toml"


def run_check(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "check", "--pyproject", str(pyproject), "--lock", str(lock)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_committed_lock_matches_pyproject() -> None:
    result = run_check()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_dependency_added_to_pyproject_only_fails_naming_it(tmp_path: Path) -> None:
    text = PYPROJECT.read_text(encoding="utf-8")
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('"rich>=13,<16",', '"rich>=13,<16",\n    "pyyaml>=6",', 1), encoding="utf-8")
    result = run_check(pyproject=changed)
    assert result.returncode == 1
    assert "pyproject.toml asks for 'pyyaml>=6', which the lock was not made from" in result.stderr
    assert "run `bash scripts/lock.sh`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_changed_range_counts_as_a_change(tmp_path: Path) -> None:
    text = PYPROJECT.read_text(encoding="utf-8")
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('"mypy>=1.10,<3"', '"mypy>=1.10,<2"', 1), encoding="utf-8")
    result = run_check(pyproject=changed)
    assert result.returncode == 1
    assert "'mypy>=1.10,<2'" in result.stderr
    assert "'mypy>=1.10,<3', which pyproject.toml no longer asks for" in result.stderr


def test_a_dependency_only_in_the_lock_fails_naming_it(tmp_path: Path) -> None:
    text = PYPROJECT.read_text(encoding="utf-8")
    changed = tmp_path / "pyproject.toml"
    changed.write_text(text.replace('    "rich>=13,<16",\n', "", 1), encoding="utf-8")
    result = run_check(pyproject=changed)
    assert result.returncode == 1
    assert "the lock was made from 'rich>=13,<16', which pyproject.toml no longer asks for" in result.stderr


def test_a_lock_edited_by_hand_to_drop_a_pin_fails(tmp_path: Path) -> None:
    lines = LOCK.read_text(encoding="utf-8").splitlines(keepends=True)
    edited = tmp_path / "test.lock"
    edited.write_text("".join(line for line in lines if not line.startswith("msgpack==")), encoding="utf-8")
    result = run_check(lock=edited)
    assert result.returncode == 1
    assert "the lock pins no version of 'msgpack'" in result.stderr


def test_a_lock_without_the_header_is_refused(tmp_path: Path) -> None:
    bare = tmp_path / "test.lock"
    bare.write_text("msgpack==1.1.0\n", encoding="utf-8")
    result = run_check(lock=bare)
    assert result.returncode == 1
    assert "was not made by scripts/lock.sh" in result.stderr


def test_a_missing_lock_says_which_command_makes_it(tmp_path: Path) -> None:
    result = run_check(lock=tmp_path / "absent.lock")
    assert result.returncode == 1
    assert "is missing: run `bash scripts/lock.sh`" in result.stderr


def test_the_lock_pins_every_package_with_hashes() -> None:
    text = LOCK.read_text(encoding="utf-8")
    entries = [block for block in text.split("\n") if "==" in block and not block.startswith("#")]
    assert entries
    assert all(entry.rstrip().endswith("\\") for entry in entries), "every pin is followed by its hashes"
    assert "mypy==" in text and "ruff==" in text and "pytest==" in text
