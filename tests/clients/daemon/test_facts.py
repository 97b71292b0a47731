"""Machine facts reported to the hub."""

from __future__ import annotations

import socket

import msgpack

from clients.daemon import facts
from clients.daemon.facts import collect_facts

KEYS = {
    "hostname",
    "fqdn",
    "os",
    "os_release",
    "kernel",
    "arch",
    "python",
    "cpus",
    "memory_total",
    "memory_available",
    "disks",
    "ips",
    "interfaces",
    "boot_time",
    "daemon_version",
}


def test_all_facts_are_present():
    assert set(collect_facts("1.2.3")) == KEYS


def test_facts_survive_a_msgpack_round_trip():
    collected = collect_facts("1.2.3")

    assert msgpack.unpackb(msgpack.packb(collected, use_bin_type=True), raw=False) == collected


def test_the_hostname_is_the_socket_hostname_and_the_version_is_ours():
    collected = collect_facts("1.2.3")

    assert collected["hostname"] == socket.gethostname()
    assert collected["daemon_version"] == "1.2.3"


def test_numbers_and_lists_look_sane():
    collected = collect_facts("1.2.3")

    assert collected["cpus"]["logical"] >= 1
    assert collected["memory_total"] >= collected["memory_available"] > 0
    assert collected["boot_time"] > 0
    assert isinstance(collected["disks"], list)
    for disk in collected["disks"]:
        assert set(disk) == {"mountpoint", "fstype", "total", "free"}
    assert "127.0.0.1" not in collected["ips"]
    assert all(isinstance(addrs, list) for addrs in collected["interfaces"].values())


def test_a_failing_fact_is_none_and_the_rest_still_arrive(monkeypatch):
    def broken() -> None:
        raise RuntimeError("no /proc here")

    monkeypatch.setattr(facts.psutil, "virtual_memory", broken)
    monkeypatch.setattr(facts.psutil, "disk_partitions", broken)
    monkeypatch.setattr(facts.psutil, "net_if_addrs", broken)

    collected = collect_facts("1.2.3")

    assert collected["memory_total"] is None
    assert collected["memory_available"] is None
    assert collected["disks"] is None
    assert collected["ips"] is None
    assert collected["interfaces"] is None
    assert collected["hostname"] == socket.gethostname()


def test_loopback_addresses_are_left_out_of_ips():
    interfaces = {"lo": ["127.0.0.1", "::1"], "eth0": ["10.0.0.5", "fe80::1%eth0"], "eth1": ["10.0.0.5"]}

    assert facts._non_loopback(interfaces) == ["10.0.0.5", "fe80::1%eth0"]
