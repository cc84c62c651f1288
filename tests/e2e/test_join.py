"""A second machine joins `stoker up` with a join token, over TLS pinned to the platform's CA, and runs a job."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from eventstore import pki
from ops.joined import read_joined
from tests.e2e.conftest import start_platform, stop_platform, wait_until
from tests.e2e.test_platform import ROOT, stoker, wait_status

pytestmark = pytest.mark.slow


def stoker_worker(machine: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "ops", "--data-dir", str(machine), "worker", *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")} | {"STOKER_LOG_FORMAT": "json"}


def test_a_machine_joins_with_a_token_over_tls_and_runs_a_job(tmp_path: Path) -> None:
    control = tmp_path / "control"
    control.mkdir()
    # 127.0.0.2 stands for a LAN address: another address than the one the services use, on this machine only.
    platform = start_platform(control, args=["--listen", "127.0.0.2", "--tls"])
    worker = None
    try:
        assert stoker(platform, "status")["nats"].startswith("tls://127.0.0.2:")
        made = stoker(platform, "join-token", "create", "--labels", "joined")
        assert made["ca_sha256"] == pki.file_fingerprint(control / "tls" / "ca.pem")
        assert [u.rsplit(":", 1)[0] for u in made["urls"]] == ["tls://127.0.0.2"]
        machine = tmp_path / "machine-b"
        machine.mkdir()
        with (machine / "worker.log").open("ab") as out:
            worker = subprocess.Popen(stoker_worker(machine, "--join", made["token"], "--id", "joined-b"),
                                      env=clean_env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)

        def joined_worker() -> bool:
            with platform.client() as client:
                items = client.get("/api/v1/workers").json()["items"]
            return any(w["id"] == "joined-b" and w["status"] == "healthy" for w in items)

        def logs() -> str:
            return platform.log_tail() + "\n--- machine-b\n" + (machine / "worker.log").read_text(errors="replace")

        wait_until(joined_worker, 90, "the joined worker to register", logs)
        assert read_joined(machine).labels == ["joined"]
        job = stoker(platform, "submit", "train", "noop", "--iterations", "3", "--label", "joined")["job_id"]
        row = wait_status(platform, job, {"completed", "failed"}, timeout=120)
        assert (row["status"], row["worker_id"]) == ("completed", "joined-b"), row

        again = subprocess.run(stoker_worker(tmp_path / "machine-c", "--join", made["token"]), env=clean_env(),
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        # Within a moment of the claim the join desk still answers ("was already used (by worker joined-b …");
        # after that the token's credential is gone and the server refuses it: either way one line saying so.
        assert again.returncode == 1, again.stderr
        assert ("was already used (by worker joined-b" in again.stderr
                or f"join token {made['token_id']} is no longer accepted" in again.stderr), again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        stop_platform(platform)


@pytest.mark.parametrize("how", [["--listen", "0.0.0.0"], []])
def test_nats_beyond_loopback_without_tls_is_refused_before_anything_starts(tmp_path: Path, how: list[str]) -> None:
    env = clean_env() | {"STOKER_DATA_DIR": str(tmp_path), "STOKER_NATS_TLS": "off"}
    if not how:
        env["STOKER_NATS_LISTEN"] = "0.0.0.0"  # the [nats] listen setting, as an environment variable
    result = subprocess.run([sys.executable, "-m", "ops", "up", *how], env=env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "NATS may listen on 0.0.0.0 only with TLS" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "tls").exists()
