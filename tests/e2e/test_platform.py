"""The whole platform as a user runs it: `stoker up`, the CLI, a real 2048 run, kills and restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Platform, start_platform, stop_platform, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def stoker(platform: Platform, *args: str) -> Any:
    """Run the CLI against the platform and return its JSON output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env["STOKER_DATA_DIR"] = str(platform.data_dir)
    result = subprocess.run([sys.executable, "-m", "ops", "--json", *args], capture_output=True, text=True,
                            timeout=60, env=env, cwd=ROOT)
    assert result.returncode == 0, f"stoker {' '.join(args)}: {result.stderr}"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else lines


def job_row(platform: Platform, job_id: str) -> dict[str, Any]:
    with platform.client() as client:
        response = client.get(f"/api/v1/jobs/{job_id}")
        response.raise_for_status()
        return response.json()


def wait_status(platform: Platform, job_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    return wait_until(lambda: (row := job_row(platform, job_id))["status"] in statuses and row, timeout,
                      f"job {job_id} to reach {statuses}", platform.log_tail)


def timeline(platform: Platform, job_id: str) -> list[dict[str, Any]]:
    events = stoker(platform, "job", job_id)
    return events if isinstance(events, list) else [events]


def checkpoints(platform: Platform, job_id: str) -> list[dict[str, Any]]:
    with platform.client() as client:
        return client.get(f"/api/v1/jobs/{job_id}/checkpoints").json()["checkpoints"]


def worker_process(platform: Platform) -> psutil.Process:
    for child in psutil.Process(platform.process.pid).children(recursive=True):
        if "services.trainer" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no worker process under stoker up")


def test_train_2048_then_evaluate_its_checkpoint(platform: Platform) -> None:
    job = stoker(platform, "submit", "train", "2048", "--iterations", "300", "--param", "checkpoint_every=100",
                 "--param", "batch_size=64")["job_id"]
    row = wait_status(platform, job, {"completed", "failed"}, timeout=240)
    assert row["status"] == "completed", row
    assert [c["iteration"] for c in checkpoints(platform, job)][-1] == 300
    evaluation = stoker(platform, "submit", "eval", "2048", "--checkpoint", job, "--episodes", "8")["job_id"]
    assert wait_status(platform, evaluation, {"completed", "failed"}, timeout=240)["status"] == "completed"
    with platform.client() as client:
        results = client.get(f"/api/v1/testing/{evaluation}/results").json()
    assert len(results["episodes"]) == 8
    assert results["aggregate_metrics"]["score"]["max"] >= results["aggregate_metrics"]["score"]["min"] > 0


def test_worker_killed_mid_run_resumes_from_its_checkpoint(platform: Platform) -> None:
    job = stoker(platform, "submit", "train", "sleep", "--iterations", "120", "--param", "step_s=0.05",
                 "--param", "checkpoint_every=10")["job_id"]
    wait_until(lambda: any(c["iteration"] >= 20 for c in checkpoints(platform, job)), 120,
               "a checkpoint at iteration 20", platform.log_tail)
    worker_process(platform).send_signal(signal.SIGKILL)
    row = wait_status(platform, job, {"completed", "failed"}, timeout=180)
    assert row["status"] == "completed", row
    events = timeline(platform, job)
    starts = [e["event"] for e in events if e["type"] == "JobStarted"]
    assert len(starts) >= 2, [e["type"] for e in events]
    assert starts[-1]["resumed_from"] >= 20  # counting on from the checkpoint, not from 0
    assert any(e["type"] == "JobRequeued" for e in events)


def test_ctrl_c_and_up_again_resumes_queued_and_running_jobs(tmp_path: Path) -> None:
    first = start_platform(tmp_path)
    try:
        running = stoker(first, "submit", "train", "sleep", "--iterations", "80", "--param", "step_s=0.05",
                         "--param", "checkpoint_every=10")["job_id"]
        queued = stoker(first, "submit", "train", "noop", "--iterations", "5")["job_id"]
        wait_until(lambda: any(c["iteration"] >= 10 for c in checkpoints(first, running)), 120,
                   "a checkpoint of the running job", first.log_tail)
    finally:
        first.process.send_signal(signal.SIGINT)  # Ctrl-C
        first.process.wait(60)
        stop_platform(first)
    second = start_platform(tmp_path)
    try:
        for job in (running, queued):
            assert wait_status(second, job, {"completed", "failed"}, timeout=180)["status"] == "completed"
        starts = [e["event"] for e in timeline(second, running) if e["type"] == "JobStarted"]
        assert starts[-1]["resumed_from"] >= 10
    finally:
        stop_platform(second)
