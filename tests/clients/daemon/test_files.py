"""Atomic, verified file writes."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from clients.daemon.files import TEMP_PREFIX, FileIntegrityError, StagedFile, write_file_atomic


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_files(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(TEMP_PREFIX)]


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_file_atomic_replaces_the_file_and_returns_its_sha(tmp_path):
    target = tmp_path / "config"
    target.write_bytes(b"old")

    digest = write_file_atomic(target, b"new content")

    assert target.read_bytes() == b"new content"
    assert digest == sha(b"new content")
    assert temp_files(tmp_path) == []


def test_the_destination_is_replaced_not_rewritten(tmp_path):
    target = tmp_path / "config"
    target.write_bytes(b"old")
    old_inode = os.stat(target).st_ino
    with open(target, "rb") as reader_of_the_old_file:
        write_file_atomic(target, b"new")

        assert reader_of_the_old_file.read() == b"old", "readers never see a half-written file"
    assert os.stat(target).st_ino != old_inode


def test_a_sha_mismatch_leaves_the_destination_untouched_and_no_temp_file(tmp_path):
    target = tmp_path / "config"
    target.write_bytes(b"old")

    with pytest.raises(FileIntegrityError) as caught:
        write_file_atomic(target, b"new", expected_sha256=sha(b"something else"))

    assert target.read_bytes() == b"old"
    assert temp_files(tmp_path) == []
    error = caught.value
    assert error.path == str(target)
    assert error.expected == sha(b"something else")
    assert error.actual == sha(b"new")
    assert "sha256 mismatch" in str(error)


def test_the_expected_sha_may_be_upper_case(tmp_path):
    digest = write_file_atomic(tmp_path / "f", b"data", expected_sha256=sha(b"data").upper())

    assert digest == sha(b"data")


def test_the_mode_is_applied_exactly_regardless_of_umask(tmp_path):
    old_umask = os.umask(0o077)
    try:
        write_file_atomic(tmp_path / "script", b"#!/bin/sh\n", mode=0o755)
        write_file_atomic(tmp_path / "secret", b"key", mode=0o600)
    finally:
        os.umask(old_umask)

    assert mode_of(tmp_path / "script") == 0o755
    assert mode_of(tmp_path / "secret") == 0o600


def test_a_staged_file_assembles_chunks_and_commits_them(tmp_path):
    target = tmp_path / "big.bin"
    chunks = [os.urandom(1000) for _ in range(5)]
    data = b"".join(chunks)

    with StagedFile(target) as staged:
        for chunk in chunks:
            staged.write(chunk)
        assert not target.exists(), "nothing is visible before commit"
        assert staged.temp_path is not None
        assert staged.temp_path.parent == tmp_path
        assert staged.temp_path.name.startswith(TEMP_PREFIX)
        digest = staged.commit(0o640, sha(data), expected_size=len(data))

    assert target.read_bytes() == data
    assert digest == sha(data)
    assert mode_of(target) == 0o640
    assert temp_files(tmp_path) == []


def test_a_size_mismatch_is_reported_as_such(tmp_path):
    staged = StagedFile(tmp_path / "f")
    staged.write(b"12345")

    with pytest.raises(FileIntegrityError) as caught:
        staged.commit(0o644, sha(b"12345"), expected_size=6)

    assert caught.value.what == "size"
    assert "size mismatch" in str(caught.value)
    assert not (tmp_path / "f").exists()
    assert temp_files(tmp_path) == []


def test_abort_removes_the_temp_file_and_can_be_repeated(tmp_path):
    staged = StagedFile(tmp_path / "f")
    staged.write(b"partial")
    assert len(temp_files(tmp_path)) == 1

    staged.abort()
    staged.abort()

    assert temp_files(tmp_path) == []
    assert not (tmp_path / "f").exists()
    with pytest.raises(ValueError):
        staged.write(b"more")


def test_leaving_the_context_on_an_exception_aborts(tmp_path):
    with pytest.raises(RuntimeError), StagedFile(tmp_path / "f") as staged:
        staged.write(b"partial")
        raise RuntimeError("transfer broke off")

    assert os.listdir(tmp_path) == []


def test_leaving_the_context_without_commit_aborts(tmp_path):
    with StagedFile(tmp_path / "f") as staged:
        staged.write(b"partial")

    assert os.listdir(tmp_path) == []


def test_missing_parent_directories_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"

    write_file_atomic(target, b"deep")

    assert target.read_bytes() == b"deep"


def test_parents_are_not_created_when_not_asked_to(tmp_path):
    with pytest.raises(FileNotFoundError):
        StagedFile(tmp_path / "missing" / "f", make_parents=False)


def test_a_failing_rename_propagates_as_oserror_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "is-a-directory"
    target.mkdir()
    (target / "keep").write_text("")

    with pytest.raises(OSError):
        write_file_atomic(target, b"data")

    assert temp_files(tmp_path) == []
    assert (target / "keep").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_surfaces_as_oserror(tmp_path):
    # /dev/full fails every write with ENOSPC: swap it in for the temp file's descriptor.
    staged = StagedFile(tmp_path / "f")
    staged._file.close()  # type: ignore[union-attr]
    staged._file = open("/dev/full", "wb")  # noqa: SIM115

    with pytest.raises(OSError) as caught:
        staged.write(b"x" * 10)
        staged.commit(0o644, sha(b"x" * 10))

    assert caught.value.errno == 28  # ENOSPC
    assert temp_files(tmp_path) == []
