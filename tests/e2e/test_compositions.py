"""Compositions against a real hub and real daemons: a stored job assigned to an ensemble is played once by every
member, those present, one offline at the time, and those that join later with an enrollment token; a daemon
killed mid-play reports it ``interrupted`` and never plays it again, across reconnects and a hub restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clients.daemon.config import DaemonConfig, write_config
from clients.master.models import Performance, PlayOutcome
from clients.master.sdk import Master, MasterError
from tests.e2e.support import Daemons, HubProcess, eventually, run_crc
from tests.e2e.test_enrollment import enroll

# Each play appends a line to the machine's own file, so a second play of one composition would show; a
# machine with a ".hang" file hangs until killed (the daemon killed mid-play).
TUNE = """echo "$CRC_ORDER_ID" >> "$PLAYS/$CRC_MACHINE"
if [ -e "$PLAYS/$CRC_MACHINE.hang" ]; then sleep 120; fi
echo "tuned $CRC_MACHINE"
"""


def plays(folder: Path, machine: str) -> list[str]:
    path = folder / machine
    return path.read_text().split() if path.exists() else []


async def outcomes(master: Master) -> dict[str, Performance]:
    return {p.machine: p for p in await master.performances("band", "tune")}


async def until_outcomes(master: Master, wanted: dict[str, PlayOutcome], what: str) -> dict[str, Performance]:
    async def reached() -> dict[str, Performance] | None:
        found = await outcomes(master)
        return found if all(n in found and found[n].outcome is o for n, o in wanted.items()) else None

    return await eventually(reached, timeout=60, what=what)


async def test_every_member_plays_an_assigned_job_once_present_offline_joining_or_killed_mid_play(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    folder = tmp_path / "plays"
    folder.mkdir()
    minted = await master.create_scenario("band", [*((f"a{i}", "linux", "artist") for i in range(1, 6)),
                                                   ("conductor", "linux", "conductor")])  # fmt: skip
    running = {}
    for m in minted:
        config = tmp_path / "configs" / f"{m.name}.toml"
        write_config(config, DaemonConfig(hub.url, "band", m.name, m.identity, master.identity.public))
        if m.name != "a5":  # offline while the job is assigned
            running[m.name] = daemons.start(config)
    await master.put_job("tune", TUNE)

    answer = await master.assign_job("band", "role:artist", "tune", env={"PLAYS": str(folder)})

    assert sorted(answer["queued"]) == ["a1", "a2", "a3", "a4", "a5"] and not answer["unchanged"]
    present = {f"a{i}": PlayOutcome.PLAYED for i in range(1, 5)}
    found = await until_outcomes(master, {**present, "a5": PlayOutcome.WAITING}, "the present members to play")
    assert "conductor" not in found
    assert found["a1"].result is not None and found["a1"].result.stdout == b"tuned a1\n"
    assert found["a1"].result.verified and found["a1"].version == 1

    running["a5"] = daemons.start(tmp_path / "configs" / "a5.toml")
    await until_outcomes(master, {"a5": PlayOutcome.PLAYED}, "the member that was offline to play on connecting")

    token = await master.create_enrollment("band", "artist", uses=3)
    for name in ("j1", "j2", "j3"):
        joined = await enroll(hub, token.text(), name, tmp_path / "configs" / f"{name}.toml")
        assert joined.returncode == 0, joined.stderr
    (folder / "j3.hang").touch()
    for name in ("j1", "j2", "j3"):
        running[name] = daemons.start(tmp_path / "configs" / f"{name}.toml")
    # The joiners play before their master has looked at them: their token told them their role.
    await eventually(lambda: len(plays(folder, "j1")) == len(plays(folder, "j2")) == len(plays(folder, "j3")) == 1,
                     timeout=60, what="every joiner to start its play")  # fmt: skip
    running["j3"].kill()  # mid-play: the daemon and its command
    (folder / "j3.hang").unlink()
    running["j3"].start()
    joiners = {"j1": PlayOutcome.PLAYED, "j2": PlayOutcome.PLAYED, "j3": PlayOutcome.FAILED}
    found = await until_outcomes(master, {**present, "a5": PlayOutcome.PLAYED, **joiners}, "the joiners' plays")
    assert found["j3"].result is not None and found["j3"].result.status == "interrupted"

    # Nobody plays twice: not on assigning again, not after every daemon and the hub itself restarted.
    again = await master.assign_job("band", "role:artist", "tune", env={"PLAYS": str(folder)})
    assert again["unchanged"] and again["composition"] == answer["composition"]
    await hub.arestart()
    for daemon in running.values():
        daemon.restart()
    await eventually(lambda: all(d.running for d in running.values()), timeout=30, what="the daemons to run")
    await asyncio.sleep(3)  # time for any redelivery to be (wrongly) played
    final = await outcomes(master)
    assert {n: p.outcome for n, p in final.items()} == {**present, "a5": PlayOutcome.PLAYED, **joiners}
    members = [*present, "a5", *joiners]
    assert {n: len(plays(folder, n)) for n in members} == dict.fromkeys(members, 1)
    assert not plays(folder, "conductor")
    order_ids = {plays(folder, n)[0] for n in members}
    assert len(order_ids) == len(members) and all(i.startswith(answer["composition"] + ".") for i in order_ids)


async def test_a_joiner_waiting_for_approval_plays_once_approved_and_unassigning_stops_the_rest(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    folder = tmp_path / "plays"
    folder.mkdir()
    await master.create_scenario("band", [("lead", "linux", "artist")])
    await master.put_job("tune", TUNE)
    await master.assign_job("band", "role:artist", "tune", env={"PLAYS": str(folder)})
    gated = await master.create_enrollment("band", "artist", uses=2, approve=True)
    for name in ("held", "later"):
        assert (await enroll(hub, gated.text(), name, tmp_path / f"{name}.toml")).returncode == 0
    daemons.start(tmp_path / "held.toml")

    found = await until_outcomes(master, {"held": PlayOutcome.PENDING}, "the unapproved joiner to be listed pending")
    assert not plays(folder, "held") and found["held"].result is None

    await master.certify_joined("band", approve=["held"])
    await until_outcomes(master, {"held": PlayOutcome.PLAYED}, "the approved joiner to play")

    [removed] = await master.unassign_job("band", "tune")
    assert removed["cancelled"] == ["lead"]  # offline all along; "later" was not approved, so had nothing queued
    await master.certify_joined("band", approve=["later"])
    daemons.start(tmp_path / "later.toml")
    await eventually(lambda: daemons.started["later"].running, timeout=10, what="the late joiner's daemon to run")
    await asyncio.sleep(3)  # time for a play it must not get
    assert not plays(folder, "later")
    with pytest.raises(MasterError, match="not assigned"):
        await master.performances("band", "tune")
    assert "not assigned" in run_crc(hub, "job", "performances", "band", "tune").stderr


async def test_the_cli_assigns_lists_shows_performances_and_unassigns(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    minted = await master.create_scenario("band", [("ok", "linux", "artist"), ("bad", "linux", "artist")])
    for m in minted:
        config = tmp_path / f"{m.name}.toml"
        write_config(config, DaemonConfig(hub.url, "band", m.name, m.identity, master.identity.public))
        daemons.start(config)
    script = tmp_path / "check.sh"
    script.write_text('echo "checked $CRC_MACHINE"; [ "$CRC_MACHINE" = ok ]\n')
    assert run_crc(hub, "job", "add", "check", str(script)).returncode == 0

    assigned = run_crc(hub, "job", "assign", "band", "role:artist", "check", "--ttl", "30d")

    assert assigned.returncode == 0, assigned.stderr
    assert "assigned job check to role:artist" in assigned.stdout and "queued for" in assigned.stdout

    async def all_played() -> str | None:
        shown = await asyncio.to_thread(run_crc, hub, "job", "performances", "band", "check")
        return shown.stdout if "1 failed, 1 played" in shown.stdout else None

    table = await eventually(all_played, timeout=30, what="both plays to finish")
    rows = {line.split()[0]: line for line in table.splitlines()}
    assert "played" in rows["ok"] and "checked ok" in rows["ok"] and "exit 0" in rows["ok"]
    assert "failed" in rows["bad"] and "exit 1" in rows["bad"]
    assert run_crc(hub, "job", "performances", "band", "check").returncode == 1  # a member's play failed
    listed = run_crc(hub, "job", "assignments", "band")
    assert listed.returncode == 0 and "check" in listed.stdout and "role:artist" in listed.stdout
    again = run_crc(hub, "job", "assign", "band", "role:artist", "check", "--ttl", "30d")
    assert again.returncode == 0 and "already" in again.stdout
    gone = run_crc(hub, "job", "unassign", "band", "check")
    assert gone.returncode == 0 and "unassigned composition" in gone.stdout
    for argv in (("job", "unassign", "band", "check"), ("job", "performances", "band", "check"),
                 ("job", "assign", "band", "role:artist", "nosuchjob")):  # fmt: skip
        refused = run_crc(hub, *argv)
        assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert "Traceback" not in refused.stderr


async def test_compositions_carry_over_a_master_key_rotation_without_a_second_play(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    """Re-signed under their ids by the new key: a member offline during the rotation plays the play queued
    before it (ahead of the rotation order), and a machine added afterwards plays the re-signed one."""
    folder = tmp_path / "plays"
    folder.mkdir()
    minted = await master.create_scenario("band", [("on", "linux", "artist"), ("off", "linux", "artist")])
    configs = {}
    for m in minted:
        configs[m.name] = tmp_path / f"{m.name}.toml"
        write_config(configs[m.name], DaemonConfig(hub.url, "band", m.name, m.identity, master.identity.public))
    online = daemons.start(configs["on"])
    await master.put_job("tune", TUNE)
    assigned = await master.assign_job("band", "role:artist", "tune", env={"PLAYS": str(folder)})
    await until_outcomes(master, {"on": PlayOutcome.PLAYED}, "the online member to play")

    rotated = await asyncio.to_thread(run_crc, hub, "rotate-key", "--timeout", "8", timeout=60)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    async with await Master.connect(hub.url, hub.key_path, timeout=10) as moved:
        [carried] = await moved.assignments("band")
        assert carried.id == assigned["composition"] and carried.master == moved.identity.id
        [late] = await moved.add_machines("band", [("late", "linux", "artist")])
        configs["late"] = tmp_path / "late.toml"
        write_config(configs["late"], DaemonConfig(hub.url, "band", "late", late.identity, moved.identity.public))
        daemons.start(configs["off"])
        daemons.start(configs["late"])
        everyone = dict.fromkeys(("on", "off", "late"), PlayOutcome.PLAYED)
        await until_outcomes(moved, everyone, "the offline and the added member to play")
        online.restart()
        await asyncio.sleep(2)
        assert {n: len(plays(folder, n)) for n in everyone} == dict.fromkeys(everyone, 1)
