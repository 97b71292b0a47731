"""Redacting secret values from a command's output before it leaves the machine.

A command given secrets (``ExecBody.secrets``) may print them, plainly or encoded, by mistake or not; the hub,
its store and whoever reads results must not see them. So the daemon masks them at the source: each output
stream goes through its own ``Redactor``, whose output is what is streamed live *and* what the result keeps.

What is masked: every occurrence of each secret's *forms* — the value itself, its standard base64 (with and
without padding), its URL-safe base64 (with and without), and its URL-encoded forms (``quote(value, safe="")``
and ``quote_plus``) — each replaced by ``***``. Occurrences that overlap (two secrets sharing bytes, or one
repeated into itself) are masked as one stretch, so no byte of any occurrence survives. What is not: a value
printed in part, or transformed otherwise (base64 wrapped into lines, or taken from the middle of a longer
base64 text, hex, reversed...): redaction is a safety net for the usual leaks, not a guarantee against a
command that wants to reveal a secret (it runs as root and could send it anywhere).

Streaming: an occurrence may be split across chunks at any byte. A chunk's end is held back only as far as it
could still be the start of a form (at most the longest form minus one byte), and released as soon as the
next chunk shows it is not, or at the end of the stream. Output held back when a stream is cut short (the
command was killed, or left a process holding the pipe) is masked rather than released: it is a secret's
beginning, and its end may have been lost. The result is the same however the stream is split into chunks.
"""

from __future__ import annotations

import base64
import urllib.parse
from collections.abc import Iterable

MASK = b"***"


def forms(value: bytes) -> set[bytes]:
    """The byte strings that count as ``value`` in output (see the module doc)."""
    standard = base64.b64encode(value)
    urlsafe = base64.urlsafe_b64encode(value)
    found = {
        value,
        standard,
        standard.rstrip(b"="),
        urlsafe,
        urlsafe.rstrip(b"="),
        urllib.parse.quote(value, safe="").encode("ascii"),
        urllib.parse.quote_plus(value, safe="").encode("ascii"),
    }
    found.discard(b"")
    return found


class Redactor:
    """Masks the forms of some secret values in one stream of output, chunk by chunk.

    ``feed`` returns what may leave now; ``finish`` what is left at the end. ``count`` is how many masks were
    written (an occurrence, or a stretch of overlapping ones, is one).
    """

    def __init__(self, values: Iterable[bytes]) -> None:
        self._forms = sorted({f for value in values for f in forms(value)}, key=len, reverse=True)
        self._starts: dict[int, list[bytes]] = {}
        for form in self._forms:
            self._starts.setdefault(form[0], []).append(form)
        self._longest = len(self._forms[0]) if self._forms else 0
        self._pending = b""  # output not released yet: it may begin a form
        self._carry = 0  # how many of its first bytes belong to a stretch already masked
        self.count = 0

    @property
    def active(self) -> bool:
        return bool(self._forms)

    def feed(self, chunk: bytes) -> bytes:
        """The part of the stream (up to and including ``chunk``) that can be released, masked."""
        if not self._forms:
            return chunk
        self._pending += chunk
        return self._release(final=False)

    def finish(self, *, complete: bool = True) -> bytes:
        """Whatever was held back, masked. ``complete``: the stream really ended (EOF); when it was cut short, a
        held-back beginning of a form is masked too, since its end may be what was lost."""
        if not self._forms:
            return b""
        if complete:
            return self._release(final=True)
        released = self._release(final=False)
        if self._pending and not self._carry:
            released += MASK
            self.count += 1
        self._pending, self._carry = b"", 0
        return released

    def _release(self, *, final: bool) -> bytes:
        data, carry = self._pending, self._carry
        stretches = self._stretches(data, carry)
        cut = len(data) if final else self._partial_start(data)
        out = bytearray()
        position = 0
        self._carry = 0
        for start, end, continued in stretches:
            if start >= cut:
                if continued:  # nothing released at all: the masked stretch still begins what is held back
                    self._carry = end - cut
                break
            out += data[position:start]
            if not continued:
                out += MASK
                self.count += 1
            if end > cut:  # the stretch goes on into what is held back: that part is masked already
                self._carry = end - cut
                position = cut
                break
            position = end
        out += data[position:cut]
        self._pending = data[cut:]
        return bytes(out)

    def _stretches(self, data: bytes, carry: int) -> list[tuple[int, int, bool]]:
        """Every occurrence of every form in ``data`` merged into stretches ``(start, end, continued)``;
        ``continued``: it goes on from a stretch masked in released output (the first ``carry`` bytes)."""
        found = [(0, carry)] if carry else []
        for form in self._forms:
            at = data.find(form)
            while at >= 0:
                found.append((at, at + len(form)))
                at = data.find(form, at + 1)
        found.sort()
        merged: list[tuple[int, int, bool]] = []
        for start, end in found:
            if merged and start < merged[-1][1]:
                first, last, continued = merged[-1]
                merged[-1] = (first, max(last, end), continued)
            else:
                merged.append((start, end, carry > 0 and start == 0))
        return merged

    def _partial_start(self, data: bytes) -> int:
        """Where the held-back part begins: the earliest position whose rest of ``data`` is a form's beginning
        (and shorter than it); ``len(data)`` if there is none."""
        for at in range(max(0, len(data) - self._longest + 1), len(data)):
            rest = data[at:]
            for form in self._starts.get(data[at], ()):
                if len(form) > len(rest) and form.startswith(rest):
                    return at
        return len(data)


def redact(values: Iterable[bytes], data: bytes) -> tuple[bytes, int]:
    """``data`` with the forms of ``values`` masked, and how many masks were written (all at once)."""
    redactor = Redactor(values)
    return redactor.feed(data) + redactor.finish(), redactor.count
