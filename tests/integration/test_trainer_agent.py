"""The worker agent on real NATS: jobs, failures, stops, checkpoints; its side of docs/protocol.md.

Where the real scheduler and discovery can lead the agent into the case under test, they do (`plane`,
`worker`): submissions become real assignments and the agent's reports become the events the test
reads. Where a case needs a scheduler to say what the real one never says of its own accord (an
assignment it would refuse, a duplicate delivery, a fenced live attempt, a replay to a restarted
worker) the scripted stand-in of `fake_scheduler.py` says it (`fake`, `agent`).
"""

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

from contracts import events as ev
from contracts.commands import JobAccepted, ReportJobCheckpointed, ReportJobFinished, ReportJobStarted, SubmitJob
from contracts.status import final_status
from contracts.subjects import Topology
from contracts.telemetry import JobProgress
from eventstore.connect import connect
from eventstore.micro import call
from eventstore.server import NatsServer
from eventstore.streams import ensure_object_store
from eventstore.telemetry import job_samples, last_job_sample
from services.discovery.settings import DiscoverySettings
from services.trainer.agent import Agent
from services.trainer.capabilities import detect
from services.trainer.outbox import AttemptLog
from services.trainer.settings import TrainerSettings
from tests.integration.control_plane import Plane, control_plane
from tests.integration.fake_scheduler import FakeScheduler
from tests.integration.fake_worker import eventually

W = "tests.integration.test_trainer_workloads"
# Job processes load this host's two cores: a heartbeat may come late without the worker being lost.
PATIENT = DiscoverySettings(heartbeat_s=0.5, lost_after_s=30.0, tick_s=0.2, lease_ttl_s=1.0,
                            network_check_s=0)  # the LAN watch has tests of its own (test_lan_phone)


@pytest_asyncio.fixture
async def fake(nc, topology: Topology, event_log) -> AsyncIterator[FakeScheduler]:
    """The scripted scheduler and discovery on this test's topology."""
    scheduler = await FakeScheduler(nc, topology).start()
    yield scheduler
    await scheduler.close()


@pytest_asyncio.fixture
async def plane(nats_server, topology: Topology, event_log) -> AsyncIterator[Plane]:
    """The real scheduler and discovery on this test's topology."""
    async with control_plane(nats_server.url, topology, discovery=PATIENT) as running:
        yield running


async def registered(peer: FakeScheduler | Plane, worker_id: str) -> None:
    """Until the peer knows the worker: the stand-in heard it register, or the real scheduler holds it healthy."""
    if isinstance(peer, Plane):
        await peer.known(worker_id)
    else:
        await peer.wait_for(lambda: worker_id in peer.registered)


@asynccontextmanager
async def running_agent(server: NatsServer, topology: Topology, peer: FakeScheduler | Plane, state: Path,
                        worker_id: str = "w1", **settings) -> AsyncIterator[Agent]:
    """An agent on its own connection, registered with `peer`; stopped (gracefully) afterwards."""
    # describe_workloads off: describing imports every workload module (torch) in a child, seconds per agent.
    options = {"worker_id": worker_id, "detect_gpus": False, "heartbeat_s": 0.5, "stop_grace_s": 5.0,
               "describe_workloads": False} | settings
    trainer_settings = TrainerSettings(**options)
    agent_nc = await connect(server.url, f"agent-{worker_id}")
    agent = Agent(agent_nc, topology, trainer_settings, worker_id, detect(trainer_settings, gpus=[]), state)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await registered(peer, worker_id)
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await agent_nc.close()


@pytest_asyncio.fixture
async def agent(nats_server, topology, fake, tmp_path) -> AsyncIterator[Agent]:
    """A running agent `w1` with one slot, talking to the scripted stand-in."""
    async with running_agent(nats_server, topology, fake, tmp_path / "state") as running:
        yield running


@pytest_asyncio.fixture
async def worker(nats_server, topology, plane, tmp_path) -> AsyncIterator[Agent]:
    """A running agent `w1` with one slot, registered with the real discovery, taking the real scheduler's jobs."""
    async with running_agent(nats_server, topology, plane, tmp_path / "state") as running:
        yield running


async def submit(nc, topology: Topology, workload: str, **fields) -> str:
    """Submit a job to the real scheduler; its id."""
    return (await call(nc, topology, SubmitJob(workload=workload, **fields), JobAccepted)).job_id


async def events_of(event_log, job_id: str, kind: type) -> list:
    """The job's events of one type, oldest first."""
    stored, _ = await event_log.load("job", job_id)
    return [s.event for s in stored if isinstance(s.event, kind)]


async def worker_events(event_log, worker_id: str) -> list:
    """The worker's events, oldest first."""
    stored, _ = await event_log.load("worker", worker_id)
    return [s.event for s in stored]


async def ended(event_log, job_id: str, timeout: float = 60.0):
    """The event that ended the job (completed, failed for good, stopped, timed out), once it is on the log."""
    async def final():
        stored, _ = await event_log.load("job", job_id)
        return next((s.event for s in stored if final_status(s.event)), None)

    return await eventually(final, timeout, what=f"the end of job {job_id}")


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


async def wait_file(path: Path) -> str:
    """The content of a file once a job has written it."""
    return await asyncio.to_thread(read_when_written, path)


async def wait_gone(pid: int) -> None:
    """Until the process has ended."""
    await asyncio.to_thread(wait_until_gone, pid)


async def test_noop_job_runs_end_to_end(worker, nc, topology, event_log):
    job = await submit(nc, topology, "noop")
    completed = await ended(event_log, job)
    assert isinstance(completed, ev.JobCompleted) and completed.result == {"ok": True, "iteration": 1}
    started = await events_of(event_log, job, ev.JobStarted)
    assert [s.worker_id for s in started] == ["w1"] and started[0].resumed_from is None
    samples = await job_samples(nc, topology, "progress", job, ["w1"], JobProgress)  # on its own subject
    assert samples and samples[-1][1].iteration == 1 and samples[-1][1].worker_id == "w1"


async def test_failing_workload_reports_its_traceback_and_the_worker_goes_on(worker, nc, topology, event_log):
    job = await submit(nc, topology, f"{W}:raise_after_report", params={"message": "boom"})
    failed = await ended(event_log, job)
    assert isinstance(failed, ev.JobFailed) and failed.error == "ValueError: boom"
    assert "_inner" in failed.traceback and "raise ValueError(message)" in failed.traceback
    assert failed.retryable and not failed.will_retry  # retryable, but the job allows no retry
    after = await submit(nc, topology, "noop")
    assert isinstance(await ended(event_log, after), ev.JobCompleted)


async def test_unknown_workload_fails_clearly_and_the_worker_goes_on(agent, fake):
    # Scripted: the real scheduler refuses a workload no worker offers at submission; the worker's own
    # check is for an assignment decided before its workloads changed (or by an older scheduler).
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


async def test_workload_raising_at_import_fails_clearly(nats_server, nc, topology, plane, event_log, tmp_path,
                                                        monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "broken_workload.py").write_text("import json\nraise ImportError('needs a missing thing')\n"
                                             "def run(ctx):\n    return {}\n")
    monkeypatch.setenv("PYTHONPATH", f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    async with running_agent(nats_server, topology, plane, tmp_path / "state"):
        failed = await ended(event_log, await submit(nc, topology, "broken_workload:run"))
        assert isinstance(failed, ev.JobFailed) and not failed.retryable
        assert failed.error.startswith("cannot load workload 'broken_workload:run': ImportError")
        assert "needs a missing thing" in failed.traceback and "broken_workload.py" in failed.traceback
        assert isinstance(await ended(event_log, await submit(nc, topology, "noop")), ev.JobCompleted)


async def test_a_job_killed_by_sigkill_is_failed_and_the_worker_lives(worker, nc, topology, event_log, tmp_path):
    pid_file = tmp_path / "pid"
    job = await submit(nc, topology, f"{W}:write_pid_and_wait", params={"pid_file": str(pid_file)})
    os.kill(int(await wait_file(pid_file)), signal.SIGKILL)
    failed = await ended(event_log, job)
    assert isinstance(failed, ev.JobFailed) and "SIGKILL" in failed.error and failed.retryable
    assert isinstance(await ended(event_log, await submit(nc, topology, "noop")), ev.JobCompleted)


async def wait_progress(nc, topology: Topology, job_id: str, iteration: int, timeout: float = 30.0,
                        worker_id: str = "w1") -> JobProgress:
    """The newest progress sample (on `worker_id`'s subject) once it has reached `iteration`."""
    async def poll() -> JobProgress:
        while True:
            sample = await last_job_sample(nc, topology, "progress", job_id, [worker_id], JobProgress)
            if sample is not None and sample.iteration >= iteration:
                return sample
            await asyncio.sleep(0.05)

    return await asyncio.wait_for(poll(), timeout)


async def test_stop_takes_a_final_checkpoint_and_reports_stopped(agent, fake, nc, topology):
    # Scripted: what is asserted is the report itself (its result), which JobStopped does not keep.
    a = await fake.assign("w1", "sleep", max_iterations=100_000, params={"step_s": 0.01})
    await wait_progress(nc, topology, a.job_id, 3)
    await fake.stop(a)
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "stopped" and finished.result["stopped"] is True
    checkpoints = fake.of(a.job_id, ReportJobCheckpointed)
    assert checkpoints and checkpoints[-1].iteration == finished.result["iteration"]
    assert checkpoints[-1].name == f"{a.job_id}/1-{finished.result['iteration']}"


async def test_a_corrupt_checkpoint_is_skipped_and_reported(agent, fake, nc, topology):
    # Scripted: attempt 2 of a completed job, handed a checkpoint list with a tampered newest one.
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
    # Scripted: a second attempt of a job that completed, resuming from its own checkpoints.
    a = await fake.assign("w1", f"{W}:checkpoint_bytes_and_objects")
    assert (await fake.finished(a.job_id)).result == {"previous": None}
    await fake.assign("w1", f"{W}:checkpoint_bytes_and_objects", job_id=a.job_id, attempt=2,
                      checkpoints=fake.checkpoints(a.job_id))
    finished = await fake.finished(a.job_id, attempt=2)
    assert finished.result == {"previous": {"step": 2, "values": [1.5, 2.5]}}


async def test_progress_is_coalesced_and_the_last_sample_arrives(worker, nc, topology, event_log):
    job = await submit(nc, topology, f"{W}:chatty", params={"n": 20_000})
    assert isinstance(await ended(event_log, job), ev.JobCompleted)
    samples = [s for _seq, s in await job_samples(nc, topology, "progress", job, ["w1"], JobProgress)]
    assert 1 <= len(samples) < 20_000
    assert samples[-1].iteration == 20_000 and samples[-1].metrics["score"] == 20_000.0
    assert [s.iteration for s in samples] == sorted(s.iteration for s in samples)


async def test_a_redelivered_assignment_runs_once(agent, fake, nc, topology):
    # Scripted: the same assignment delivered twice (the real scheduler's message ids make this rare).
    a = await fake.assign("w1", "noop")
    from contracts.codec import encode

    await nc.jetstream().publish(topology.dispatch("w1"), encode(a), headers={"Nats-Msg-Id": "again"})
    await fake.finished(a.job_id)
    b = await fake.assign("w1", "noop")  # dispatch is ordered: a duplicate would have run before this
    await fake.finished(b.job_id)
    assert len(fake.of(a.job_id, ReportJobStarted)) == 1


async def test_a_fenced_attempt_is_killed(agent, fake, tmp_path):
    # Scripted: "not yours any more" for an attempt that still runs comes from the real scheduler only
    # after a partition this machine cannot stage while the agent keeps heartbeating.
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
    # Scripted: GPU indices for an agent without GPUs, which the real scheduler would never give it.
    a = await fake.assign("w1", f"{W}:environment", gpu_indices=(1, 3))
    b = await fake.assign("w1", f"{W}:environment")
    with_gpus, without = (await fake.finished(a.job_id)).result, (await fake.finished(b.job_id)).result
    assert with_gpus == {"cuda_visible_devices": "1,3", "device": "cuda", "job_id": a.job_id}
    assert without == {"cuda_visible_devices": "", "device": "cpu", "job_id": b.job_id}


async def test_shutdown_checkpoints_reports_interrupted_and_deregisters(nats_server, nc, topology, fake, tmp_path):
    # Scripted: the report's result is asserted; the real round trip is test_trainer_platform's clean shutdown.
    nats_nc = nc
    async with running_agent(nats_server, topology, fake, tmp_path / "state", worker_id="w2"):
        a = await fake.assign("w2", "sleep", max_iterations=100_000, params={"step_s": 0.01})
        await wait_progress(nats_nc, topology, a.job_id, 3, worker_id="w2")
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "interrupted"
    assert fake.of(a.job_id, ReportJobCheckpointed)[-1].iteration == finished.result["iteration"]
    assert "w2" in fake.deregistered


async def test_a_restarted_worker_settles_the_attempts_it_left(nats_server, topology, fake, tmp_path):
    # Scripted: an attempt left in the worker's own journal, its assignment still queued for it.
    left = await fake.assign("w3", "sleep", job_id="left-behind", max_iterations=5)
    AttemptLog(tmp_path / "state" / "attempts").record(left)
    async with running_agent(nats_server, topology, fake, tmp_path / "state", worker_id="w3"):
        finished = await fake.finished("left-behind")
        assert finished.outcome == "interrupted" and finished.worker_id == "w3"
        b = await fake.assign("w3", "noop")
        assert (await fake.finished(b.job_id)).outcome == "completed"
    assert len(fake.of("left-behind", ReportJobStarted)) == 0  # its redelivered assignment was not run again


@pytest.mark.parametrize("warm", [False])
async def test_jobs_run_without_warm_spares(nats_server, nc, topology, plane, event_log, tmp_path, warm):
    async with running_agent(nats_server, topology, plane, tmp_path / "state", warm=warm):
        assert isinstance(await ended(event_log, await submit(nc, topology, "noop")), ev.JobCompleted)


async def test_a_job_leaves_no_helper_process_behind(worker, nc, topology, event_log, tmp_path):
    pid_file = tmp_path / "helper"
    job = await submit(nc, topology, f"{W}:spawn_helper", params={"pid_file": str(pid_file)})
    assert isinstance(await ended(event_log, job), ev.JobCompleted)
    await wait_gone(int(await wait_file(pid_file)))


async def test_reports_wait_out_a_scheduler_outage(worker, plane, nc, topology, event_log, tmp_path):
    pid_file, release = tmp_path / "pid", tmp_path / "release"
    job = await submit(nc, topology, f"{W}:write_pid_and_wait",
                       params={"pid_file": str(pid_file), "release_file": str(release)})
    pid = int(await wait_file(pid_file))
    await eventually(lambda: events_of(event_log, job, ev.JobStarted), what="the job started")
    async with plane.scheduler_outage():  # the leader stops: nobody answers reports until another leads
        release.touch()
        await wait_gone(pid)  # the job ended while nobody led: its report can only be taken by the next leader
    completed = await ended(event_log, job)
    assert isinstance(completed, ev.JobCompleted) and completed.result["iterations"] > 0
    assert [s.attempt for s in await events_of(event_log, job, ev.JobStarted)] == [1]  # the attempt lived on


async def test_episodes_are_published(agent, fake, nc, topology):
    # Scripted: an evaluation with no checkpoint to evaluate, which the real scheduler would refuse.
    from contracts.telemetry import EpisodeReport

    a = await fake.assign("w1", f"{W}:episodes", kind="eval", episodes=3)
    assert (await fake.finished(a.job_id)).outcome == "completed"
    reports = [r for _seq, r in await job_samples(nc, topology, "episode", a.job_id, ["w1"], EpisodeReport)]
    assert [(r.episode, r.score, r.figures, r.log) for r in reports] == [
        (i, 10.0 * i, {"moves": 1.0}, [{"move": 1, "action": "up"}]) for i in (1, 2, 3)]


async def test_2048_trains_checkpoints_and_is_evaluated(nats_server, nc, topology, plane, event_log, tmp_path):
    pytest.importorskip("torch")
    # Cold job processes: warming a torch zygote would only compete with the jobs for this host's cores.
    async with running_agent(nats_server, topology, plane, tmp_path / "state", warm=False):
        train = await submit(nc, topology, "2048", max_iterations=20,
                             params={"boards": 16, "checkpoint_every": 10, "warmup": 64, "batch_size": 32})
        finished = await ended(event_log, train, timeout=120)
        assert isinstance(finished, ev.JobCompleted), getattr(finished, "traceback", finished)
        assert [c.iteration for c in await events_of(event_log, train, ev.JobCheckpointed)] == [10, 20]
        # An evaluation names the base workload; the worker runs `2048-eval`, which it has. The scheduler
        # hands it the training's checkpoints, newest first.
        evaluation = await submit(nc, topology, "2048", kind="eval", episodes=2, checkpoint_of=train)
        evaluated = await ended(event_log, evaluation, timeout=120)
        assert isinstance(evaluated, ev.JobCompleted), getattr(evaluated, "traceback", evaluated)
        assert evaluated.result["episodes"] == 2
        started = (await events_of(event_log, evaluation, ev.JobStarted))[0]
        assert started.resumed_from == 20 and started.corrupt_checkpoints == ()


async def test_stoker_worker_joins_with_its_options_and_leaves_on_ctrl_c(nats_server, nc, topology, plane,
                                                                          event_log, tmp_path):
    import sys

    command = ["-c", "from ops.cli import main; main()", "--data-dir", str(tmp_path), "worker", "--nats",
               nats_server.url, "--id", "cli-worker", "--label", "gpu-a", "--label", "big", "--slots", "3"]
    env = {**os.environ, "STOKER_PREFIX": topology.prefix, "STOKER_TRAINER_DETECT_GPUS": "false",
           "STOKER_LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(sys.executable, *command, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.DEVNULL)
    try:
        await plane.known("cli-worker")
        joined = await worker_events(event_log, "cli-worker")
        assert joined[0].capabilities.labels == ("gpu-a", "big") and joined[0].capabilities.slots == 3
        job = await submit(nc, topology, "noop", labels=("gpu-a",))  # only cli-worker has the label
        assert isinstance(await ended(event_log, job), ev.JobCompleted)
        assert (await events_of(event_log, job, ev.JobStarted))[0].worker_id == "cli-worker"
        proc.send_signal(signal.SIGINT)
        await eventually(lambda: plane.board.workers["cli-worker"].health == "left", what="cli-worker left")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert isinstance((await worker_events(event_log, "cli-worker"))[-1], ev.WorkerDeregistered)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_retired_zygote_does_not_take_its_running_jobs_along(nats_server, topology, fake, tmp_path):
    # Scripted: two jobs at once on a one-slot agent, which the real scheduler would not place.
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


async def test_a_deleted_dispatch_consumer_is_made_again(worker, nc, topology, event_log):
    first = await submit(nc, topology, "noop")
    await ended(event_log, first)
    await nc.jetstream().delete_consumer(topology.dispatch_stream, "worker-w1")
    again = await submit(nc, topology, "noop")
    assert isinstance(await ended(event_log, again), ev.JobCompleted)
    assert len(await events_of(event_log, first, ev.JobStarted)) == 1  # the replayed old assignment did not run twice


async def test_a_reusable_workload_passes_its_process_on_only_after_a_clean_completion(agent, fake):
    # Scripted: one slot, jobs one after another, so each runs in the process the last one left.
    async def run(**params) -> ReportJobFinished:
        assignment = await fake.assign("w1", f"{W}:reusable_pid", params=params)
        return await fake.finished(assignment.job_id)

    first, second = await run(), await run()
    assert first.outcome == second.outcome == "completed"
    assert second.result["pid"] == first.result["pid"]  # no fork: the same process ran the next job
    assert second.result["job_id"] != first.result["job_id"]  # with the next job's environment
    leaky = await run(leave_thread=True)
    assert leaky.outcome == "completed" and leaky.result["pid"] == first.result["pid"]
    await wait_gone(leaky.result["pid"])  # it left a thread running: its process is not passed on
    fresh = await run()
    assert fresh.result["pid"] != first.result["pid"]
    failed = await run(fail=True)
    assert failed.outcome == "failed"
    await wait_gone(fresh.result["pid"])  # a failed job's process ends too
    third = await run()
    assert third.result["pid"] not in (first.result["pid"], fresh.result["pid"])
    helper = await run(leave_helper=True)
    assert helper.outcome == "completed" and helper.result["pid"] == third.result["pid"]
    await wait_gone(third.result["pid"])  # it left a helper process: it ends, and the helper with it


async def test_a_reusable_job_asked_to_stop_does_not_pass_its_process_on(agent, fake, tmp_path):
    # Scripted: the stop reaches a job that completes without looking at it, so the outcome is completed.
    ready, termed, release = tmp_path / "ready", tmp_path / "termed", tmp_path / "release"
    a = await fake.assign("w1", f"{W}:reusable_pid", params={"ready_file": str(ready), "termed_file": str(termed),
                                                              "release_file": str(release)})
    await wait_file(ready)  # its SIGTERM handler is in place
    await fake.stop(a)
    await wait_file(termed)  # the job process got its SIGTERM
    release.write_text("1")
    finished = await fake.finished(a.job_id)
    assert finished.outcome == "completed"  # it finished unasked: the stop never reached its code
    await wait_gone(finished.result["pid"])  # signalled once: its process is not passed on
    b = await fake.assign("w1", f"{W}:reusable_pid")
    assert (await fake.finished(b.job_id)).result["pid"] != finished.result["pid"]


async def test_a_short_job_s_start_travels_with_its_end_and_a_long_job_s_goes_on_its_own(agent, fake, tmp_path):
    short = await fake.assign("w1", "noop")
    finished = await fake.finished(short.job_id)
    assert finished.started is not None and finished.started.running_for_s >= 0  # one report for the attempt
    assert len(fake.of(short.job_id, ReportJobStarted)) == 1  # which the scheduler reads as a start, then an end
    release = tmp_path / "release"
    long = await fake.assign("w1", f"{W}:write_pid_and_wait",
                             params={"pid_file": str(tmp_path / "pid"), "release_file": str(release)})
    started = await fake.started(long.job_id)  # while it runs, shortly after its process started
    assert not fake.of(long.job_id, ReportJobFinished)
    release.write_text("")
    finished = await fake.finished(long.job_id)
    assert finished.outcome == "completed" and finished.started is None
    assert started.running_for_s > 0
