"""`stoker backup` of a platform with a finished and a running job, `stoker restore` into a new data dir, `stoker up`:
the running job resumes from its last checkpoint and completes, and the restored log is the backed-up one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.e2e.conftest import start_platform, stop_platform, wait_until
from tests.e2e.test_platform import ROOT, checkpoints, stoker, timeline, wait_status

pytestmark = pytest.mark.slow


def cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env["STOKER_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "ops", *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)


def test_backup_then_restore_resumes_the_running_job(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    first = start_platform(tmp_path / "a")
    archive = tmp_path / "platform.tar.gz"
    try:
        done = stoker(first, "submit", "train", "noop", "--iterations", "5")["job_id"]
        assert wait_status(first, done, {"completed", "failed"})["status"] == "completed"
        running = stoker(first, "submit", "train", "sleep", "--iterations", "150", "--param", "step_s=0.05",
                         "--param", "checkpoint_every=10")["job_id"]
        wait_until(lambda: any(c["iteration"] >= 20 for c in checkpoints(first, running)), 120,
                   "a checkpoint at iteration 20", first.log_tail)
        made = cli(first.data_dir, "--json", "backup", str(archive))
        assert made.returncode == 0, made.stderr
        saved = max(c["iteration"] for c in checkpoints(first, running))
    finally:
        stop_platform(first)
    assert archive.stat().st_mode & 0o777 == 0o600  # it holds the credentials
    summary = json.loads(made.stdout)
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        events = [json.loads(line) for line in tar.extractfile("events.jsonl").read().splitlines()]
    assert manifest["events"]["count"] == len(events) == summary["events"] > 0
    assert manifest["buckets"]["checkpoints"]["count"] == summary["checkpoints"] >= 2
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as source, tarfile.open(tampered, "w:gz") as copy:
        for info in source:
            data = source.extractfile(info).read()
            data = data.replace(b'"seq":1,', b'"seq":1 ,') if info.name == "events.jsonl" else data
            info.size = len(data)
            copy.addfile(info, io.BytesIO(data))
    rejected = cli(tmp_path / "c", "restore", str(tampered))
    assert rejected.returncode == 1 and "events.jsonl differs" in rejected.stderr, rejected.stderr

    target = tmp_path / "b"
    (target / "something").mkdir(parents=True)
    refused = cli(target, "restore", str(archive))
    assert refused.returncode == 1 and "not empty" in refused.stderr
    restored = cli(target, "--json", "restore", "--force", str(archive))
    assert restored.returncode == 0, restored.stderr
    result = json.loads(restored.stdout)
    assert result["events"] == len(events) and (Path(result["moved_aside"]) / "something").is_dir()

    second = start_platform(target)
    try:
        assert wait_status(second, done, {"completed"}, timeout=60)
        row = wait_status(second, running, {"completed", "failed"}, timeout=240)
        assert row["status"] == "completed", row
        starts = [e["event"] for e in timeline(second, running) if e["type"] == "JobStarted"]
        assert starts[-1]["resumed_from"] >= 20 and starts[-1]["resumed_from"] <= saved
        exported = tmp_path / "after.jsonl"
        assert cli(target, "events", "export", str(exported)).returncode == 0
        replayed = [json.loads(line) for line in exported.read_text().splitlines()][:len(events)]
        assert [(e["seq"], e["headers"]["Nats-Msg-Id"]) for e in replayed] == \
            [(e["seq"], e["headers"]["Nats-Msg-Id"]) for e in events]
    finally:
        stop_platform(second)
