"""Workers run only what the scheduler sent, and never unpickle: forged assignments and pickled checkpoints.

The real scheduler and discovery run in this process; the worker under attack is a real agent
(children, checkpoint store and all). Forged messages are published straight to NATS, as anyone
could without NATS permissions.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import pickle
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
import structlog
from nats.js.api import ObjectMeta

from contracts import events as ev
from contracts.base import utcnow, uuid7
from contracts.codec import encode
from contracts.commands import JobsStopping, ReportAccepted, ReportJobCheckpointed, StopJob
from contracts.dispatch import Assignment, CheckpointRef
from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.micro import call
from eventstore.streams import ensure_object_store
from services.trainer.agent import Agent
from services.trainer.capabilities import detect
from services.trainer.checkpoints import FORMAT_HEADER
from services.trainer.settings import TrainerSettings
from tests.integration.control_plane import Plane, control_plane
from tests.integration.fake_worker import eventually
from tests.integration.test_scheduler_service import submit
from tests.unit.test_checkpoint_format import Boom

FORGED = "tests.integration.forged_workload:run"
REFUSED = "assignment refused by the scheduler; nothing of it runs"


@pytest_asyncio.fixture
async def plane(nats_server, topology, event_log) -> AsyncIterator[Plane]:
    """The real discovery and scheduler, in this process."""
    async with control_plane(nats_server.url, topology) as running:
        yield running


@asynccontextmanager
async def real_agent(plane: Plane, state: Path, worker_id: str) -> AsyncIterator[Agent]:
    """A worker agent on its own connection, registered with the real discovery; stopped gracefully after."""
    settings = TrainerSettings(worker_id=worker_id, detect_gpus=False, heartbeat_s=0.3, stop_grace_s=5.0,
                               describe_workloads=False)
    agent_nc = await connect(plane.url, f"agent-{worker_id}")
    agent = Agent(agent_nc, plane.topology, settings, worker_id, detect(settings, gpus=[]), state)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await eventually(lambda: getattr(plane.board.workers.get(worker_id), "health", None) == "healthy",
                         what=f"{worker_id} known to the scheduler")
        yield agent
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await agent_nc.close()


def record_fetches(agent: Agent) -> list[str]:
    """The names of the checkpoints the agent fetches from now on (its real store does the fetching)."""
    fetched: list[str] = []
    real_fetch = agent.deps.store.fetch

    async def fetch(ref: CheckpointRef, dest: Path, attempts: int = 5):
        fetched.append(ref.name)
        return await real_fetch(ref, dest, attempts)

    agent.deps.store.fetch = fetch
    return fetched


async def forge(nc, topology: Topology, worker_id: str, job_id: str, attempt: int,
                checkpoints: tuple[CheckpointRef, ...], ran_file: Path) -> None:
    """Publish an Assignment nobody decided, straight onto a worker's dispatch subject."""
    forged = Assignment(job_id=job_id, attempt=attempt, worker_id=worker_id, kind="train", workload=FORGED,
                        params={"ran_file": str(ran_file)}, checkpoints=checkpoints, assigned_at=utcnow())
    await nc.jetstream().publish(topology.dispatch(worker_id), encode(forged),
                                 headers={"Nats-Msg-Id": f"forged.{uuid7()}"})


@pytest.fixture
def all_levels():
    """Let warnings through whatever level an earlier test configured logging at."""
    previous = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    yield
    structlog.configure(wrapper_class=previous)


async def test_forged_assignments_are_refused_before_anything_is_loaded(
        plane, nc, topology, event_log, tmp_path, monkeypatch, all_levels):
    marker, ran = tmp_path / "imported", tmp_path / "ran"
    monkeypatch.setenv("STOKER_TEST_IMPORT_MARKER", str(marker))  # the agent's job processes inherit it
    bucket = await ensure_object_store(nc.jetstream(), topology.checkpoint_bucket)
    blob = b"bait: a checkpoint a forged assignment points at"
    await bucket.put("bait/1-1", blob)
    bait = (CheckpointRef(name="bait/1-1", sha256=hashlib.sha256(blob).hexdigest(), size=len(blob), iteration=1),)
    elsewhere = await plane.worker("fa", labels=("special",))  # the only worker that takes the real job
    job = await submit(nc, topology, labels=("special",))
    first = await elsewhere.next_assignment()
    async with real_agent(plane, tmp_path / "state", "fb") as agent:
        fetched = record_fetches(agent)
        with structlog.testing.capture_logs() as logs:
            await forge(nc, topology, "fb", "no-such-job", 1, bait, ran)  # a job that does not exist
            await forge(nc, topology, "fb", job.job_id, 1, bait, ran)  # a real job, assigned to another worker
            await eventually(lambda: len([e for e in logs if e["event"] == REFUSED]) == 2, what="two refusals")
            await elsewhere.report_finished(first, outcome="interrupted")  # requeued: attempt 2, on fa again
            await eventually(lambda: plane.board.jobs[job.job_id].status == "assigned"
                             and plane.board.jobs[job.job_id].attempt == 2, what="attempt 2 assigned")
            await forge(nc, topology, "fb", job.job_id, 1, bait, ran)  # an old attempt
            await forge(nc, topology, "fb", job.job_id, 2, bait, ran)  # the current attempt, but not fb's
            await eventually(lambda: len([e for e in logs if e["event"] == REFUSED]) == 4, what="four refusals")
            real = await submit(nc, topology, workload="noop")  # fb still runs what it really gets
            done = await eventually(lambda: plane.board.finished.get(real.job_id), what="the real job done")
        refusals = [e for e in logs if e["event"] == REFUSED]
        assert [(e["job_id"], e["attempt"]) for e in refusals] == [
            ("no-such-job", 1), (job.job_id, 1), (job.job_id, 1), (job.job_id, 2)]
        assert refusals[0]["reason"] == "no job no-such-job"
        assert refusals[1]["reason"].endswith("the job is assigned at attempt 1 on fa")
        assert refusals[2]["reason"].endswith("the job is assigned at attempt 2 on fa")
        assert all(e["log_level"] == "warning" and e["workload"] == FORGED for e in refusals)
        assert done.status == "completed" and done.worker_id == "fb"
        assert fetched == [] and not marker.exists() and not ran.exists()  # nothing fetched, imported or run
        assert not agent.runners and not any(key[0] in ("no-such-job", job.job_id) for key in agent.seen)
    events, _ = await event_log.load("job", job.job_id)
    assert all(getattr(s.event, "worker_id", "fa") == "fa" for s in events)  # the forgeries changed nothing
    assert [type(s.event) for s in events][-1] is ev.JobAssigned


async def test_a_pickle_in_the_checkpoint_bucket_is_never_executed_and_the_job_resumes_before_it(
        plane, nc, topology, event_log, tmp_path):
    marker = tmp_path / "executed"
    job = await submit(nc, topology, workload="sleep", max_iterations=1_000_000,
                       params={"step_s": 0.01, "checkpoint_every": 5})
    async with real_agent(plane, tmp_path / "first", "fc"):
        await eventually(lambda: plane.board.jobs[job.job_id].checkpoints, what="a real checkpoint")
        # The attack: a pickle under the job's checkpoint name, and a report that records its very digest.
        payload = pickle.dumps(Boom(marker), protocol=2)
        bucket = await ensure_object_store(nc.jetstream(), topology.checkpoint_bucket)
        name = f"{job.job_id}/1-999999"
        await bucket.put(name, payload, meta=ObjectMeta(headers={FORMAT_HEADER: ["pickle"]}))
        forged = ReportJobCheckpointed(job_id=job.job_id, attempt=1, worker_id="fc", iteration=999_999, name=name,
                                       sha256=hashlib.sha256(payload).hexdigest(), size=len(payload))
        assert (await call(nc, topology, forged, ReportAccepted)).accepted  # without NATS auth, anyone can say so
    # fc left (its attempt checkpointed and interrupted); the next worker resumes the job.
    async with real_agent(plane, tmp_path / "second", "fd"):
        started = await wait_for_event(event_log, job.job_id, lambda e: isinstance(e, ev.JobStarted) and e.attempt == 2)
        await call(nc, topology, StopJob(job_id=job.job_id), JobsStopping)
        await wait_for_event(event_log, job.job_id, lambda e: isinstance(e, ev.JobStopped))
    events, _ = await event_log.load("job", job.job_id)
    real = [s.event.iteration for s in events
            if isinstance(s.event, ev.JobCheckpointed) and s.event.attempt == 1 and s.event.name != name]
    assert started.corrupt_checkpoints == (name,) and started.resumed_from == max(real)
    assert not marker.exists()


async def wait_for_event(event_log, job_id: str, match, timeout: float = 30.0) -> ev.Event:
    """The first event of a job (stored or still to come) that matches."""
    async def find() -> ev.Event:
        async for stored in event_log.subscribe(1, filter_subject=event_log.topology.events("job", job_id)):
            if match(stored.event):
                return stored.event
        raise AssertionError("unreachable")

    return await asyncio.wait_for(find(), timeout)
