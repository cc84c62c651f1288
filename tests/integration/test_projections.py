"""Projections on a real nats-server, into real SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog

from contracts import events as ev
from contracts.base import new_id, utcnow
from eventstore.projection import ProjectionRunner
from eventstore.readmodels.jobs import JobsProjection, job_workers
from eventstore.readmodels.workers import WorkersProjection
from eventstore.replay import replay
from eventstore.stores.sqlite import SqliteStore
from eventstore.telemetry import assigned_workers
from tests.integration.counting import CountingProjection

ROOT = Path(__file__).resolve().parents[2]


async def submit_and_run(log, job_id: str, *, finish: bool = True) -> None:
    """A job's life: submitted, assigned, started, checkpointed, completed."""
    now = utcnow()
    await log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind="train", workload="noop", max_iterations=10, submitted_at=now),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="w1", assigned_at=now)], 0)
    await log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=1, worker_id="w1", started_at=now)])
    await log.append("job", job_id, [ev.JobCheckpointed(job_id=job_id, attempt=1, iteration=5, name="c1",
                                                        sha256="0" * 64, size=10, checkpointed_at=now)])
    if finish:
        await log.append("job", job_id, [ev.JobCompleted(job_id=job_id, attempt=1, result={"score": 1.5},
                                                         completed_at=now)])


async def test_jobs_and_workers_read_models(event_log, store) -> None:
    done, running = new_id(), new_id()
    await submit_and_run(event_log, done)
    await submit_and_run(event_log, running, finish=False)
    caps = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=1024)
    await event_log.append("worker", "w1", [ev.WorkerRegistered(worker_id="w1", capabilities=caps,
                                                                registered_at=utcnow())])
    await event_log.append("worker", "w1", [ev.WorkerLost(worker_id="w1", last_seen=utcnow(), lost_at=utcnow())])
    runner = ProjectionRunner(event_log, store, [JobsProjection(), WorkersProjection()])
    position = await runner.catch_up()
    assert position == await event_log.last_seq()
    rows = {r["id"]: r for r in await store.fetchall("SELECT * FROM {jobs}")}
    assert rows[done]["status"] == "completed" and rows[done]["result"] == '{"score":1.5}'
    assert rows[running]["status"] == "running" and rows[running]["last_checkpoint_iteration"] == 5
    checkpoints = await store.fetchall("SELECT * FROM job_checkpoints WHERE job_id = ?", done)
    assert [c["name"] for c in checkpoints] == ["c1"]
    worker = await store.fetchone("SELECT * FROM workers WHERE id = ?", "w1")
    assert worker["status"] == "lost" and worker["hostname"] == "box"


async def test_a_jobs_workers_are_every_worker_it_was_assigned_to(event_log, store) -> None:
    # Whose telemetry of the job readers believe (eventstore.telemetry.job_samples), on every store.
    job, never = new_id(), new_id()
    await submit_and_run(event_log, job, finish=False)  # on w1
    now = utcnow()
    for attempt, worker in ((2, "w2"), (3, "w1")):
        await event_log.append("job", job, [ev.JobRequeued(job_id=job, attempt=attempt, reason="worker_lost",
                                                           requeued_at=now),
                                            ev.JobAssigned(job_id=job, attempt=attempt, worker_id=worker,
                                                           assigned_at=now)])
    await event_log.append("job", never, [ev.JobSubmitted(job_id=never, kind="train", workload="noop",
                                                          submitted_at=now)], 0)
    await ProjectionRunner(event_log, store, [JobsProjection()]).catch_up()
    assert await job_workers(store, job) == ["w2", "w1"]  # the latest assigned last
    assert await job_workers(store, never) == []
    events, _version = await event_log.load("job", job)
    assert assigned_workers(events) == ["w2", "w1"]  # the same from the log


async def test_runner_follows_live_and_resumes_from_checkpoint(event_log, store) -> None:
    runner = ProjectionRunner(event_log, store, [JobsProjection()])
    task = asyncio.create_task(runner.run())
    try:
        job = new_id()
        await submit_and_run(event_log, job, finish=False)
        assert await runner.wait_for(await event_log.last_seq())
        row = await store.fetchone("SELECT status FROM jobs WHERE id = ?", job)
        assert row["status"] == "running"
    finally:
        task.cancel()
    second = new_id()
    await submit_and_run(event_log, second)
    resumed = ProjectionRunner(event_log, store, [JobsProjection()])
    await resumed.catch_up()
    statuses = {r["id"]: r["status"] for r in await store.fetchall("SELECT id, status FROM jobs")}
    assert statuses == {job: "running", second: "completed"}


async def test_garbage_on_the_stream_is_logged_and_skipped(event_log, nc, topology, store) -> None:
    job = new_id()
    await submit_and_run(event_log, job)
    await nc.publish(topology.events("job", "garbage"), b"{not json")
    await nc.publish(topology.events("job", "typed"), b'{"type": "JobSubmitted"}',
                     headers={"Stoker-Type": "JobSubmitted", "Stoker-Schema": "2"})
    await nc.publish(topology.events("job", "future"), b"{}", headers={"Stoker-Type": "JobSubmitted",
                                                                          "Stoker-Schema": "99"})
    await nc.flush()
    after = new_id()
    await submit_and_run(event_log, after)
    runner = ProjectionRunner(event_log, store, [JobsProjection()])
    with structlog.testing.capture_logs() as logs:
        await runner.catch_up()
    skipped = [entry for entry in logs if entry["event"] == "skipping malformed event"]
    assert len(skipped) == 3
    assert "unknown event type" in skipped[0]["reason"] and "newer" in skipped[2]["reason"]
    ids = {r["id"] for r in await store.fetchall("SELECT id FROM jobs")}
    assert ids == {job, after}
    assert runner.position == await event_log.last_seq()


async def test_replay_rebuilds_into_shadow_and_swaps(event_log, store) -> None:
    for _ in range(5):
        await submit_and_run(event_log, new_id())
    runner = ProjectionRunner(event_log, store, [JobsProjection()])
    await runner.catch_up()
    before = await store.fetchall("SELECT * FROM jobs ORDER BY id")
    await store.fetchall("SELECT 1")
    async with store.transaction() as tx:
        await tx.execute("UPDATE jobs SET status = 'corrupted'")
    position = await replay(event_log, store, JobsProjection())
    assert position == await event_log.last_seq()
    assert await store.fetchall("SELECT * FROM jobs ORDER BY id") == before
    assert not await store.table_exists("jobs__shadow")
    # The live runner carries on from the swapped checkpoint without applying anything twice.
    await submit_and_run(event_log, new_id())
    await ProjectionRunner(event_log, store, [JobsProjection()]).catch_up()
    assert len(await store.fetchall("SELECT id FROM jobs")) == 6


async def test_version_bump_rebuilds(event_log, store) -> None:
    await submit_and_run(event_log, new_id())
    await ProjectionRunner(event_log, store, [JobsProjection()]).catch_up()
    bumped = JobsProjection()
    bumped.version = 2
    await ProjectionRunner(event_log, store, [bumped]).catch_up()
    assert len(await store.fetchall("SELECT id FROM jobs")) == 1
    row = await store.fetchone("SELECT version FROM stoker_checkpoints WHERE projection = 'jobs'")
    assert row["version"] == 2


async def test_runner_killed_mid_batch_applies_nothing_twice(event_log, nats_server, topology, tmp_path) -> None:
    for _ in range(60):
        await submit_and_run(event_log, new_id())
    total = await event_log.last_seq()
    db = tmp_path / "counting.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.integration.counting", nats_server.url, topology.prefix, str(db),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (await proc.stdout.readline()).strip() == b"ready"
    store = await SqliteStore.open(db)
    try:
        for _ in range(400):  # wait until at least one batch is committed, so the kill lands mid-run
            if await store.table_exists("applied") and await store.fetchone("SELECT seq FROM applied LIMIT 1"):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        partial = await store.fetchone("SELECT seq FROM stoker_checkpoints WHERE projection = 'counting'")
        assert 0 < partial["seq"] < total
        await ProjectionRunner(event_log, store, [CountingProjection()]).catch_up()
        rows = await store.fetchall("SELECT seq, times FROM applied ORDER BY seq")
        assert [r["seq"] for r in rows] == list(range(1, total + 1))
        assert {r["times"] for r in rows} == {1}
    finally:
        await store.close()


async def test_catch_up_fills_batches_and_applies_each_event_once(event_log, store) -> None:
    # max_delay=0: following live, every message would be a batch of its own; catching up ignores it.
    for _ in range(12):
        await submit_and_run(event_log, new_id())  # 5 events a job, 60 in all
    runner = ProjectionRunner(event_log, store, [CountingProjection()], batch_size=25, max_delay=0)
    batches: list[tuple[int, int]] = []
    apply_batch = runner.apply_batch

    async def noted(messages) -> None:
        batches.append((messages[0].metadata.sequence.stream, messages[-1].metadata.sequence.stream))
        await apply_batch(messages)

    runner.apply_batch = noted
    last = await event_log.last_seq()
    assert await runner.catch_up() == last
    assert batches == [(1, 25), (26, 50), (51, 60)]  # full batches, in order, the next read while one is written
    rows = await store.fetchall("SELECT seq, times FROM {applied} ORDER BY seq")
    assert [(r["seq"], r["times"]) for r in rows] == [(s, 1) for s in range(1, last + 1)]
    assert (await runner.checkpoints())["counting"] == last
