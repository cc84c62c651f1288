"""The worker agent against a protocol-level fake scheduler on real NATS: jobs, failures, stops, checkpoints."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio

from contracts.commands import ReportJobCheckpointed, ReportJobFinished, ReportJobStarted
from contracts.subjects import Topology
from contracts.telemetry import JobProgress
from eventstore.connect import connect
from eventstore.server import NatsServer
from eventstore.streams import ensure_object_store
from eventstore.telemetry import last_sample, sample_history
from services.trainer.agent import Agent
from services.trainer.capabilities import detect
from services.trainer.outbox import AttemptLog
from services.trainer.settings import TrainerSettings
from tests.integration.fake_scheduler import FakeScheduler

W = "tests.integration.test_trainer_workloads"


@pytest_asyncio.fixture
async def fake(nc, topology: Topology, event_log) -> AsyncIterator[FakeScheduler]:
    """The fake scheduler and discovery on this test's topology."""
    scheduler = await FakeScheduler(nc, topology).start()
    yield scheduler
    await scheduler.close()


@asynccontextmanager
async def running_agent(server: NatsServer, topology: Topology, fake: FakeScheduler, state: Path,
                        worker_id: str = "w1", **settings) -> AsyncIterator[Agent]:
    """An agent on its own connection, registered; stopped (gracefully) afterwards."""
    options = {"worker_id": worker_id, "detect_gpus": False, "heartbeat_s": 0.5, "stop_grace_s": 5.0} | settings
    trainer_settings = TrainerSettings(**options)
    agent_nc = await connect(server.url, f"agent-{worker_id}")
    agent = Agent(agent_nc, topology, trainer_settings, worker_id, detect(trainer_settings, gpus=[]), state)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await fake.wait_for(lambda: worker_id in fake.registered)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await agent_nc.close()


@pytest_asyncio.fixture
async def agent(nats_server, topology, fake, tmp_path) -> AsyncIterator[Agent]:
    """A running agent `w1` with one slot."""
    async with running_agent(nats_server, topology, fake, tmp_path / "state") as running:
        yield running


def read_when_written(path: Path, timeout: float = 30.0) -> str:
    """The content of a file once it exists and is not empty (blocking: run it in a thread)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was never written")
        time.sleep(0.02)
    return path.read_text()


def is_gone(pid: int) -> bool:
    """Whether no process has this pid any more (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except (ProcessLookupError, FileNotFoundError):
        return True


def wait_until_gone(pid: int, timeout: float = 30.0) -> None:
    """Block until `is_gone(pid)` (run it in a thread)."""
    deadline = time.monotonic() + timeout
    while not is_gone(pid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"process {pid} is still there")
        time.sleep(0.05)


async def eventually(predicate, timeout: float = 30.0) -> None:
    """Poll a condition of in-process state until it holds."""
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the condition never held")


async def wait_file(path: Path) -> str:
    """The content of a file once a job has written it."""
    return await asyncio.to_thread(read_when_written, path)


async def wait_gone(pid: int) -> None:
    """Until the process has ended."""
    await asyncio.to_thread(wait_until_gone, pid)


async def test_noop_job_runs_end_to_end(agent, fake, nc, topology):
    a = await fake.assign("w1", "noop")
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "completed"
    assert finished.result == {"ok": True, "iteration": 1}
    started = fake.of(a.job_id, ReportJobStarted)
    assert [s.worker_id for s in started] == ["w1"] and started[0].resumed_from is None
    samples = await sample_history(nc, topology, "progress", a.job_id, JobProgress)
    assert samples and samples[-1][1].iteration == 1 and samples[-1][1].worker_id == "w1"


async def test_failing_workload_reports_its_traceback_and_the_worker_goes_on(agent, fake):
    a = await fake.assign("w1", f"{W}:raise_after_report", params={"message": "boom"})
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "failed"
    assert finished.error == "ValueError: boom"
    assert "_inner" in finished.traceback and "raise ValueError(message)" in finished.traceback
    assert finished.retryable
    b = await fake.assign("w1", "noop")
    assert (await fake.finished(b.job_id)).outcome == "completed"


async def test_unknown_workload_fails_clearly_and_the_worker_goes_on(agent, fake):
    a = await fake.assign("w1", "no-such-workload")
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "failed" and "unknown workload 'no-such-workload'" in finished.error
    assert "noop" in finished.error  # it lists what this worker knows
    b = await fake.assign("w1", "noop")
    assert (await fake.finished(b.job_id)).outcome == "completed"


@pytest.mark.parametrize(("target", "error"), [
    ("builtins:print", "'builtins:print' is not a workload: 'builtins' is Python's standard library"),
    ("os:system", "'os:system' is not a workload"),
    (f"{W}:not_a_workload", f"'{W}:not_a_workload' is not a workload: mark it with @workload"),
])
async def test_a_non_workload_target_fails_clearly_and_runs_nothing(agent, fake, tmp_path, target, error):
    ran = tmp_path / "ran"
    a = await fake.assign("w1", target, params={"ran_file": str(ran)})
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "failed" and not finished.retryable and error in finished.error
    assert not ran.exists()
    b = await fake.assign("w1", "noop")
    assert (await fake.finished(b.job_id)).outcome == "completed"


async def test_a_worker_without_free_targets_runs_only_registered_workloads(nats_server, topology, fake, tmp_path):
    async with running_agent(nats_server, topology, fake, tmp_path / "state", target_modules=()):
        a = await fake.assign("w1", f"{W}:environment")
        finished = await fake.finished(a.job_id)
        assert finished.outcome == "failed" and "runs registered workloads only (target_modules = [])" in finished.error
        assert not fake.of(a.job_id, ReportJobStarted)  # refused before a process was taken for it
        b = await fake.assign("w1", "noop")
        assert (await fake.finished(b.job_id)).outcome == "completed"
    assert fake.registered["w1"].capabilities.target_modules == ()  # and it says so to the scheduler


async def test_workload_raising_at_import_fails_clearly(nats_server, topology, fake, tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "broken_workload.py").write_text("import json\nraise ImportError('needs a missing thing')\n"
                                             "def run(ctx):\n    return {}\n")
    monkeypatch.setenv("PYTHONPATH", f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    async with running_agent(nats_server, topology, fake, tmp_path / "state"):
        a = await fake.assign("w1", "broken_workload:run")
        finished = await fake.finished(a.job_id)
        assert finished.outcome == "failed" and not finished.retryable
        assert finished.error.startswith("cannot load workload 'broken_workload:run': ImportError")
        assert "needs a missing thing" in finished.traceback and "broken_workload.py" in finished.traceback
        b = await fake.assign("w1", "noop")
        assert (await fake.finished(b.job_id)).outcome == "completed"


async def test_a_job_killed_by_sigkill_is_failed_and_the_worker_lives(agent, fake, tmp_path):
    pid_file = tmp_path / "pid"
    a = await fake.assign("w1", f"{W}:write_pid_and_wait", params={"pid_file": str(pid_file)})
    os.kill(int(await wait_file(pid_file)), signal.SIGKILL)
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "failed" and "SIGKILL" in finished.error and finished.retryable
    b = await fake.assign("w1", "noop")
    assert (await fake.finished(b.job_id)).outcome == "completed"


async def wait_progress(nc, topology: Topology, job_id: str, iteration: int, timeout: float = 30.0) -> JobProgress:
    """The newest progress sample once it has reached `iteration`."""
    async def poll() -> JobProgress:
        while True:
            sample = await last_sample(nc, topology, "progress", job_id, JobProgress)
            if sample is not None and sample.iteration >= iteration:
                return sample
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def test_stop_takes_a_final_checkpoint_and_reports_stopped(agent, fake, nc, topology):
    a = await fake.assign("w1", "sleep", max_iterations=100_000, params={"step_s": 0.01})
    await wait_progress(nc, topology, a.job_id, 3)
    await fake.stop(a)
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "stopped" and finished.result["stopped"] is True
    checkpoints = fake.of(a.job_id, ReportJobCheckpointed)
    assert checkpoints and checkpoints[-1].iteration == finished.result["iteration"]
    assert checkpoints[-1].name == f"{a.job_id}/1-{finished.result['iteration']}"


async def test_a_corrupt_checkpoint_is_skipped_and_reported(agent, fake, nc, topology):
    first = await fake.assign("w1", "sleep", max_iterations=10, params={"step_s": 0.001, "checkpoint_every": 5})
    assert (await fake.finished(first.job_id)).outcome == "completed"
    refs = fake.checkpoints(first.job_id)
    assert [r.iteration for r in refs] == [10, 5]
    bucket = await ensure_object_store(nc.jetstream(), topology.checkpoint_bucket)
    await bucket.put(refs[0].name, b"garbage, not a checkpoint")
    second = await fake.assign("w1", "sleep", job_id=first.job_id, attempt=2, max_iterations=15,
                               params={"step_s": 0.001}, checkpoints=refs)
    finished = await fake.finished(first.job_id, attempt=2)
    started = fake.of(first.job_id, ReportJobStarted, attempt=2)[0]
    assert started.corrupt_checkpoints == (refs[0].name,) and started.resumed_from == 5
    assert finished.outcome == "completed" and finished.result["resumed_from"] == 5
    assert finished.result["iterations_run"] == 10 and second.attempt == 2


async def test_checkpoints_round_trip_bytes_and_objects(agent, fake):
    a = await fake.assign("w1", f"{W}:checkpoint_bytes_and_objects")
    assert (await fake.finished(a.job_id)).result == {"previous": None}
    await fake.assign("w1", f"{W}:checkpoint_bytes_and_objects", job_id=a.job_id, attempt=2,
                      checkpoints=fake.checkpoints(a.job_id))
    finished = await fake.finished(a.job_id, attempt=2)
    assert finished.result == {"previous": {"step": 2, "values": [1.5, 2.5]}}


async def test_progress_is_coalesced_and_the_last_sample_arrives(agent, fake, nc, topology):
    a = await fake.assign("w1", f"{W}:chatty", params={"n": 20_000})
    assert (await fake.finished(a.job_id)).outcome == "completed"
    samples = [s for _seq, s in await sample_history(nc, topology, "progress", a.job_id, JobProgress)]
    assert 1 <= len(samples) < 20_000
    assert samples[-1].iteration == 20_000 and samples[-1].metrics["score"] == 20_000.0
    assert [s.iteration for s in samples] == sorted(s.iteration for s in samples)


async def test_a_redelivered_assignment_runs_once(agent, fake, nc, topology):
    a = await fake.assign("w1", "noop")
    from contracts.codec import encode

    await nc.jetstream().publish(topology.dispatch("w1"), encode(a), headers={"Nats-Msg-Id": "again"})
    await fake.finished(a.job_id)
    b = await fake.assign("w1", "noop")  # dispatch is ordered: a duplicate would have run before this
    await fake.finished(b.job_id)
    assert len(fake.of(a.job_id, ReportJobStarted)) == 1


async def test_a_fenced_attempt_is_killed(agent, fake, tmp_path):
    pid_file = tmp_path / "pid"
    await fake.assign("w1", f"{W}:write_pid_and_wait", job_id="fenced-job",
                      params={"pid_file": str(pid_file), "checkpoint_every": 5})
    pid = int(await wait_file(pid_file))
    fake.fenced.add(("fenced-job", 1))  # its next checkpoint report is answered "not yours any more"
    await wait_gone(pid)
    b = await fake.assign("w1", "noop")
    assert (await fake.finished(b.job_id)).outcome == "completed"
    assert not fake.of("fenced-job", ReportJobFinished)


async def test_assigned_gpus_narrow_what_the_job_sees(agent, fake):
    a = await fake.assign("w1", f"{W}:environment", gpu_indices=(1, 3))
    b = await fake.assign("w1", f"{W}:environment")
    with_gpus, without = (await fake.finished(a.job_id)).result, (await fake.finished(b.job_id)).result
    assert with_gpus == {"cuda_visible_devices": "1,3", "device": "cuda", "job_id": a.job_id}
    assert without == {"cuda_visible_devices": "", "device": "cpu", "job_id": b.job_id}


async def test_shutdown_checkpoints_reports_interrupted_and_deregisters(nats_server, nc, topology, fake, tmp_path):
    nats_nc = nc
    async with running_agent(nats_server, topology, fake, tmp_path / "state", worker_id="w2"):
        a = await fake.assign("w2", "sleep", max_iterations=100_000, params={"step_s": 0.01})
        await wait_progress(nats_nc, topology, a.job_id, 3)
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "interrupted"
    assert fake.of(a.job_id, ReportJobCheckpointed)[-1].iteration == finished.result["iteration"]
    assert "w2" in fake.deregistered


async def test_a_restarted_worker_settles_the_attempts_it_left(nats_server, topology, fake, tmp_path):
    left = await fake.assign("w3", "sleep", job_id="left-behind", max_iterations=5)
    AttemptLog(tmp_path / "state" / "attempts").record(left)
    async with running_agent(nats_server, topology, fake, tmp_path / "state", worker_id="w3"):
        finished = await fake.finished("left-behind")
        assert finished.outcome == "interrupted" and finished.worker_id == "w3"
        b = await fake.assign("w3", "noop")
        assert (await fake.finished(b.job_id)).outcome == "completed"
    assert len(fake.of("left-behind", ReportJobStarted)) == 0  # its redelivered assignment was not run again


@pytest.mark.parametrize("warm", [False])
async def test_jobs_run_without_warm_spares(nats_server, topology, fake, tmp_path, warm):
    async with running_agent(nats_server, topology, fake, tmp_path / "state", warm=warm):
        a = await fake.assign("w1", "noop")
        assert (await fake.finished(a.job_id)).outcome == "completed"


async def test_a_job_leaves_no_helper_process_behind(agent, fake, tmp_path):
    pid_file = tmp_path / "helper"
    a = await fake.assign("w1", f"{W}:spawn_helper", params={"pid_file": str(pid_file)})
    assert (await fake.finished(a.job_id)).outcome == "completed"
    await wait_gone(int(await wait_file(pid_file)))


async def test_reports_wait_out_a_scheduler_outage(agent, fake, nc, topology):
    a = await fake.assign("w1", "sleep", max_iterations=20, params={"step_s": 0.01})
    await fake.started(a.job_id)
    await fake.close()  # the scheduler is failing over: nobody answers reports for a while
    await wait_progress(nc, topology, a.job_id, 20)
    await fake.start()
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "completed" and finished.result["iteration"] == 20


async def test_episodes_are_published(agent, fake, nc, topology):
    from contracts.telemetry import EpisodeReport

    a = await fake.assign("w1", f"{W}:episodes", kind="eval", episodes=3)
    assert (await fake.finished(a.job_id)).outcome == "completed"
    reports = [r for _seq, r in await sample_history(nc, topology, "episode", a.job_id, EpisodeReport)]
    assert [(r.episode, r.score, r.figures, r.log) for r in reports] == [
        (i, 10.0 * i, {"moves": 1.0}, [{"move": 1, "action": "up"}]) for i in (1, 2, 3)]


async def test_2048_trains_checkpoints_and_is_evaluated(nats_server, topology, fake, tmp_path):
    pytest.importorskip("torch")
    # Cold job processes: warming a torch zygote would only compete with the jobs for this host's cores.
    async with running_agent(nats_server, topology, fake, tmp_path / "state", warm=False):
        await run_2048_then_evaluate(fake)


async def run_2048_then_evaluate(fake: FakeScheduler) -> None:
    """Train 2048 briefly with two checkpoints, then evaluate the newest."""
    train = await fake.assign("w1", "2048", max_iterations=20,
                              params={"batch_size": 16, "checkpoint_every": 10, "warmup": 64, "minibatch": 32})
    finished = await fake.finished(train.job_id, timeout=120)
    assert finished.outcome == "completed", finished.traceback
    refs = fake.checkpoints(train.job_id)
    assert [r.iteration for r in refs] == [20, 10]
    # An evaluation names the base workload; the worker runs `2048-eval`, which it has.
    evaluation = await fake.assign("w1", "2048", kind="eval", episodes=2, checkpoints=refs)
    evaluated = await fake.finished(evaluation.job_id, timeout=120)
    assert evaluated.outcome == "completed", evaluated.traceback
    assert evaluated.result["episodes"] == 2
    started = fake.of(evaluation.job_id, ReportJobStarted)[0]
    assert started.resumed_from == 20 and started.corrupt_checkpoints == ()


async def test_stoker_worker_joins_with_its_options_and_leaves_on_ctrl_c(nats_server, topology, fake, tmp_path):
    import sys

    command = ["-c", "from ops.cli import main; main()", "--data-dir", str(tmp_path), "worker", "--nats",
               nats_server.url, "--id", "cli-worker", "--label", "gpu-a", "--label", "big", "--slots", "3"]
    env = {**os.environ, "STOKER_PREFIX": topology.prefix, "STOKER_TRAINER_DETECT_GPUS": "false",
           "STOKER_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, *command, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        registered = await fake.wait_for(lambda: fake.registered.get("cli-worker"))
        assert registered.capabilities.labels == ("gpu-a", "big") and registered.capabilities.slots == 3
        a = await fake.assign("cli-worker", "noop")
        assert (await fake.finished(a.job_id)).outcome == "completed"
        proc.send_signal(signal.SIGINT)
        await fake.wait_for(lambda: "cli-worker" in fake.deregistered)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_retired_zygote_does_not_take_its_running_jobs_along(nats_server, topology, fake, tmp_path):
    module = "tests.integration.test_trainer_workloads"
    async with running_agent(nats_server, topology, fake, tmp_path / "state", warm_user_workloads=True,
                             max_zygotes=2) as agent:
        warm = await fake.assign("w1", f"{module}:environment")
        await fake.finished(warm.job_id)
        await eventually(lambda: module in agent.deps.pool.zygotes)  # warmed in the background
        pid_file = tmp_path / "pid"
        long = await fake.assign("w1", f"{module}:write_pid_and_wait", params={"pid_file": str(pid_file)})
        pid = int(await wait_file(pid_file))
        retired = agent.deps.pool.zygotes[module]
        other = await fake.assign("w1", "noop")  # its module's zygote pushes this one's out (at most 2)
        await fake.finished(other.job_id)
        await eventually(lambda: module not in agent.deps.pool.zygotes)
        await asyncio.sleep(0.5)  # were it closed now, it would be gone by then, and the job with it
        assert retired.process.returncode is None and not is_gone(pid)
        await fake.stop(long)
        assert (await fake.finished(long.job_id)).outcome == "stopped"
        await eventually(lambda: retired.process.returncode is not None)  # closed once its job ended


async def test_a_deleted_dispatch_consumer_is_made_again(agent, fake, nc, topology):
    first = await fake.assign("w1", "noop")
    await fake.finished(first.job_id)
    await nc.jetstream().delete_consumer(topology.dispatch_stream, "worker-w1")
    again = await fake.assign("w1", "noop")
    assert (await fake.finished(again.job_id)).outcome == "completed"
    assert len(fake.of(first.job_id, ReportJobStarted)) == 1  # the replayed old assignment is not run twice
