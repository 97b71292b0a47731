"""The Windows hosts file: the shared managed block, written with CRLF line endings."""

from __future__ import annotations

from pathlib import Path

from clients.daemon.hosts import BEGIN_MARKER, END_MARKER, HostsEntry, apply_hosts_file
from clients.windows.platform import WINDOWS

WINDOWS_HOSTS = (
    "# Copyright (c) 1993-2009 Microsoft Corp.\r\n"
    "#\r\n"
    "# localhost name resolution is handled within DNS itself.\r\n"
    "#\t127.0.0.1       localhost\r\n"
)
ENTRIES = [HostsEntry("10.0.0.2", ("db", "db.shop")), HostsEntry("10.0.0.3", ("web",))]


def test_the_block_is_appended_with_crlf_and_the_rest_is_kept(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(WINDOWS_HOSTS.encode())

    assert apply_hosts_file(hosts, ENTRIES, WINDOWS.newline)

    data = hosts.read_bytes()
    assert data.startswith(WINDOWS_HOSTS.encode())
    block = data[len(WINDOWS_HOSTS) :].decode()
    assert block.startswith(BEGIN_MARKER + "\r\n")
    assert "10.0.0.2\tdb db.shop\r\n10.0.0.3\tweb\r\n" in block
    assert block.endswith(END_MARKER + "\r\n")
    assert b"\n" not in data.replace(b"\r\n", b""), "every line ends in CRLF"


def test_applying_again_changes_nothing_and_updates_replace_the_block_in_place(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(WINDOWS_HOSTS.encode())
    apply_hosts_file(hosts, ENTRIES, WINDOWS.newline)
    first = hosts.read_bytes()

    assert not apply_hosts_file(hosts, ENTRIES, WINDOWS.newline)
    assert hosts.read_bytes() == first

    assert apply_hosts_file(hosts, [HostsEntry("10.0.0.9", ("cache",))], WINDOWS.newline)
    text = hosts.read_bytes().decode()
    assert "10.0.0.9\tcache\r\n" in text and "db.shop" not in text
    assert text.count(BEGIN_MARKER) == 1


def test_a_missing_final_newline_is_completed_with_crlf(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"127.0.0.1 localhost")
    apply_hosts_file(hosts, ENTRIES, WINDOWS.newline)
    assert hosts.read_bytes().startswith(b"127.0.0.1 localhost\r\n" + BEGIN_MARKER.encode() + b"\r\n")


def test_an_empty_entry_list_removes_the_block(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(WINDOWS_HOSTS.encode())
    apply_hosts_file(hosts, ENTRIES, WINDOWS.newline)
    assert apply_hosts_file(hosts, [], WINDOWS.newline)
    assert hosts.read_bytes() == WINDOWS_HOSTS.encode()
