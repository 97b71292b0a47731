"""``python -m bench`` runs end to end (real hub and relay subprocesses) and writes well-formed records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_output_frames_benchmark_writes_its_records(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "output_frames", "--messages", "300", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = json.loads(out.read_text())
    assert [r["scenario"] for r in records] == ["output_frames"]
    (record,) = records
    assert set(record) == {"scenario", "unit", "ours", "baseline", "baseline_name", "ratio", "target", "met"}
    assert record["unit"] == "msgs/s" and record["baseline_name"] == "bare aiohttp relay"
    assert record["ours"] > 0 and record["baseline"] > 0
    assert abs(record["ratio"] - record["ours"] / record["baseline"]) < 0.01
    assert record["target"] == 0.5 and record["met"] == (record["ratio"] >= 0.5)
    assert "output_frames" in done.stdout


def test_the_soak_runs_bounded_and_reports_hub_memory(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.soak", "--minutes", "0.1", "--daemons", "5", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr  # 1: the memory target was missed, which a smoke run may do
    report = json.loads(out.read_text())
    record = report["record"]
    assert record["scenario"] == "soak_memory" and record["unit"] == "MiB hub RSS" and record["target"] == 1.2
    assert record["ours"] > 0 and record["baseline"] > 0 and len(report["samples"]) >= 2
    assert "hub RSS" in done.stdout


def test_the_plan_engine_benchmark_measures_gorchestrators_example(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "plan_engine", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [record] = json.loads(out.read_text())
    assert record["scenario"] == "plan_engine" and record["unit"] == "ms/run" and record["target"] == 0.1
    assert record["ours"] > 0 and record["baseline"] > 0 and record["met"] == (record["ours"] <= 0.1)
