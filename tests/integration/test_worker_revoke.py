"""`stoker workers revoke ID` on a running platform (real scheduler, discovery and worker processes, the
platform's users): the credential goes with a reload, the worker is cut off, its job is requeued at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from contracts.events import JobRequeued, JobStarted, WorkerDeregistered
from tests.integration import test_trainer_platform as running
from tests.integration.test_trainer_platform import ROOT, Platform, submit, wait_event

# The real platform of test_trainer_platform: one authenticated server for the module, the services per test.
secured, nats_server, nc, platform = running.secured, running.nats_server, running.nc, running.platform


def stoker_cli(platform: Platform, *args: str) -> subprocess.CompletedProcess:
    """The admin CLI of the platform's data dir (its record, its admin credential)."""
    env = {k: v for k, v in platform.env().items() if k not in ("STOKER_NATS_URL", "STOKER_DATA_DIR")}
    base = platform.credentials.root.parent
    return subprocess.run([sys.executable, "-m", "ops", "--data-dir", str(base), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


async def test_a_revoked_worker_is_cut_off_and_its_job_requeued_at_once(platform, nc, event_log, topology):
    worker = await platform.worker("rv-1")
    job_id = await submit(nc, topology, workload="sleep", max_iterations=100_000, params={"step_s": 0.05})
    await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobStarted))
    result = await asyncio.to_thread(stoker_cli, platform, "workers", "revoke", "rv-1")
    assert result.returncode == 0, result.stderr
    assert "credential revoked; in effect now" in result.stdout and "its jobs went back to the queue" in result.stdout
    gone = await wait_event(event_log, "worker", "rv-1", lambda s: isinstance(s.event, WorkerDeregistered), 30)
    assert gone.event.reason == "revoked"
    requeued = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobRequeued), 30)
    assert requeued.event.reason == "worker_left"
    assert "rv-1" not in platform.credentials.workers()
    assert await asyncio.to_thread(worker.wait, 60) is not None  # the server closed it; it stops, not retries

    again = await asyncio.to_thread(stoker_cli, platform, "workers", "revoke", "rv-1")
    assert again.returncode == 1 and "no worker 'rv-1' has a credential here" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
