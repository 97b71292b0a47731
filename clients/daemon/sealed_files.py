"""Installing a sealed file (``protocol.sealed_files``): opened chunk by chunk from the spool, written only beside
its destination, and renamed into place once all of it proved to be what the master sealed.

The spool holds the ciphertext as the hub delivered it (never the content). Each chunk is authenticated before
its content is written to the temporary file beside the destination (created 0600, ``clients.daemon.files``);
the ciphertext's SHA-256 and size must be what the master signed, every chunk must come in its place and none
may be missing, and the content's SHA-256 must be the one sealed with its key. Whatever fails, the temporary file
is removed and the destination is left as it was.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from clients.daemon.files import FileIntegrityError, StagedFile
from protocol import ProtocolError
from protocol.errors import ErrorCode
from protocol.order_bodies import PutFileBody
from protocol.sealed_files import TAG_BYTES, ContentKey, ContentOpener


def install_sealed_file(spool: Path, body: PutFileBody, key: ContentKey) -> None:
    """Open the sealed content in ``spool`` with ``key`` and install it at ``body.path`` atomically.

    Raises:
        ProtocolError: BAD_SIGNATURE: what came is not what the master sealed (a chunk altered, moved, repeated,
            missing or from another put; another ciphertext than the one signed; another content than the one
            whose digest was sealed). Nothing was written.
        OSError: the file cannot be written (the destination is untouched).
        ValueError: the path is not absolute, or the body is not a sealed file's.
    """
    sealed = body.sealed
    if sealed is None:
        raise ValueError("not a sealed file")
    if not Path(body.path).is_absolute():
        raise ValueError(f"remote path {body.path!r} must be absolute")
    if spool.stat().st_size != body.size:  # said before a byte is opened, let alone written
        raise ProtocolError(
            ErrorCode.BAD_SIGNATURE,
            f"the sealed file came as {spool.stat().st_size} bytes, not the {body.size} the master signed",
        )
    opener = ContentOpener(key.key, sealed.put, sealed.size, sealed.chunk_size)
    travelled = hashlib.sha256()
    received = 0
    with StagedFile(body.path) as staged, spool.open("rb") as source:
        # Split where the master's chunks end (each is its content and its tag), however the hub cut the frames.
        while chunk := source.read(sealed.chunk_size + TAG_BYTES):
            travelled.update(chunk)
            received += len(chunk)
            staged.write(opener.open(chunk))
        opener.finish()
        if received != body.size or travelled.hexdigest() != body.sha256:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"the sealed file's ciphertext ({received} bytes, SHA-256 {travelled.hexdigest()}) is not the one "
                "the master signed",
            )
        try:
            staged.commit(body.mode, key.sha256.hex(), sealed.size)
        except FileIntegrityError as exc:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"the sealed file opened but its content's {exc.what} is not the one sealed with its key",
            ) from None
