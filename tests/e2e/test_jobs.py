"""Stored jobs: named scripts kept on the hub, played on targets (an offline machine runs it when it connects),
each run kept and listed per machine with its exit code, duration and who started it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from clients.master.sdk import Master
from protocol import RemoteError
from tests.e2e.support import HubProcess, run_crc, wait_results


async def test_a_stored_job_runs_now_and_later_and_its_runs_are_kept(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    script = tmp_path / "report.sh"
    script.write_text('echo "report from $CRC_MACHINE"\nexit 0\n')
    added = await asyncio.to_thread(run_crc, hub, "job", "add", "report", str(script))
    assert added.returncode == 0 and "version 1" in added.stdout, added.stderr
    listed = await asyncio.to_thread(run_crc, hub, "job", "list")
    assert "report" in listed.stdout and "sh" in listed.stdout
    shown = await asyncio.to_thread(run_crc, hub, "job", "show", "report")
    assert 'echo "report from $CRC_MACHINE"' in shown.stdout

    shop = await deploy("shop", "web", "late", start=False)
    shop.start("web")
    ran = await asyncio.to_thread(run_crc, hub, "job", "run", "shop", "web", "report", timeout=30)
    assert ran.returncode == 0 and "report from web" in ran.stdout, ran.stderr

    # "late" is offline: the job waits for it, and runs once it connects.
    [queued] = await master.run_job("shop", "late", "report", wait=False)
    assert queued.status == "queued"
    shop.start("late")
    [done] = await wait_results(master, "shop", [queued.order_id], timeout=20)
    assert done.ok and done.stdout == b"report from late\n"

    script.write_text("exit 4\n")
    assert "version 2" in (await asyncio.to_thread(run_crc, hub, "job", "add", "report", str(script))).stdout
    [failed] = await master.run_job("shop", "web", "report")
    assert failed.status == "failed" and failed.exit_code == 4

    runs = await master.job_runs("shop", "report")
    assert [(r.result.machine, r.version, r.result.status) for r in runs] == [
        ("web", 1, "succeeded"), ("late", 1, "succeeded"), ("web", 2, "failed"),
    ]  # fmt: skip
    assert all(r.started_by == master.identity.id and r.duration is not None and r.duration >= 0 for r in runs)
    assert all(r.result.verified for r in runs)
    table = await asyncio.to_thread(run_crc, hub, "job", "runs", "shop")
    assert table.returncode == 0 and table.stdout.count("report") == 3 and "exit 4" in table.stdout

    assert (await asyncio.to_thread(run_crc, hub, "job", "delete", "report")).returncode == 0
    with pytest.raises(RemoteError, match="not_found"):
        await master.job("report")
    assert len(await master.job_runs("shop")) == 3  # history outlives the job


async def test_a_job_names_its_shell_and_a_machine_without_it_says_so(master: Master, deploy) -> None:
    await deploy("shells", "box")
    await master.put_job("ps", "Write-Output hi", shell="powershell")
    [result] = await master.run_job("shells", "box", "ps")
    if shutil.which("pwsh"):
        assert result.ok and b"hi" in result.stdout
    else:
        assert result.status == "failed" and "pwsh" in result.error
    with pytest.raises(RemoteError, match="invalid_request"):
        await master.put_job("odd", "x", shell="fish")
    with pytest.raises(RemoteError, match="invalid_request"):
        await master.put_job("bad name!", "x")


async def test_a_jobs_typed_parameters_reach_its_script_checked_and_defaulted(
    hub: HubProcess, master: Master, deploy, tmp_path: Path
) -> None:
    script = tmp_path / "deploy.sh"
    script.write_text('echo "release=$release replicas=$replicas stage=$stage note=${note-unset}"\n')
    added = await asyncio.to_thread(
        run_crc, hub, "job", "add", "deploy", str(script), "--param", "release", "--param", "replicas:integer=2",
        "--param", "stage:choice(dev|prod)=dev", "--param", "note?",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    shown = await asyncio.to_thread(run_crc, hub, "job", "show", "deploy")
    assert "# parameter stage:choice(dev|prod)=dev" in shown.stdout and "# parameter note?:string" in shown.stdout
    await deploy("shop", "web")

    ran = await asyncio.to_thread(run_crc, hub, "job", "run", "shop", "web", "deploy", "--param", "release=42",
                                  "--param", "stage=prod", timeout=30)  # fmt: skip

    assert ran.returncode == 0 and "release=42 replicas=2 stage=prod note=unset" in ran.stdout, ran.stderr
    for wrong, says in ((["--param", "stage=prod"], "parameter release is required"),
                        (["--param", "release=1", "--param", "replicas=two"], "parameter replicas is an integer"),
                        (["--param", "release=1", "--param", "stage=test"], "stage is one of dev, prod"),
                        (["--param", "release=1", "--param", "colour=red"], "no parameter 'colour'")):  # fmt: skip
        refused = await asyncio.to_thread(run_crc, hub, "job", "run", "shop", "web", "deploy", *wrong)
        assert refused.returncode == 1 and says in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "nothing was sent" in refused.stderr
    bad_spec = await asyncio.to_thread(run_crc, hub, "job", "add", "x", str(script), "--param", "n:float")
    assert bad_spec.returncode == 2 and "type is one of" in bad_spec.stderr
    plan = {"name": "p", "steps": [{"id": "d", "target": "web", "job": "deploy", "params": {"release": 7}}]}
    await master.run_plan("shop", plan)
    [run] = await eventually_runs(master, 2)
    assert run.result.stdout == b"release=7 replicas=2 stage=dev note=unset\n"


async def eventually_runs(master: Master, count: int) -> list[Any]:
    """The newest run of job deploy once there are ``count`` runs."""
    for _ in range(200):
        runs = [r for r in await master.job_runs("shop", "deploy") if r.result.ok]
        if len(runs) >= count:
            return runs[-1:]
        await asyncio.sleep(0.1)
    raise AssertionError("the plan's run of job deploy never finished")
