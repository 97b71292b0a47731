"""The ``crc`` command line against a real hub and daemons: exit codes, streamed output, messages.

One hub and one scenario (created with ``crc scenario create``) serve the whole module: each CLI call is a new
process, so the setup is paid once.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.support import Daemons, HubProcess, run_crc


@dataclass
class Shop:
    hub: HubProcess
    daemons: Daemons
    configs: Path

    def crc(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return run_crc(self.hub, *args, timeout=timeout)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    base = tmp_path_factory.mktemp("cli")
    hub = HubProcess(base / "hub")
    daemons = Daemons(base / "daemons")
    try:
        hub.start()
        env = Shop(hub, daemons, base / "cfg")
        created = env.crc(
            "scenario", "create", "shop", "--machine", "mysql:linux", "--machine", "web:linux:frontend",
            "--out", str(env.configs),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        assert re.search(r"^mysql: [a-z2-7]{20} -> .*mysql\.toml$", created.stdout, re.M), created.stdout
        daemons.start(env.configs / "mysql.toml")
        daemons.start(env.configs / "web.toml")
        waited = env.crc("wait", "shop", "--timeout", "20")
        assert waited.returncode == 0, waited.stderr
        assert "shop: all 2 machines ready" in waited.stdout
        yield env
    finally:
        for process in daemons.started.values():
            process.cleanup()
        hub.cleanup()


def test_run_streams_stdout_and_exits_with_the_commands_exit_code(shop: Shop) -> None:
    done = shop.crc("run", "shop", "mysql", "--", "echo streamed-line; echo to-err >&2; exit 7")
    assert done.returncode == 7, done.stderr
    assert done.stdout == "streamed-line\n"
    assert "to-err" in done.stderr
    assert "mysql: failed (exit 7)" in done.stderr


def test_run_with_several_words_after_the_dashes_keeps_each_word_whole(shop: Shop) -> None:
    done = shop.crc("run", "shop", "mysql", "--", "sh", "-c", "echo two words; exit 5")
    assert done.returncode == 5, done.stderr
    assert done.stdout == "two words\n"


def test_run_on_several_machines_prefixes_lines_and_exits_zero_when_all_succeed(shop: Shop) -> None:
    done = shop.crc("run", "shop", "all", "--", "echo", "hello")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == ["[mysql] hello", "[web] hello"]


def test_run_options_between_target_and_dashes_apply_to_the_run_not_the_command(shop: Shop) -> None:
    done = shop.crc("run", "shop", "mysql", "--command-timeout", "0.5", "--", "echo begun; exec sleep 20")
    assert done.returncode == 1
    assert done.stdout == "begun\n"
    assert "mysql: timed_out" in done.stderr


def test_run_no_wait_prints_the_order_ids_and_results_finds_them(shop: Shop) -> None:
    queued = shop.crc("run", "shop", "all", "--no-wait", "--", "echo later")
    assert queued.returncode == 0, queued.stderr
    rows = [line.split("\t") for line in queued.stdout.splitlines()]
    assert sorted(r[0] for r in rows) == ["mysql", "web"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", r[1]) for r in rows), rows
    ids = [r[1] for r in rows]
    listed = shop.crc("--json", "results", "shop", *ids)
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["order_id"] for r in json.loads(listed.stdout)) == sorted(ids)


def test_run_against_an_unknown_machine_fails_with_a_clear_message(shop: Shop) -> None:
    done = shop.crc("run", "shop", "nosuch", "--", "true")
    assert done.returncode == 1
    assert "nosuch" in done.stderr
    assert "Traceback" not in done.stderr


def test_wait_times_out_naming_the_machine_that_is_down(shop: Shop) -> None:
    created = shop.crc("scenario", "create", "half", "--machine", "up:linux", "--machine", "down:linux",
                       "--out", str(shop.configs / "half"))  # fmt: skip
    assert created.returncode == 0, created.stderr
    shop.daemons.start(shop.configs / "half" / "up.toml", "half-up")
    done = shop.crc("wait", "half", "--timeout", "1")
    assert done.returncode == 1
    assert re.search(r"not ready after 1 s: down$", done.stderr.strip()), done.stderr


def test_scenario_list_and_show(shop: Shop) -> None:
    listed = shop.crc("scenario", "list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^shop\s+2/2 ready$", listed.stdout, re.M), listed.stdout

    shown = shop.crc("scenario", "show", "shop")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("scenario shop (events up to ")
    assert re.search(r"^\s+mysql\s+ready\s+linux\s", shown.stdout, re.M), shown.stdout
    assert re.search(r"^\s+web\s+ready\s+linux\s", shown.stdout, re.M), shown.stdout

    shown_json = json.loads(shop.crc("--json", "scenario", "show", "shop").stdout)
    assert {m["name"]: m["role"] for m in shown_json["machines"]} == {"mysql": "mysql", "web": "frontend"}

    missing = shop.crc("scenario", "show", "nope")
    assert missing.returncode == 1
    assert "not_found" in missing.stderr and "'nope'" in missing.stderr


def test_watch_no_follow_prints_the_log_so_far_and_exits(shop: Shop) -> None:
    done = shop.crc("watch", "shop", "--no-follow", timeout=20)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    cursors = [int(line.split()[0]) for line in lines]
    assert cursors == list(range(1, len(lines) + 1))
    assert "scenario_created" in lines[0]
    assert sum("machine_ready" in line for line in lines) >= 2

    tail = shop.crc("--json", "watch", "shop", "--no-follow", "--after", str(len(lines) - 2), timeout=20)
    events = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [e["cursor"] for e in events][:2] == [len(lines) - 1, len(lines)]
