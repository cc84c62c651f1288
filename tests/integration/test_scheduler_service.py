"""The scheduler on a real nats-server, with discovery and protocol-level fake workers."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio

from contracts import events as ev
from contracts.base import utcnow
from contracts.commands import CommandError, JobAccepted, JobsStopping, ReportAccepted, StopJob, SubmitJob
from contracts.dispatch import Assignment, StopAttempt
from contracts.errors import Conflict, InvalidCommand, NotFound, UnknownWorkload
from eventstore.micro import call
from eventstore.streams import ensure_kv
from services.discovery.adapter import DiscoveryService
from services.scheduler.adapter import SchedulerService
from services.scheduler.board import apply_in_place, initial_state
from services.scheduler.live import LiveBoard
from services.scheduler.snapshot import SnapshotStore
from tests.integration.control_plane import DISCOVERY, SCHEDULER, control_plane, leading
from tests.integration.fake_worker import FakeWorker, InProcess, eventually, job_events
from tests.integration.gateway_support import assert_error, gateway_stack
from tests.integration.schedulers import start_schedulers

ROOT = Path(__file__).resolve().parents[2]


async def submit(nc, topology, **fields) -> JobAccepted:
    return await call(nc, topology, SubmitJob(**{"workload": "noop", **fields}), JobAccepted)


@pytest_asyncio.fixture
async def plane(nats_server, topology, event_log):
    async with control_plane(nats_server.url, topology) as running:
        yield running


def replayed(events) -> object:
    state = initial_state()
    for stored in events:
        apply_in_place(state, stored.event)
    return state


async def test_a_job_runs_from_submit_to_completion(plane, nc, topology, event_log) -> None:
    worker = await plane.worker("w1", slots=2)
    accepted = await submit(nc, topology, max_iterations=5, params={"lr": 0.1})
    assert accepted.created and accepted.seq > 0
    assignment = await worker.next_assignment()
    assert (assignment.job_id, assignment.attempt, assignment.worker_id) == (accepted.job_id, 1, "w1")
    assert assignment.params == {"lr": 0.1} and assignment.max_iterations == 5 and assignment.checkpoints == ()
    assert (await worker.report_started(assignment)) == ReportAccepted(accepted=True)
    assert (await worker.report_checkpointed(assignment, 3)).accepted
    assert (await worker.report_finished(assignment, result={"score": 2.0})).accepted
    assert await job_events(event_log, accepted.job_id) == [
        "JobSubmitted", "JobAssigned", "JobStarted", "JobCheckpointed", "JobCompleted"]
    # Replay equals live: the log folded from scratch gives the board the leader holds.
    scheduler = plane.scheduler.scheduler
    await eventually(lambda: scheduler.board.quiet and scheduler.committer.idle, what="quiet board")
    assert replayed([s async for s in event_log.read()]) == scheduler.board.state


async def test_submit_is_idempotent_by_key(plane, nc, topology, event_log) -> None:
    replies = await asyncio.gather(*(submit(nc, topology, idempotency_key="once") for _ in range(5)))
    assert len({r.job_id for r in replies}) == 1 and sum(r.created for r in replies) == 1
    again = await submit(nc, topology, idempotency_key="once")
    assert again == JobAccepted(job_id=replies[0].job_id, created=False)
    assert await job_events(event_log, again.job_id) == ["JobSubmitted"]


async def test_stop_a_queued_job_and_a_running_one(plane, nc, topology, event_log) -> None:
    queued = await submit(nc, topology)
    stopping = await call(nc, topology, StopJob(job_id=queued.job_id), JobsStopping)
    assert stopping.job_ids == [queued.job_id]
    assert await job_events(event_log, queued.job_id) == ["JobSubmitted", "JobStopRequested", "JobStopped"]
    with pytest.raises(Conflict):
        await call(nc, topology, StopJob(job_id=queued.job_id), JobsStopping)

    worker = await plane.worker("w1")
    running = await submit(nc, topology)
    assignment = await worker.next_assignment()
    await worker.report_started(assignment)
    await call(nc, topology, StopJob(job_id=running.job_id, reason="enough"), JobsStopping)
    stop = await worker.next_message()
    assert stop == StopAttempt(job_id=running.job_id, attempt=1, worker_id="w1", reason="enough")
    assert (await worker.report_checkpointed(assignment, 7)).stop is True
    assert (await worker.report_finished(assignment, outcome="stopped")).accepted
    assert await job_events(event_log, running.job_id) == [
        "JobSubmitted", "JobAssigned", "JobStarted", "JobStopRequested", "JobCheckpointed", "JobStopped"]


async def test_a_lost_workers_job_moves_to_another_worker(plane, nc, topology, event_log) -> None:
    first = await plane.worker("w1")
    job = await submit(nc, topology)
    old = await first.next_assignment()
    await first.report_started(old)
    second = await plane.worker("w2")
    first.pause_heartbeats()  # discovery declares w1 lost after lost_after_s; its job is requeued
    new = await second.next_assignment()
    assert (new.job_id, new.attempt, new.worker_id) == (job.job_id, 2, "w2")
    late = await first.report_finished(old)  # w1 was only partitioned and finishes its (stale) attempt
    assert (late.accepted, late.stop) == (False, True) and "stale" in late.reason
    await second.report_started(new)
    await second.report_finished(new)
    events = await job_events(event_log, job.job_id)
    assert events == ["JobSubmitted", "JobAssigned", "JobStarted", "JobRequeued", "JobAssigned", "JobStarted",
                      "JobCompleted"]
    stored, _ = await event_log.load("job", job.job_id)
    assert stored[3].event.reason == "worker_lost" and stored[3].event.attempt == 2


async def test_a_draining_worker_s_interrupted_job_is_not_given_back_to_it(plane, nc, topology, event_log) -> None:
    leaving = await plane.worker("w1")
    job = await submit(nc, topology)
    old = await leaving.next_assignment()
    await leaving.report_started(old)
    # As the agent does on SIGTERM: say it is draining, then end the attempt (checkpointed) as interrupted.
    await leaving.register(draining=True)
    assert (await leaving.report_finished(old, outcome="interrupted")).accepted
    await eventually(lambda: plane.board.jobs[job.job_id].attempt == 2, what="requeued")
    fresh = await plane.worker("w2")
    new = await fresh.next_assignment()
    assert (new.job_id, new.attempt, new.worker_id) == (job.job_id, 2, "w2")
    stored, _ = await event_log.load("job", job.job_id)
    assert [(s.type, getattr(s.event, "worker_id", None)) for s in stored][-2:] == [
        ("JobRequeued", None), ("JobAssigned", "w2")]
    assert stored[-2].event.reason == "shutdown" and stored[-2].event.attempt == 2
    assert leaving.received == [old]  # nothing else was ever sent to the leaving worker


async def test_an_unknown_workload_is_refused_listing_what_workers_offer(plane, nats_server, nc, topology,
                                                                          event_log, tmp_path) -> None:
    await plane.worker("w1", workloads=("noop", "sleep"))
    with pytest.raises(UnknownWorkload, match=r"unknown workload 'nosuch'.*offered: noop, sleep"):
        await submit(nc, topology, workload="nosuch")
    assert (await submit(nc, topology, workload="sleep")).created
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False) as stack, \
            stack.client("operator") as client:
        for path, body in (("/api/v1/jobs", {"workload": "nosuch"}),
                           ("/api/v1/training/start", {"workload": "nosuch", "max_iterations": 5})):
            assert_error(await client.post(path, json=body), 400, "unknown workload 'nosuch'", "offered: noop, sleep")


async def test_an_assignment_waits_for_a_disconnected_worker(plane, nc, topology, event_log) -> None:
    worker = await plane.worker("w1")
    await worker.disconnect_consumer()  # still heartbeating, just not reading its queue
    job = await submit(nc, topology)
    await eventually(lambda: job_events(event_log, job.job_id), what="JobAssigned")
    assert await job_events(event_log, job.job_id) == ["JobSubmitted", "JobAssigned"]
    worker.connect_consumer()
    assignment = await worker.next_assignment()
    assert assignment.job_id == job.job_id


async def test_malformed_and_impossible_commands_get_typed_errors(plane, nc, topology, event_log) -> None:
    subject = topology.command("scheduler", "submit")
    for body in (b"not json", b'{"workload": "x", "max_iterations": 0}', b'{"max_iterations": 3}'):
        reply = await nc.request(subject, body, timeout=5)
        error = msgspec.json.decode(reply.data, type=CommandError)
        assert (error.code, error.error) == (400, "invalid"), body
    with pytest.raises(InvalidCommand, match="needs checkpoint_of"):
        await submit(nc, topology, kind="eval", episodes=3)
    source = await submit(nc, topology)
    with pytest.raises(InvalidCommand, match=f"{source.job_id}: that job .* has no checkpoint yet"):
        await submit(nc, topology, kind="eval", checkpoint_of=source.job_id)
    with pytest.raises(NotFound):
        await call(nc, topology, StopJob(job_id="no-such-job"), JobsStopping)
    report = await FakeWorker(plane.url, topology, "nobody").start(register=False)
    plane.workers.append(report)
    fake = Assignment(job_id="ghost", attempt=1, worker_id="nobody", kind="train", workload="x", assigned_at=utcnow())
    assert (await report.report_started(fake)) == ReportAccepted(accepted=False, stop=True, reason="no job ghost")
    assert await job_events(event_log, source.job_id) == ["JobSubmitted"]


async def test_garbage_on_the_log_does_not_stop_the_scheduler(plane, nc, topology, event_log) -> None:
    await nc.publish(topology.events("job", "garbage"), b"{not json")
    await nc.publish(topology.events("worker", "w9"), b"{}", headers={"Stoker-Type": "WorkerLost",
                                                                       "Stoker-Schema": "1"})
    await nc.publish(topology.events("job", "future"), b"{}", headers={"Stoker-Type": "JobSubmitted",
                                                                        "Stoker-Schema": "99"})
    await nc.flush()
    worker = await plane.worker("w1")
    job = await submit(nc, topology)
    assignment = await worker.next_assignment()
    await worker.report_started(assignment)
    assert (await worker.report_finished(assignment)).accepted
    assert (await job_events(event_log, job.job_id))[-1] == "JobCompleted"
    last = await event_log.last_seq()
    await eventually(lambda: plane.scheduler.scheduler.board.position >= last, what="board past the garbage")


async def test_a_restart_from_the_snapshot_equals_a_full_replay(nats_server, nc, topology, event_log) -> None:
    periodic = msgspec.structs.replace(SCHEDULER, snapshot_every=4)
    kv = await ensure_kv(nc.jetstream(), topology.snapshot_bucket)
    async with InProcess(nats_server.url, topology, DiscoveryService, DISCOVERY, "discovery"):
        worker = await FakeWorker(nats_server.url, topology, "w1", slots=2).start()
        try:
            async with InProcess(nats_server.url, topology, SchedulerService, periodic, "scheduler") as service:
                await eventually(lambda: leading(service), what="leading")
                for n in range(4):
                    await submit(nc, topology, priority=n % 2, idempotency_key=f"k{n}")
                    if n < 2:
                        assignment = await worker.next_assignment()
                        await worker.report_started(assignment)
                        await worker.report_checkpointed(assignment, n)
                        if n == 0:
                            await worker.report_finished(assignment)
                await eventually(lambda: service.scheduler.board.snapshot_seq > 0, what="a periodic snapshot")
            # From here on only a clean stop writes snapshots.
            async with InProcess(nats_server.url, topology, SchedulerService, SCHEDULER, "scheduler") as service:
                await eventually(lambda: leading(service), what="leading again")
                assert service.scheduler.board.snapshot_seq > 0
                await submit(nc, topology, idempotency_key="late")
                await eventually(lambda: service.scheduler.board.quiet)
            before = service.scheduler.board.state
            seq, restored = await SnapshotStore(kv, "scheduler", type(before)).load()
            assert seq == await event_log.last_seq() and restored == before

            full = LiveBoard(event_log, snapshots=None)
            await full.start()
            await full.catch_up()
            await full.stop()
            assert full.state == before

            async with InProcess(nats_server.url, topology, SchedulerService, SCHEDULER, "scheduler") as again:
                assert again.scheduler.board.snapshot_seq == seq
                assert again.scheduler.board.state == full.state
            manifest = msgspec.json.decode((await kv.get("scheduler")).value)
            await kv.put(f"scheduler.{manifest['slot']}.0", b"torn")  # a corrupt snapshot is replayed over
            assert await SnapshotStore(kv, "scheduler", type(before)).load() is None
        finally:
            await worker.close()


async def test_the_standby_takes_over_when_the_leader_is_killed(nats_server, nc, topology, event_log,
                                                                 tmp_path) -> None:
    procs = await start_schedulers(nats_server.url, topology.prefix, tmp_path)
    worker = None
    try:
        async with InProcess(nats_server.url, topology, DiscoveryService, DISCOVERY, "discovery"):
            before = [await retry_submit(nc, topology) for _ in range(5)]
            leases = await ensure_kv(nc.jetstream(), topology.lease_bucket)
            holder = (await leases.get("scheduler")).value.decode()
            leader = next(p for p in procs if f"-{p.pid}-" in holder)
            leader.send_signal(signal.SIGKILL)
            await leader.wait()
            after = [await retry_submit(nc, topology) for _ in range(3)]
            worker = await FakeWorker(nats_server.url, topology, "w1", slots=4, auto_complete=True).start()
            ids = [a.job_id for a in (*before, *after)]
            await eventually(lambda: set(worker.completed) >= set(ids), timeout=30, what="every job completed")
            for job_id in ids:
                assert await job_events(event_log, job_id) == ["JobSubmitted", "JobAssigned", "JobStarted",
                                                               "JobCompleted"]
            assert f"-{leader.pid}-" not in (await leases.get("scheduler")).value.decode()
    finally:
        if worker is not None:
            await worker.close()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 20)


async def retry_submit(nc, topology) -> JobAccepted:
    """Submit, retrying while no scheduler leads (start-up, takeover)."""
    async def attempt():
        try:
            return await submit(nc, topology)
        except Exception as exc:
            if getattr(exc, "code", None) == 503:
                return None
            raise
    return await eventually(attempt, timeout=30, what="a leading scheduler")


async def test_a_new_leader_republishes_unstarted_assignments(nats_server, nc, topology, event_log) -> None:
    # As if a leader appended JobAssigned and died before publishing the Assignment.
    caps = ev.WorkerCapabilities(hostname="h", cpu_cores=1, ram_mb=1)
    now = utcnow()
    await event_log.append("worker", "w1", [ev.WorkerRegistered(worker_id="w1", capabilities=caps,
                                                                 registered_at=now)], 0)
    await event_log.append("job", "orphan", [ev.JobSubmitted(job_id="orphan", kind="train", workload="noop",
                                                             params={"x": 1}, submitted_at=now)], 0)
    await event_log.append("job", "orphan", [ev.JobAssigned(job_id="orphan", attempt=1, worker_id="w1",
                                                            assigned_at=now)])
    worker = await FakeWorker(nats_server.url, topology, "w1").start(register=False)
    try:
        async with InProcess(nats_server.url, topology, SchedulerService, SCHEDULER, "scheduler"):
            assignment = await worker.next_assignment()
            assert (assignment.job_id, assignment.attempt, assignment.params) == ("orphan", 1, {"x": 1})
    finally:
        await worker.close()


async def test_a_hot_standby_holds_the_same_board_and_takes_over(nats_server, nc, topology, event_log) -> None:
    async with InProcess(nats_server.url, topology, DiscoveryService, DISCOVERY, "discovery"):
        first = InProcess(nats_server.url, topology, SchedulerService, SCHEDULER, "scheduler-1")
        second = InProcess(nats_server.url, topology, SchedulerService, SCHEDULER, "scheduler-2", standby=True)
        one = await first.__aenter__()
        await eventually(lambda: leading(one), what="the first leading")
        two = await second.__aenter__()
        worker = await FakeWorker(nats_server.url, topology, "w1").start()
        try:
            await eventually(lambda: "w1" in one.scheduler.board.state.workers)
            running = await submit(nc, topology)
            assignment = await worker.next_assignment()
            await worker.report_started(assignment)
            queued = await submit(nc, topology, priority=3)
            last = await event_log.last_seq()
            await eventually(lambda: two.scheduler.board.position >= last and one.scheduler.board.quiet)
            assert not two.serving.is_set()
            assert two.scheduler.board.state == one.scheduler.board.state
            await first.shutdown()
            await eventually(lambda: leading(two), what="the standby leading")
            await worker.report_finished(assignment)
            follow_up = await worker.next_assignment()
            assert follow_up.job_id == queued.job_id
            assert (await job_events(event_log, running.job_id))[-1] == "JobCompleted"
        finally:
            await worker.close()
            await second.shutdown()


async def test_a_rejected_append_rebuilds_the_board_and_decides_again(plane, nc, topology, event_log) -> None:
    job = await submit(nc, topology)
    board = plane.scheduler.scheduler.board
    await eventually(lambda: board.quiet)
    board.state.jobs[job.job_id].version -= 1  # as if another writer had moved the job on meanwhile
    stopping = await call(nc, topology, StopJob(job_id=job.job_id), JobsStopping)
    assert stopping.job_ids == [job.job_id]
    assert await job_events(event_log, job.job_id) == ["JobSubmitted", "JobStopRequested", "JobStopped"]
    await eventually(lambda: leading(plane.scheduler) and plane.scheduler.scheduler.board.quiet)
    assert plane.scheduler.scheduler.board.state.finished[job.job_id].status == "stopped"
