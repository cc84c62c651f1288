"""The job commands against a running platform: submit, jobs, job, logs, stop, workers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import psutil
import pytest
import pytest_asyncio
from click.testing import CliRunner, Result

from contracts.events import JobCompleted, JobFailed, JobStarted, JobStopped, WorkerDeregistered, WorkerRegistered
from contracts.telemetry import HostSample
from eventstore.telemetry import last_sample
from ops.cli import main
from tests.integration import test_trainer_platform as shared
from tests.integration.test_trainer_platform import ROOT, Platform, pytestmark, wait_event  # noqa: F401

# The authenticated nats-server of the platform tests (their fixtures, shared by name).
secured, nats_server, nc = shared.secured, shared.nats_server, shared.nc


@pytest_asyncio.fixture
async def platform(nats_server, secured, event_log, topology, tmp_path) -> AsyncIterator[Platform]:
    """Scheduler, discovery, projector and one worker, each with its credential (the CLI uses the admin's)."""
    running = Platform(nats_server, topology, tmp_path, secured.credentials)
    for name in ("scheduler", "discovery", "projector"):
        running.start(name, f"services.{name}")
    await running.worker("cli-w1", slots=2)
    try:
        yield running
    finally:
        running.stop()


async def stoker(platform: Platform, *args: str) -> Result:
    """Run the CLI in a thread (it runs its own event loop), against this test's platform."""
    base = ["--data-dir", str(platform.base / "data"), "--nats", platform.server.url,
            "--credentials", str(platform.credentials.role_path("admin"))]
    return await asyncio.to_thread(CliRunner().invoke, main, [*base, *args],
                                   env={"STOKER_PREFIX": platform.topology.prefix})


async def submitted(platform: Platform, *args: str) -> str:
    """Submit through the CLI (retrying while the scheduler takes its lease); the job id."""
    for _ in range(100):
        result = await stoker(platform, "submit", *args, "--json")
        if result.exit_code == 0:
            return json.loads(result.output)["job_id"]
        assert "not running" in result.output or "not leading" in result.output, result.output
        await asyncio.sleep(0.2)
    raise AssertionError("the scheduler never answered")


async def until(check, timeout: float = 30.0):
    """Poll an async check until it returns something truthy (the projector catches up on its own time)."""
    for _ in range(int(timeout / 0.2)):
        if value := await check():
            return value
        await asyncio.sleep(0.2)
    raise TimeoutError("never came true")


async def test_submit_then_look_at_the_job(platform, event_log):
    job_id = await submitted(platform, "train", "noop", "--param", "note=hello", "--priority", "3",
                             "--label", "training")
    await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCompleted))
    timeline = await stoker(platform, "job", job_id)
    assert timeline.exit_code == 0
    # A traced submission adds one `trace <id>` line (whether tracing is on depends on the process).
    lines = [line for line in timeline.output.splitlines() if not line.startswith("trace ")]
    assert [line.split()[2] for line in lines] == ["JobSubmitted", "JobAssigned", "JobStarted", "JobCompleted"]
    logs = await stoker(platform, "logs", job_id)
    assert logs.exit_code == 0 and "1/?" in logs.output
    # The final event, then the whole result (never cut with "…").
    tail = logs.output.splitlines()
    ended = next(i for i, line in enumerate(tail) if "JobCompleted" in line)
    assert tail[ended + 1:] == ["result:", "  ok         true", "  iteration  1"], logs.output

    async def listed():
        result = await stoker(platform, "jobs", "--json", "--status", "completed")
        return [r for r in json.loads(result.output) if r["id"] == job_id]

    row = (await until(listed))[0]
    assert row["workload"] == "noop" and row["priority"] == 3
    # Structures are JSON, not JSON text inside strings.
    assert row["params"] == {"note": "hello"} and row["labels"] == ["training"]
    assert row["result"] == {"ok": True, "iteration": 1} and row["stop_requested"] is False


async def test_logs_follow_ends_with_the_job(platform, event_log):
    job_id = await submitted(platform, "train", "sleep", "--iterations", "20", "--param", "step_s=0.05")
    await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobStarted))
    result = await stoker(platform, "logs", job_id, "--follow", "--json")
    lines = [json.loads(line) for line in result.output.splitlines()]
    assert result.exit_code == 0 and lines[-1]["type"] == "JobCompleted"
    assert lines[-2]["iteration"] == 20 and lines[-2]["total"] == 20


async def test_an_unknown_workload_is_refused_with_what_the_workers_offer(platform, event_log):
    await wait_event(event_log, "worker", "cli-w1", lambda s: isinstance(s.event, WorkerRegistered))
    result = await stoker(platform, "submit", "train", "no-such-workload")
    for _ in range(100):  # the scheduler may still be taking its lease
        if "not running" not in result.output and "not leading" not in result.output:
            break
        await asyncio.sleep(0.2)
        result = await stoker(platform, "submit", "train", "no-such-workload")
    assert result.exit_code == 1 and "unknown workload 'no-such-workload'" in result.output, result.output
    assert "noop" in result.output and "2048-eval" in result.output


async def test_submit_eval_names_the_base_workload_and_the_worker_runs_it(platform, event_log):
    train = await submitted(platform, "train", "sleep", "--iterations", "4", "--param", "step_s=0.01",
                            "--param", "checkpoint_every=2")
    await wait_event(event_log, "job", train, lambda s: isinstance(s.event, JobCompleted))
    job_id = await submitted(platform, "eval", "sleep", "--checkpoint", train, "--episodes", "2",
                             "--param", "seconds=0.1")
    done = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCompleted | JobFailed))
    assert isinstance(done.event, JobCompleted), done.event
    events, _ = await event_log.load("job", job_id)
    assert events[0].event.kind == "eval" and events[0].event.workload == "sleep"


async def test_stop_a_running_job(platform, event_log):
    job_id = await submitted(platform, "train", "sleep", "--iterations", "100000", "--param", "step_s=0.02")
    await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobStarted))
    result = await stoker(platform, "stop", job_id, "--json")
    assert result.exit_code == 0 and json.loads(result.output) == {"job_ids": [job_id]}
    stopped = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobStopped))
    assert stopped.event.attempt == 1
    nothing = await stoker(platform, "stop", "--all", "--kind", "eval")
    assert nothing.exit_code == 0 and "stopping 0 job(s)" in nothing.output


async def test_workers_lists_the_worker_with_its_heartbeat(platform):
    async def listed():
        result = await stoker(platform, "workers", "--json")
        return [w for w in json.loads(result.output) if w["id"] == "cli-w1" and w["last_heartbeat"]]

    worker = (await until(listed))[0]
    assert worker["status"] == "healthy" and worker["slots"] == 2 and worker["free"] == 2
    assert isinstance(worker["labels"], list) and isinstance(worker["addresses"], list)


def stoker_process(platform: Platform, name: str, *args: str, **env: str) -> subprocess.Popen:
    """`python -m ops ARGS` as its own process (stopped with the platform should the test fail)."""
    base = ["--data-dir", str(platform.base / name), "--nats", platform.server.url]
    with (platform.base / f"{name}.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ops", *base, *args], env=platform.env(**env), cwd=ROOT,
                                stdout=out, stderr=out, start_new_session=True)
    platform.procs[name] = proc
    return proc


async def test_stoker_worker_becomes_the_trainer_and_leaves_on_ctrl_c(platform, secured, event_log, tmp_path):
    # Admitted on the control plane (its data dir holds the platform's credentials), as a join would.
    credential = tmp_path / "cli-w2.nk"
    admitted = await asyncio.to_thread(
        CliRunner().invoke, main, ["--data-dir", str(secured.data_dir), "security", "admit-worker", "cli-w2",
                                   "--out", str(credential)], env={"STOKER_PREFIX": platform.topology.prefix})
    assert admitted.exit_code == 0 and "in effect now (1 NATS node reloaded)" in admitted.output, admitted.output
    assert credential.stat().st_mode & 0o777 == 0o600
    proc = stoker_process(platform, "cli-w2", "--credentials", str(credential), "worker", "--id", "cli-w2",
                          "--slots", "3", "--label", "cli", STOKER_TRAINER_DETECT_GPUS="false",
                          STOKER_TRAINER_STOP_GRACE_S="5")
    joined = await wait_event(event_log, "worker", "cli-w2", lambda s: isinstance(s.event, WorkerRegistered))
    assert joined.event.capabilities.slots == 3 and joined.event.capabilities.labels == ("cli",)
    # A monitor runs beside it, sampling this machine as the worker (and ends with it).
    nc = event_log.nc
    beside = await until(lambda: last_sample(nc, platform.topology, "host", "cli-w2", HostSample))
    monitors = [p for p in psutil.Process(proc.pid).children() if "services.monitor" in p.cmdline()]
    assert beside.host_id == "cli-w2" and len(monitors) == 1
    proc.send_signal(signal.SIGINT)
    assert await asyncio.to_thread(proc.wait, 60) == 0
    await wait_event(event_log, "worker", "cli-w2", lambda s: isinstance(s.event, WorkerDeregistered))
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, monitors, 30)
    assert not alive


@pytest.mark.parametrize(("args", "message"), [
    (("job", "NOSUCHJOB"), "no job NOSUCHJOB"),
    (("logs", "NOSUCHJOB"), "no job NOSUCHJOB"),
    (("submit", "train", "noop", "--param", "x"), "is not key=value"),
])
async def test_errors_are_one_line(platform, args, message):
    result = await stoker(platform, *args)
    assert result.exit_code == 1 and result.output.startswith("stoker: ") and message in result.output
    assert result.output.count("\n") == 1


async def test_without_a_scheduler_submit_says_so(nats_server, secured, event_log, topology, tmp_path):
    command = ["--data-dir", str(tmp_path), "--nats", nats_server.url, "submit", "train", "noop"]
    result = await asyncio.to_thread(CliRunner().invoke, main, [
        "--credentials", str(secured.credential("admin")), *command], env={"STOKER_PREFIX": topology.prefix})
    assert result.exit_code == 1 and "scheduler service is not running" in result.output
    # Without a credential (this data dir has none), the server refuses the CLI: one line saying what to pass.
    result = await asyncio.to_thread(CliRunner().invoke, main, command, env={"STOKER_PREFIX": topology.prefix})
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "requires a credential" in result.output
