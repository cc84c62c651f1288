"""An event a projection cannot apply is quarantined: a dead-letter row, the checkpoint passes it, the rest projects.

On a real nats-server, into real SQLite and PostgreSQL (the `store` fixture).
"""

from __future__ import annotations

import asyncio

import msgspec

from contracts import events as ev
from contracts.base import utcnow
from eventstore.log import StoredEvent
from eventstore.projection import DEAD_LETTERS, ProjectionRunner, dead_letter_counts, dead_letters
from eventstore.readmodels.jobs import JobsProjection
from eventstore.readmodels.workers import WorkersProjection
from eventstore.replay import replay
from eventstore.stores.base import Transaction
from tests.integration.test_projections import submit_and_run


class ScoresProjection:
    """scores(job_id, n): the integer `n` of a job's result, in a BIGINT column (as a real read model would)."""

    name = "scores"
    version = 1
    tables = ("scores",)

    def ddl(self, dialect: str) -> list[str]:
        """One row per completed job with an `n`."""
        return ["CREATE TABLE IF NOT EXISTS {scores} (job_id TEXT PRIMARY KEY, n BIGINT NOT NULL)"]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Store `result["n"]` of a JobCompleted."""
        if isinstance(stored.event, ev.JobCompleted) and "n" in stored.event.result:
            await tx.execute("INSERT INTO {scores} (job_id, n) VALUES (?, ?) ON CONFLICT (job_id) DO NOTHING",
                             stored.event.job_id, stored.event.result["n"], key=stored.event.job_id)


async def publish_oversized_registration(nc, topology, worker_id: str) -> int:
    """A WorkerRegistered with 10**34 cores, published raw: what the log could hold before the bounds."""
    payload = {"type": "WorkerRegistered", "worker_id": worker_id, "registered_at": utcnow().isoformat(),
               "capabilities": {"hostname": "big", "cpu_cores": 10**34, "ram_mb": 1}}
    ack = await nc.jetstream().publish(topology.events("worker", worker_id), msgspec.json.encode(payload),
                                       headers={"Stoker-Type": "WorkerRegistered", "Stoker-Schema": "1"})
    return ack.seq


async def register(event_log, worker_id: str) -> None:
    caps = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=1024)
    await event_log.append("worker", worker_id, [ev.WorkerRegistered(worker_id=worker_id, capabilities=caps,
                                                                     registered_at=utcnow())])


async def checkpoint(store, name: str) -> int:
    row = await store.fetchone("SELECT seq FROM stoker_checkpoints WHERE projection = ?", name)
    return int(row["seq"])


async def test_a_raw_oversized_event_is_dead_lettered_and_the_rest_projects(event_log, nc, topology, store) -> None:
    await submit_and_run(event_log, "before")
    bad = await publish_oversized_registration(nc, topology, "huge")
    await register(event_log, "w1")
    await submit_and_run(event_log, "after")
    runner = ProjectionRunner(event_log, store, [JobsProjection(), WorkersProjection()])
    last = await runner.catch_up()
    assert last == await event_log.last_seq()
    for name in ("jobs", "workers"):
        assert await checkpoint(store, name) == last
    rows = await dead_letters(store)
    assert {(r["projection"], r["seq"], r["reason"], r["event_type"]) for r in rows} == {
        ("jobs", bad, "malformed", "WorkerRegistered"), ("workers", bad, "malformed", "WorkerRegistered")}
    assert all("cpu_cores" in r["error"] and r["subject"] == topology.events("worker", "huge") for r in rows)
    assert {r["id"] for r in await store.fetchall("SELECT id FROM workers")} == {"w1"}
    assert {r["id"] for r in await store.fetchall("SELECT id FROM jobs")} == {"before", "after"}
    assert await dead_letter_counts(store) == {"jobs": {"malformed": 1, "failed": 0},
                                               "workers": {"malformed": 1, "failed": 0}}
    # Caught up again (a restart), nothing is applied or quarantined twice.
    await ProjectionRunner(event_log, store, [JobsProjection(), WorkersProjection()]).catch_up()
    assert len(await dead_letters(store)) == 2


async def test_an_event_a_projection_cannot_apply_is_quarantined_while_following(event_log, store) -> None:
    runner = ProjectionRunner(event_log, store, [JobsProjection(), ScoresProjection()], max_delay=0.005)
    task = asyncio.create_task(runner.run())
    try:
        await submit_and_run(event_log, "small")  # result {"score": 1.5}: no n
        now = utcnow()
        await event_log.append("job", "fine", [ev.JobCompleted(job_id="fine", attempt=1, result={"n": 7},
                                                               completed_at=now)])
        result = await event_log.append("job", "huge", [ev.JobCompleted(job_id="huge", attempt=1,
                                                                         result={"n": 10**30}, completed_at=now)])
        await submit_and_run(event_log, "later")
        await event_log.append("job", "later2", [ev.JobCompleted(job_id="later2", attempt=1, result={"n": 9},
                                                                 completed_at=now)])
        assert await runner.wait_for(await event_log.last_seq(), timeout=20)
        assert not task.done()  # the runner carried on: no crash, no loop
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    last = await event_log.last_seq()
    assert await checkpoint(store, "scores") == last and await checkpoint(store, "jobs") == last
    rows = await dead_letters(store)
    assert [(r["projection"], r["seq"], r["reason"], r["event_type"]) for r in rows] == [
        ("scores", result.last_seq, "failed", "JobCompleted")]
    assert any(word in rows[0]["error"] for word in ("OverflowError", "DataError", "out of"))
    assert {r["job_id"]: r["n"] for r in await store.fetchall("SELECT job_id, n FROM scores")} == {
        "fine": 7, "later2": 9}
    statuses = {r["id"]: r["status"] for r in await store.fetchall("SELECT id, status FROM jobs")}
    assert statuses["small"] == "completed" and statuses["later"] == "completed"  # jobs applied them all

    # A rebuild meets the event again and quarantines it again, once.
    assert await replay(event_log, store, ScoresProjection()) == last
    rows = await dead_letters(store)
    assert [(r["projection"], r["seq"], r["reason"]) for r in rows] == [("scores", result.last_seq, "failed")]
    assert not await store.fetchall(f"SELECT * FROM {DEAD_LETTERS} WHERE projection LIKE '%shadow%'")
