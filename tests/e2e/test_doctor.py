"""`stoker doctor --json` against a healthy `stoker up`, then against the same data dir with NATS stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import start_platform, stop_platform
from tests.e2e.test_platform import ROOT

pytestmark = pytest.mark.slow


def doctor(data_dir: Path, *checks: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env["STOKER_DATA_DIR"] = str(data_dir)
    done = subprocess.run([sys.executable, "-m", "ops", "doctor", "--json", *checks], capture_output=True, text=True,
                          timeout=120, env=env, cwd=ROOT)
    report = json.loads(done.stdout)
    assert report["exit_code"] == done.returncode, done.stderr
    return done.returncode, {c["id"]: c for c in report["checks"]}


def test_doctor_on_a_healthy_platform_then_with_nats_stopped(tmp_path: Path) -> None:
    platform = start_platform(tmp_path)
    try:
        code, checks = doctor(tmp_path)
    finally:
        stop_platform(platform)
    for name in ("python", "packages", "nats-server", "data-dir", "ports", "nats", "clock"):
        assert checks[name]["severity"] == "ok", checks[name]
    assert "held by this platform" in checks["ports"]["evidence"]
    assert code == 0, [c for c in checks.values() if c["severity"] not in ("ok", "skipped")]

    code, checks = doctor(tmp_path, "nats", "data-dir")
    assert code == 2 and list(checks) == ["data-dir", "nats"]
    assert checks["nats"]["severity"] == "failure" and checks["nats"]["fix"] == "stoker up", checks["nats"]
    assert checks["data-dir"]["severity"] == "ok"
