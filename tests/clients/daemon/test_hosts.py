"""The managed block in the hosts file."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from clients.daemon.hosts import (
    BEGIN_MARKER,
    END_MARKER,
    HostsEntry,
    apply_hosts_file,
    parse_entries,
    render_hosts,
)

SYSTEM = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
DB = HostsEntry("10.0.0.2", ("db", "db.lan"))
WEB = HostsEntry("10.0.0.3", ("web",))


def block_of(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[lines.index(BEGIN_MARKER) : lines.index(END_MARKER) + 1]


def test_the_block_is_appended_after_the_existing_lines():
    rendered = render_hosts(SYSTEM, [DB, WEB])

    assert rendered.startswith(SYSTEM)
    assert block_of(rendered)[0] == BEGIN_MARKER
    assert "10.0.0.2\tdb db.lan" in block_of(rendered)
    assert "10.0.0.3\tweb" in block_of(rendered)
    assert rendered.endswith(END_MARKER + "\n")


def test_lines_outside_the_block_are_kept_byte_for_byte():
    existing = "# comment with trailing spaces   \n\n10.1.1.1   odd\tspacing\f\n" + SYSTEM
    rendered = render_hosts(render_hosts(existing, [DB]), [WEB])

    assert rendered.startswith(existing)


def test_an_existing_block_is_replaced_where_it_stands():
    before = "127.0.0.1 localhost\n"
    after = "# admin's own entries\n192.168.1.9 printer\n"
    existing = before + render_hosts("", [DB]) + after

    rendered = render_hosts(existing, [WEB])

    assert rendered.startswith(before)
    assert rendered.endswith(after)
    assert "db.lan" not in rendered
    assert "10.0.0.3\tweb" in block_of(rendered)
    assert rendered.count(BEGIN_MARKER) == 1


def test_rendering_is_idempotent():
    once = render_hosts(SYSTEM, [DB, WEB])

    assert render_hosts(once, [DB, WEB]) == once


def test_no_entries_remove_the_block_and_nothing_else():
    with_block = render_hosts(SYSTEM, [DB])

    assert render_hosts(with_block, []) == SYSTEM


def test_no_entries_and_no_block_change_nothing():
    assert render_hosts(SYSTEM, []) == SYSTEM
    assert render_hosts("", []) == ""


def test_a_file_without_trailing_newline_gets_one_before_the_block():
    rendered = render_hosts("127.0.0.1 localhost", [DB])

    assert rendered.startswith("127.0.0.1 localhost\n" + BEGIN_MARKER + "\n")
    assert render_hosts(rendered, [DB]) == rendered


def test_a_block_at_the_end_without_trailing_newline_is_replaced():
    existing = render_hosts(SYSTEM, [DB]).rstrip("\n")

    rendered = render_hosts(existing, [WEB])

    assert rendered.startswith(SYSTEM)
    assert rendered.endswith(END_MARKER + "\n")


def test_an_empty_file_gets_just_the_block():
    rendered = render_hosts("", [DB])

    assert rendered.startswith(BEGIN_MARKER)


def test_crlf_files_get_a_crlf_block():
    existing = "127.0.0.1 localhost\r\n::1 localhost\r\n"

    rendered = render_hosts(existing, [DB], newline="\r\n")

    assert rendered.startswith(existing)
    assert "\n" not in rendered.replace("\r\n", "")
    assert render_hosts(rendered, [DB], newline="\r\n") == rendered
    assert render_hosts(rendered, [], newline="\r\n") == existing


def test_a_crlf_file_without_trailing_newline_is_ended_with_crlf():
    rendered = render_hosts("127.0.0.1 localhost", [DB], newline="\r\n")

    assert rendered.startswith("127.0.0.1 localhost\r\n" + BEGIN_MARKER + "\r\n")


def test_a_begin_without_end_is_refused_rather_than_eating_the_rest():
    broken = SYSTEM + BEGIN_MARKER + "\n10.0.0.2 db\n192.168.1.9 printer\n"

    with pytest.raises(ValueError, match="no '# END crc managed block'"):
        render_hosts(broken, [DB])


def test_an_end_without_begin_is_refused():
    with pytest.raises(ValueError, match="without a preceding"):
        render_hosts(SYSTEM + END_MARKER + "\n", [DB])


def test_a_nested_begin_is_refused():
    nested = BEGIN_MARKER + "\n" + BEGIN_MARKER + "\n" + END_MARKER + "\n"

    with pytest.raises(ValueError, match="inside the block"):
        render_hosts(nested, [DB])


def test_duplicate_blocks_are_collapsed_into_the_first():
    block = render_hosts("", [DB])
    existing = "a\n" + block + "b\n" + block + "c\n"

    rendered = render_hosts(existing, [WEB])

    assert rendered.count(BEGIN_MARKER) == 1
    lines = rendered.splitlines()
    assert lines[0] == "a"
    assert lines[1] == BEGIN_MARKER
    assert lines[-2:] == ["b", "c"]


def test_parse_entries_accepts_the_wire_form():
    entries = parse_entries(
        [
            {"ip": "10.0.0.2", "names": ["db", "db.lan"]},
            {"ip": "2001:db8:0:0::1", "names": ("v6-host_1.example.com.",)},
        ]
    )

    assert entries == [DB, HostsEntry("2001:db8::1", ("v6-host_1.example.com.",))]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([{"ip": "10.0.0.256", "names": ["a"]}], "not a valid IPv4 or IPv6 address"),
        ([{"ip": "db", "names": ["a"]}], "not a valid IPv4 or IPv6 address"),
        ([{"ip": " 10.0.0.1", "names": ["a"]}], "not a valid IPv4 or IPv6 address"),
        ([{"ip": 10, "names": ["a"]}], "'ip' must be a string"),
        ([{"names": ["a"]}], "'ip' must be a string"),
        ([{"ip": "10.0.0.1", "names": []}], "non-empty list"),
        ([{"ip": "10.0.0.1", "names": "db"}], "non-empty list"),
        ([{"ip": "10.0.0.1", "names": ["bad name"]}], "'bad name' is not a valid host name"),
        ([{"ip": "10.0.0.1", "names": ["evil\n1.2.3.4 bank"]}], "is not a valid host name"),
        ([{"ip": "10.0.0.1", "names": ["a#comment"]}], "is not a valid host name"),
        ([{"ip": "10.0.0.1", "names": ["-leading"]}], "is not a valid host name"),
        ([{"ip": "10.0.0.1", "names": ["a" * 64]}], "is not a valid host name"),
        ([{"ip": "10.0.0.1", "names": [1]}], "is not a valid host name"),
        (["10.0.0.1 db"], "must be a mapping"),
        ("10.0.0.1 db", "must be a list"),
    ],
)
def test_parse_entries_rejects_bad_input_with_a_clear_message(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_entries(raw)


def test_parse_entries_names_the_offending_entry():
    with pytest.raises(ValueError, match="hosts entry #1"):
        parse_entries([{"ip": "10.0.0.1", "names": ["ok"]}, {"ip": "nope", "names": ["x"]}])


def test_apply_hosts_file_writes_and_reports_a_change(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(SYSTEM)

    assert apply_hosts_file(hosts, [DB]) is True
    assert hosts.read_text() == render_hosts(SYSTEM, [DB])
    assert apply_hosts_file(hosts, [DB]) is False


def test_apply_hosts_file_keeps_the_file_mode(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(SYSTEM)
    hosts.chmod(0o640)

    apply_hosts_file(hosts, [DB])

    assert stat.S_IMODE(os.stat(hosts).st_mode) == 0o640


def test_apply_hosts_file_creates_a_missing_file(tmp_path):
    hosts = tmp_path / "etc" / "hosts"

    assert apply_hosts_file(hosts, [DB]) is True

    assert hosts.read_text() == render_hosts("", [DB])
    assert stat.S_IMODE(os.stat(hosts).st_mode) == 0o644


def test_apply_hosts_file_with_no_entries_and_no_file_creates_nothing(tmp_path):
    assert apply_hosts_file(tmp_path / "hosts", []) is False
    assert not (tmp_path / "hosts").exists()


def test_apply_hosts_file_preserves_bytes_that_are_not_utf8(tmp_path):
    hosts = tmp_path / "hosts"
    latin1 = "# Büro-Drucker\n192.168.1.9 drucker\n".encode("latin-1")
    hosts.write_bytes(latin1)

    apply_hosts_file(hosts, [DB])

    assert hosts.read_bytes().startswith(latin1)


def test_apply_hosts_file_replaces_the_target_of_a_symlink(tmp_path):
    real = tmp_path / "hosts.real"
    real.write_text(SYSTEM)
    link = tmp_path / "hosts"
    link.symlink_to(real)

    apply_hosts_file(link, [DB])

    assert link.is_symlink()
    assert "db.lan" in real.read_text()


def test_apply_hosts_file_refuses_a_broken_block_and_leaves_the_file_alone(tmp_path):
    hosts = tmp_path / "hosts"
    broken = SYSTEM + BEGIN_MARKER + "\n10.0.0.2 db\n"
    hosts.write_text(broken)

    with pytest.raises(ValueError):
        apply_hosts_file(hosts, [DB])

    assert hosts.read_text() == broken


def test_a_bind_mounted_hosts_file_is_rewritten_in_place(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text(SYSTEM)
    inode = os.stat(hosts).st_ino

    def rename_refused(*args: object, **kwargs: object) -> str:
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr("clients.daemon.hosts.write_file_atomic", rename_refused)

    assert apply_hosts_file(hosts, [DB]) is True
    assert hosts.read_text() == render_hosts(SYSTEM, [DB])
    assert os.stat(hosts).st_ino == inode


def test_other_write_errors_propagate(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts"
    hosts.write_text(SYSTEM)

    def disk_full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("clients.daemon.hosts.write_file_atomic", disk_full)

    with pytest.raises(OSError, match="No space left"):
        apply_hosts_file(hosts, [DB])
    assert hosts.read_text() == SYSTEM


@pytest.mark.parametrize(
    "ip",
    [
        "fe80::1%eth0\n10.6.6.6 evil",  # ipaddress accepts a newline in an IPv6 zone id
        "fe80::1%eth0\r\n# END crc managed block\n10.6.6.6 evil",
        "fe80::1%a b",
        "fe80::1%\t",
        "fe80::1%x\x00",
        "fe80::1%" + "z" * 65,
        " 10.0.0.1",
    ],
)
def test_an_address_that_could_add_lines_or_fields_is_refused(ip: str) -> None:
    with pytest.raises(ValueError, match="not a valid IPv4 or IPv6 address"):
        parse_entries([{"ip": ip, "names": ["db"]}])


def test_a_plain_zone_id_is_kept() -> None:
    assert parse_entries([{"ip": "fe80::1%eth0", "names": ["db"]}]) == [HostsEntry("fe80::1%eth0", ("db",))]
    assert parse_entries([{"ip": "fe80::1%12", "names": ["db"]}]) == [HostsEntry("fe80::1%12", ("db",))]


def test_an_entry_made_without_parse_entries_cannot_write_a_second_line() -> None:
    with pytest.raises(ValueError, match="would not be one line"):
        render_hosts("127.0.0.1 localhost\n", [HostsEntry("10.0.0.1\n10.6.6.6", ("evil",))])
    with pytest.raises(ValueError, match="would not be one line"):
        render_hosts("127.0.0.1 localhost\n", [HostsEntry("10.0.0.1", ("db\nx",))])
