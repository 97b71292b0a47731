"""Maintaining a block of entries in the hosts file without touching anything else in it.

The daemon owns exactly the lines between :data:`BEGIN_MARKER` and :data:`END_MARKER`; every
other line is the administrator's and is kept byte for byte.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.daemon.files import write_file_atomic

__all__ = [
    "BEGIN_MARKER",
    "END_MARKER",
    "HostsEntry",
    "apply_hosts_file",
    "parse_entries",
    "render_hosts",
]

BEGIN_MARKER = "# BEGIN crc managed block"
END_MARKER = "# END crc managed block"
_NOTICE = "# Written by the crc daemon; edits inside this block are overwritten."

# One DNS label: letters, digits, '-' and '_' (underscores are common in practice and resolvers
# accept them from hosts files); no leading '-'; at most 63 characters.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_MAX_HOSTNAME = 253
# An IPv6 zone id names an interface (Linux: up to 15 characters, Windows: a number). ``ipaddress`` accepts any
# text after '%', newlines included, which would let whoever sends the entry write lines of its own.
_ZONE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
_DEFAULT_MODE = 0o644


@dataclass(frozen=True)
class HostsEntry:
    """One hosts line: an address and the names that resolve to it."""

    ip: str
    names: tuple[str, ...]


def parse_entries(raw: Sequence[Mapping[str, Any]]) -> list[HostsEntry]:
    """Validate the wire form ``[{"ip": "10.0.0.2", "names": ["db", "db.lan"]}, ...]``.

    Addresses are normalised (e.g. IPv6 compressed). Raises ``ValueError`` naming the offending
    entry and field.
    """
    if isinstance(raw, str | bytes) or not isinstance(raw, Sequence):
        raise ValueError(f"hosts entries must be a list, got {type(raw).__name__}")
    entries = []
    for index, item in enumerate(raw):
        where = f"hosts entry #{index}"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: must be a mapping with 'ip' and 'names', got {type(item).__name__}")
        ip = item.get("ip")
        if not isinstance(ip, str):
            raise ValueError(f"{where}: 'ip' must be a string, got {ip!r}")
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise ValueError(f"{where}: {ip!r} is not a valid IPv4 or IPv6 address") from None
        zone = getattr(address, "scope_id", None)
        if _UNSAFE.search(ip) or (zone is not None and not _ZONE_ID.fullmatch(zone)):
            raise ValueError(f"{where}: {ip!r} is not a valid IPv4 or IPv6 address (zone id or characters)")
        names = item.get("names")
        if isinstance(names, str | bytes) or not isinstance(names, Sequence) or not names:
            raise ValueError(f"{where} ({ip}): 'names' must be a non-empty list of host names")
        for name in names:
            if not isinstance(name, str) or len(name) > _MAX_HOSTNAME or not _HOSTNAME.fullmatch(name):
                raise ValueError(f"{where} ({ip}): {name!r} is not a valid host name")
        entries.append(HostsEntry(str(address), tuple(names)))
    return entries


def render_hosts(existing: str, entries: Sequence[HostsEntry], newline: str = "\n") -> str:
    """Return ``existing`` with the managed block set to ``entries``.

    An existing block is replaced where it stands; otherwise the block is appended at the end.
    With no entries the block is removed. Lines outside the block are kept as they are (only a
    missing final newline is added before an appended block). Rendering is idempotent.
    Raises ``ValueError`` for a broken block (BEGIN without END, END without BEGIN, nested BEGIN)
    rather than guess where the administrator's lines start again.
    """
    lines = _split_lines(existing)
    blocks = _find_blocks(lines)
    block = _render_block(entries, newline) if entries else []
    if not blocks:
        if not block:
            return existing
        prefix = existing if not existing or existing.endswith("\n") else existing + newline
        return prefix + "".join(block)
    # Several complete blocks can only come from outside interference; collapsing them into the
    # first one's place is safe because none of the administrator's lines are involved.
    out: list[str] = []
    position = 0
    for number, (start, end) in enumerate(blocks):
        out.extend(lines[position:start])
        if number == 0:
            out.extend(block)
        position = end + 1
    out.extend(lines[position:])
    return "".join(out)


def apply_hosts_file(path: str | Path, entries: Sequence[HostsEntry], newline: str = "\n") -> bool:
    """Bring the managed block of the hosts file at ``path`` up to date; return True if it changed.

    The file is replaced atomically and keeps its permission bits; a missing file is created
    (mode 0644). Bytes that are not valid UTF-8 are preserved as they are.
    """
    # Replace the file a symlink points to, not the symlink itself.
    target = Path(os.path.realpath(path))
    try:
        raw = target.read_bytes()
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        raw, mode = b"", _DEFAULT_MODE
    # surrogateescape round-trips any byte sequence, so foreign encodings survive untouched.
    existing = raw.decode("utf-8", "surrogateescape")
    rendered = render_hosts(existing, entries, newline)
    if rendered == existing:
        return False
    data = rendered.encode("utf-8", "surrogateescape")
    try:
        write_file_atomic(target, data, mode)
    except OSError as exc:
        # Containers bind-mount /etc/hosts: it cannot be renamed over, only rewritten in place.
        if exc.errno != errno.EBUSY:
            raise
        _rewrite_in_place(target, data)
    return True


def _split_lines(text: str) -> list[str]:
    """Split after each '\\n' only (str.splitlines would also split on form feeds and the like)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _find_blocks(lines: Sequence[str]) -> list[tuple[int, int]]:
    """(begin, end) line indexes of every managed block, inclusive."""
    blocks = []
    begin: int | None = None
    for index, line in enumerate(lines):
        text = line.strip()
        if text == BEGIN_MARKER:
            if begin is not None:
                raise ValueError(
                    f"hosts file: {BEGIN_MARKER!r} on line {index + 1} inside the block opened on "
                    f"line {begin + 1}; fix the file by hand"
                )
            begin = index
        elif text == END_MARKER:
            if begin is None:
                raise ValueError(
                    f"hosts file: {END_MARKER!r} on line {index + 1} without a preceding "
                    f"{BEGIN_MARKER!r}; fix the file by hand"
                )
            blocks.append((begin, index))
            begin = None
    if begin is not None:
        raise ValueError(
            f"hosts file: {BEGIN_MARKER!r} on line {begin + 1} has no {END_MARKER!r}; fix the file by hand"
        )
    return blocks


def _render_block(entries: Sequence[HostsEntry], newline: str) -> list[str]:
    for entry in entries:  # entries not made by parse_entries still write one line each, inside the block
        if any(_UNSAFE.search(field) or not field for field in (entry.ip, *entry.names)) or not entry.names:
            raise ValueError(f"hosts entry {entry.ip!r} {entry.names!r} would not be one line: refused")
    body = [f"{entry.ip}\t{' '.join(entry.names)}" for entry in entries]
    return [line + newline for line in (BEGIN_MARKER, _NOTICE, *body, END_MARKER)]


def _rewrite_in_place(path: Path, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.write(data)
        file.truncate()
        file.flush()
        os.fsync(file.fileno())
