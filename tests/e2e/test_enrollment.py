"""Machines join by themselves with an enrollment token, against a real hub: ``crc-daemon enroll`` makes the key on
the machine and writes the config, the daemon connects, and the master certifies only genuine joiners within the
token's uses; revoked, expired, widened and made-up ones are refused with a clear error."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from clients.link import hub_http_url
from clients.master.enrollment import JoinState
from clients.master.sdk import Master, MasterError
from protocol import Identity
from protocol.enrollment import EnrollmentToken
from tests.e2e.support import PYTHON, ROOT, Daemons, HubProcess, child_env, eventually, run_crc


def crc_daemon_enroll(
    hub: HubProcess, token: str, name: str, config: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    token_file = config.with_suffix(".token")
    token_file.write_text(token)
    return subprocess.run(
        [PYTHON, "-m", "clients.daemon.cli", "enroll", "--hub", hub.url, "--token", f"@{token_file}", "--name", name,
         "--config", str(config), "--no-service", *extra],
        env=child_env(), cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def enroll(hub: HubProcess, token: str, name: str, config: Path) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(crc_daemon_enroll, hub, token, name, config)


async def test_machines_join_with_a_token_up_to_its_uses_and_obey_their_master(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await master.create_scenario("farm", [("db", "linux", "db")])
    token = await master.create_enrollment("farm", "workers", labels={"tier": "back"}, uses=2)

    outcomes = [await enroll(hub, token.text(), f"w{i}", tmp_path / f"w{i}.toml") for i in range(3)]

    assert [o.returncode for o in outcomes] == [0, 0, 1], [o.stderr for o in outcomes]
    assert "joined farm/w0 (role workers)" in outcomes[0].stdout
    assert "used by as many machines as it allows" in outcomes[2].stderr
    assert len(outcomes[2].stderr.strip().splitlines()) == 1 and not (tmp_path / "w2.toml").exists()
    assert (tmp_path / "w0.toml").stat().st_mode & 0o777 == 0o600
    for name in ("w0", "w1"):
        daemons.start(tmp_path / f"{name}.toml")
    scenario = await master.scenario("farm")  # certifies the genuine joiners
    joined = {m.name: m for m in scenario.machines if m.name != "db"}
    assert sorted(joined) == ["w0", "w1"] and all(m.trusted for m in joined.values())
    assert {(m.role, m.labels["tier"]) for m in joined.values()} == {("workers", "back")}

    async def both_answer() -> bool:
        results = await master.run("farm", "role:workers", "echo obeying", wait_timeout=10)
        return len(results) == 2 and all(r.ok and r.verified and r.stdout == b"obeying\n" for r in results)

    await eventually(both_answer, timeout=30, what="both joiners to run a command of their master")
    [info] = await master.enrollments("farm")
    assert (info.used, [j.state for j in info.joiners]) == (2, [JoinState.CERTIFIED, JoinState.CERTIFIED])


async def test_a_revoked_expired_widened_or_foreign_token_is_refused(
    hub: HubProcess, master: Master, tmp_path: Path
) -> None:
    await master.create_scenario("farm", [("db", "linux", "db")])
    revoked = await master.create_enrollment("farm", "workers")
    await master.revoke_enrollment("farm", revoked.claims.id)
    expired = await master.create_enrollment("farm", "workers", ttl=0.5)
    live = await master.create_enrollment("farm", "workers", uses=1)
    widened = EnrollmentToken(replace(live.claims, uses=50), live.signature, live.secret)
    stranger = Identity.generate(lambda n: b"\x05" * n)
    foreign = EnrollmentToken.issue(stranger, replace(live.claims, master_key=stranger.public))
    await asyncio.sleep(0.6)

    cases = {"revoked": revoked, "expired": expired, "widened": widened, "foreign": foreign}
    refusals = {what: await enroll(hub, t.text(), what, tmp_path / f"{what}.toml") for what, t in cases.items()}

    for what, fragment in (("revoked", "was revoked"), ("expired", "expired"), ("widened", "not signed by its master"),
                           ("foreign", "not enrolled on this hub")):  # fmt: skip
        done = refusals[what]
        assert done.returncode == 1 and fragment in done.stderr, (what, done.stderr)
        assert "Traceback" not in done.stderr and not (tmp_path / f"{what}.toml").exists()
    garbled = await enroll(hub, live.text()[:-30], "garbled", tmp_path / "garbled.toml")
    assert garbled.returncode == 2 and "enrollment token" in garbled.stderr
    assert [m.name for m in (await master.scenario("farm")).machines] == ["db"]


async def test_a_registration_the_hub_makes_up_is_never_certified(
    hub: HubProcess, master: Master, tmp_path: Path
) -> None:
    """The hub has the claims and their signature (it checks them) but not the token's secret: a machine it adds
    with its own key, through the very endpoint, cannot carry a registration its master accepts."""
    await master.create_scenario("farm", [("db", "linux", "db")])
    token = await master.create_enrollment("farm", "workers", uses=3)
    genuine = await enroll(hub, token.text(), "real", tmp_path / "real.toml")
    assert genuine.returncode == 0, genuine.stderr
    hub_key = Identity.generate(lambda n: b"\x09" * n)
    forged = replace(token, secret=b"\x00" * 32).register("implant", "linux", hub_key, "ab" * 32)
    body = {
        "claims": token.claims.to_wire(), "signature": base64.b64encode(token.signature).decode(),
        "registration": {**forged.to_wire(), "proof": base64.b64encode(forged.proof).decode()},
    }  # fmt: skip
    async with aiohttp.ClientSession() as http, http.post(hub_http_url(hub.url) + "/v1/enroll", json=body) as answer:
        assert answer.status == 201, await answer.text()  # the hub cannot tell: it lets it in

    scenario = await master.scenario("farm")

    by_name = {m.name: m for m in scenario.machines}
    assert by_name["real"].trusted and not by_name["implant"].trusted
    [info] = await master.enrollments("farm")
    states = {j.name: (j.state, j.problem) for j in info.joiners}
    assert states["real"] == (JoinState.CERTIFIED, "")
    assert states["implant"][0] is JoinState.REFUSED and "not made with enrollment token" in states["implant"][1]
    with pytest.raises(MasterError, match="nothing was sent: machine 'implant'"):  # never an order for it
        await master.run("farm", "all", "true", wait_timeout=5)


async def test_with_approve_a_joiner_waits_until_its_master_approves_it(
    hub: HubProcess, master: Master, daemons: Daemons, tmp_path: Path
) -> None:
    await master.create_scenario("farm", [("db", "linux", "db")])
    token = await master.create_enrollment("farm", "workers", uses=2, approve=True)
    for name in ("w0", "w1"):
        assert (await enroll(hub, token.text(), name, tmp_path / f"{name}.toml")).returncode == 0
    daemons.start(tmp_path / "w0.toml")

    waiting = {m.name: m.trusted for m in (await master.scenario("farm")).machines}
    [info] = await master.enrollments("farm")

    assert waiting == {"db": True, "w0": False, "w1": False}
    assert [j.state for j in info.joiners] == [JoinState.PENDING, JoinState.PENDING]
    with pytest.raises(MasterError, match="nothing was sent"):
        await master.run("farm", "w0", "true", wait_timeout=5)
    approve = await asyncio.to_thread(run_crc, hub, "machine", "approve", "farm", "w0", "nobody")
    assert approve.returncode == 1 and "approved w0" in approve.stdout and "nobody" in approve.stderr
    (result,) = await master.run("farm", "w0", "echo approved", wait_timeout=30)
    assert result.ok and result.stdout == b"approved\n"
    assert {m.name: m.trusted for m in (await master.scenario("farm")).machines}["w1"] is False


async def test_a_scenario_may_start_empty_for_machines_that_will_join(hub: HubProcess, master: Master) -> None:
    created = await asyncio.to_thread(run_crc, hub, "scenario", "create", "office")
    assert created.returncode == 0 and "no machines yet" in created.stdout, created.stderr
    assert (await master.scenario("office")).machines == []
    no_out = await asyncio.to_thread(run_crc, hub, "scenario", "create", "lab", "--machine", "a:linux")
    assert no_out.returncode == 2 and no_out.stderr.strip().splitlines() == [
        "crc scenario create: --out DIR is needed for the machines' daemon configs"
    ]
    refused = await asyncio.to_thread(run_crc, hub, "scenario", "add-machine", "office", "--out", "x")
    assert refused.returncode == 2  # argparse: at least one NAME
