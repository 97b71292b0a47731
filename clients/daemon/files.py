"""Writing files so that readers only ever see the old content or the complete, verified new content.

Data goes to a temporary file beside the destination (same directory, hence same filesystem, so
the final rename is atomic), is fsynced and checked against the expected digest, and only then
renamed over the destination. Whatever goes wrong, the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from protocol import CrcError

__all__ = ["TEMP_PREFIX", "FileIntegrityError", "StagedFile", "write_file_atomic"]

TEMP_PREFIX = ".crc-tmp-"
"""Prefix of temporary files, so leftovers (e.g. after a power cut) are recognisable."""


class FileIntegrityError(CrcError):
    """The received data does not match what the sender announced; the destination is untouched."""

    def __init__(self, path: str | Path, expected: str, actual: str, what: str = "sha256") -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        self.what = what
        super().__init__(f"{self.path}: {what} mismatch: expected {expected}, received data has {actual}")


class StagedFile:
    """Receives a file in chunks into a temp file beside the destination, then renames it into place.

    Use as a context manager: leaving the block without :meth:`commit` (normally or through an
    exception) removes the temporary file.
    """

    def __init__(self, path: str | Path, *, make_parents: bool = True) -> None:
        """Create the temporary file; ``OSError`` (e.g. permission denied) propagates."""
        self.path = Path(path)
        if make_parents:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.path.parent)
        self._temp_path: Path | None = Path(temp)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._size = 0
        self._committed = False

    @property
    def temp_path(self) -> Path | None:
        """The temporary file, or ``None`` once committed or aborted."""
        return self._temp_path

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, chunk: bytes) -> None:
        """Append a chunk; on ``OSError`` (e.g. disk full) the temp file is removed and the error raised."""
        if self._file is None:
            raise ValueError(f"staged file for {self.path} is already committed or aborted")
        try:
            self._file.write(chunk)
        except BaseException:
            self.abort()
            raise
        self._hash.update(chunk)
        self._size += len(chunk)

    def commit(self, mode: int, expected_sha256: str, expected_size: int | None = None) -> str:
        """Verify the data, apply ``mode`` and rename the file into place; return its sha256 hex digest.

        Raises :class:`FileIntegrityError` on a size or digest mismatch and ``OSError`` for
        filesystem problems; in both cases the temporary file is removed and the destination
        is left as it was.
        """
        if self._file is None or self._temp_path is None:
            raise ValueError(f"staged file for {self.path} is already committed or aborted")
        temp = self._temp_path
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            if expected_size is not None and self._size != expected_size:
                raise FileIntegrityError(self.path, f"{expected_size} bytes", f"{self._size} bytes", "size")
            actual = self._hash.hexdigest()
            if actual != expected_sha256.strip().lower():
                raise FileIntegrityError(self.path, expected_sha256, actual)
            os.chmod(temp, mode)
            os.replace(temp, self.path)
        except BaseException:
            self.abort()
            raise
        self._temp_path = None
        self._committed = True
        # The rename is only durable once the directory entry is on disk.
        _fsync_dir(self.path.parent)
        return actual

    def abort(self) -> None:
        """Discard the data and remove the temporary file; safe to call more than once."""
        if self._file is not None:
            file, self._file = self._file, None
            # A failing flush (full disk) does not matter: the data is being thrown away anyway.
            with contextlib.suppress(OSError):
                file.close()
        if self._temp_path is not None:
            temp, self._temp_path = self._temp_path, None
            temp.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self.abort()


def write_file_atomic(path: str | Path, data: bytes, mode: int = 0o644, expected_sha256: str | None = None) -> str:
    """Atomically replace ``path`` with ``data`` (creating parent directories); return the sha256 hex.

    With ``expected_sha256`` the data is verified first and :class:`FileIntegrityError` raised on
    a mismatch, leaving ``path`` untouched.
    """
    with StagedFile(path) as staged:
        staged.write(data)
        if expected_sha256 is None:
            expected_sha256 = hashlib.sha256(data).hexdigest()
        return staged.commit(mode, expected_sha256, len(data))


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":
        return  # Windows cannot open directories for fsync; NTFS journals the rename itself
    # The file is already in place: a filesystem that cannot fsync directories must not turn a
    # successful write into a reported failure.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
