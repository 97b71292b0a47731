"""Sealed file puts (``Master.put_file(..., sealed=True)``, ``crc put --secret``): the content is encrypted once
and its key sealed to each target machine, so the hub stores and delivers a file it cannot read.

The master draws a content key and a put id for the put (``protocol.sealed_files``), then seals the content chunk
by chunk as it uploads it: one upload serves every target, memory holds one chunk, and the content and the
ciphertext are hashed on the way. For each target's order it then seals the ``ContentKey`` (the key and the
content's SHA-256) to the sealing key this master's certificate, or the machine's signed key rotations, name
(``MachineInfo.sealing_key``, never one the hub merely shows), under ``file_context`` (scenario, machine, order
id, path), and signs it into that order with the ciphertext's SHA-256, size and chunk count, which the hub checks
the upload against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from clients.master.models import MachineInfo
from clients.master.secret_params import sealing_refusal
from protocol.order_bodies import PutFileBody, SealedContent, file_context
from protocol.sealed_files import CHUNK_BYTES, KEY_BYTES, PUT_ID_BYTES, ContentKey, ContentSealer
from protocol.sealing import SealingKey, seal


class SealedPut:
    """One sealed put: its chunks made once (``chunks``), then each target's order body (``Master.dispatch``'s
    ``PerMachineBody``). ``random`` gives n random bytes (``secrets.token_bytes``)."""

    def __init__(
        self, path: str, mode: int, size: int, random: Callable[[int], bytes], chunk_size: int = CHUNK_BYTES
    ) -> None:
        self.path, self.mode = path, mode
        self._key = random(KEY_BYTES)
        self.put_id = random(PUT_ID_BYTES)
        self._sealer = ContentSealer(self._key, self.put_id, size, chunk_size)
        self._content = hashlib.sha256()
        self._sealed = hashlib.sha256()

    @property
    def upload_id(self) -> str:
        # Not the ciphertext's SHA-256 (a plain upload's id): the chunks go out before it is known.
        return f"sealed-{self.put_id.hex()}"

    def chunks(self, read: Callable[[int], bytes]) -> Iterator[bytes]:
        """The sealed chunks of the content that ``read(n)`` gives (up to) n bytes of at a time, in order.

        Raises:
            ValueError: the content is not as long as it was said to be (the file changed while it was read).
        """
        sealer = self._sealer
        for index in range(sealer.count):
            chunk = read(sealer.expected(index))
            self._content.update(chunk)
            sealed = sealer.seal(chunk)
            self._sealed.update(sealed)
            yield sealed
        if read(1):
            raise ValueError(f"the content is longer than the {sealer.size} bytes it was (did the file change?)")

    def refusal(self, scenario: str, machines: Sequence[MachineInfo]) -> str | None:
        """Why the content key cannot be sealed to each of these machines (None: it can)."""
        return sealing_refusal(scenario, machines)

    def body(self, scenario: str, machine: MachineInfo, order_id: str) -> dict[str, Any]:
        """The order body for ``machine``: the content key sealed to it for ``order_id`` and this path.

        Raises:
            ValueError: the content was not sealed whole yet (``chunks`` first).
        """
        sealer = self._sealer
        if sealer.sealed != sealer.count:
            raise ValueError("a sealed put's order is signed only once its whole content is sealed")
        content_key = ContentKey(self._key, self._content.digest())
        context = file_context(scenario, machine.id, order_id, self.path)
        sealed_key = seal(SealingKey.from_text(machine.sealing_key), content_key.to_bytes(), context)
        content = SealedContent(sealed_key, self.put_id, sealer.size, sealer.chunk_size)
        return PutFileBody.for_sealed(self.path, self.mode, content, self._sealed.hexdigest()).to_wire()
