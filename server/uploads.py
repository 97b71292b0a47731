"""File contents a master sent ahead of the orders that name them (FILE_CHUNK messages, then ORDER_SUBMIT with
``upload``), held in the hub's memory only until those orders are stored.

One upload serves every order of a fan-out, so it cannot go with the first order that names it. It goes when the
master says an order is its last use (``OrderSubmit.last_use``), when nothing touched it for ``idle`` seconds
(a master that stopped half-way), or with its session. Pure bookkeeping: time is passed in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

# Long enough for a rolling fan-out to submit its next order (each use restarts it), short enough that what a
# master abandons does not stay for the life of its session.
UPLOAD_IDLE = 600.0


class UploadError(ValueError):
    """A chunk that does not continue its upload (the message says which and what to do)."""


@dataclass
class Upload:
    """One upload's chunks so far, their total size and running SHA-256 (no second pass over the content)."""

    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    used: float = 0.0
    _digest: Any = field(default_factory=hashlib.sha256)

    def append(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        self._digest.update(data)

    def sha256(self) -> str:
        return str(self._digest.hexdigest())


class Uploads:
    """One master session's uploads, by upload id, and the bytes they hold (``size``)."""

    __slots__ = ("_uploads", "idle", "size")

    def __init__(self, idle: float = UPLOAD_IDLE) -> None:
        self.idle = idle
        self.size = 0
        self._uploads: dict[str, Upload] = {}

    def __len__(self) -> int:
        return len(self._uploads)

    def add(self, upload_id: str, index: int, data: bytes, now: float) -> None:
        """Append chunk ``index`` of ``upload_id``; chunk 0 starts it anew (the same content sent again).

        Raises:
            UploadError: the chunk is not the next one; the upload is dropped (send it again from chunk 0).
        """
        if index == 0:
            self.release(upload_id)
        upload = self._uploads.get(upload_id)
        if upload is None and index == 0:
            upload = self._uploads[upload_id] = Upload()
        if upload is None or index != len(upload.chunks):
            self.release(upload_id)
            raise UploadError(f"chunk {index} of upload {upload_id} came out of order; send it again")
        upload.append(data)
        upload.used = now
        self.size += len(data)

    def get(self, upload_id: str, now: float) -> Upload | None:
        """The upload, if held (using it restarts its idle time)."""
        upload = self._uploads.get(upload_id)
        if upload is not None:
            upload.used = now
        return upload

    def release(self, upload_id: str) -> None:
        self.pop(upload_id)

    def pop(self, upload_id: str) -> Upload | None:
        """Take the upload out (its bytes no longer count here), for a use that is surely its last."""
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            self.size -= upload.size
        return upload

    def expire(self, now: float) -> int:
        """Drop uploads unused for ``idle`` seconds; how many went."""
        stale = [upload_id for upload_id, upload in self._uploads.items() if now - upload.used >= self.idle]
        for upload_id in stale:
            self.release(upload_id)
        return len(stale)

    def clear(self) -> None:
        self._uploads.clear()
        self.size = 0
