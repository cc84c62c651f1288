"""One malformed message on an aggregate's subject wedges nothing: versions count it, readers mark it."""

from __future__ import annotations

import asyncio
import json

import structlog

from contracts.commands import RegisterWorker, WorkerAccepted
from eventstore.micro import call
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from eventstore.stores.sqlite import SqliteStore
from services.discovery.adapter import DiscoveryService
from tests.integration.fake_worker import FakeWorker, InProcess, eventually, job_events
from tests.integration.test_discovery_service import FAST, acting
from tests.integration.test_events_cli import env_for, stoker
from tests.integration.test_projections import submit_and_run
from tests.integration.test_scheduler_service import plane, submit  # noqa: F401  (plane is a fixture)

STEP_DOWN = "stepping down; rebuilding the board from the log"


async def publish_garbage(nc, subject: str) -> int:
    """What a stray client does: a JetStream publish of bytes that are no event; returns its sequence."""
    ack = await nc.jetstream().publish(subject, b"garbage")
    return ack.seq


async def test_load_counts_a_malformed_message_in_the_version(event_log, nc, topology) -> None:
    await submit_and_run(event_log, "j1", finish=False)
    seq = await publish_garbage(nc, topology.events("job", "j1"))
    with structlog.testing.capture_logs() as logs:
        events, version = await event_log.load("job", "j1")
        for _ in range(3):  # a reader that reads the aggregate again and again says so once
            await event_log.load("job", "j1")
    assert version == seq and [e.type for e in events][-1] == "JobCheckpointed"
    assert len([e for e in logs if e["event"] == "skipping malformed event"]) == 1
    assert event_log.malformed_seen == 1


async def test_a_malformed_message_on_a_running_job_does_not_wedge_it(plane, nc, topology,  # noqa: F811
                                                                      event_log) -> None:
    worker = await plane.worker("w1")
    job = await submit(nc, topology)
    assignment = await worker.next_assignment()
    assert (await worker.report_started(assignment)).accepted
    scheduler = plane.scheduler.scheduler
    with structlog.testing.capture_logs() as logs:
        garbage = await publish_garbage(nc, topology.events("job", job.job_id))
        await eventually(lambda: scheduler.board.position >= garbage, what="board past the garbage")
        reply = await worker.report_finished(assignment)  # it retries (bounded) while the scheduler is busy
        assert reply.accepted
        assert (await job_events(event_log, job.job_id))[-1] == "JobCompleted"
        await eventually(lambda: job.job_id in scheduler.board.state.finished, what="job finished on the board")
    assert len([e for e in logs if e["event"] == STEP_DOWN]) <= 1
    assert scheduler.board.state.finished[job.job_id].status == "completed"


async def test_a_malformed_message_on_a_worker_subject_does_not_wedge_registration(nats_server, nc, topology,
                                                                                    event_log) -> None:
    async with InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery") as service:
        await eventually(lambda: acting(service), what="discovery acting")
        worker = await FakeWorker(nats_server.url, topology, "w1", heartbeat_s=0.1).start()
        try:
            garbage = await publish_garbage(nc, topology.events("worker", "w1"))
            again = await call(nc, topology, RegisterWorker(worker_id="w1", capabilities=worker.capabilities),
                               WorkerAccepted)
            assert again.status == "healthy" and again.seq > garbage
            assert service.discovery.versions["w1"] == again.seq
        finally:
            await worker.close()
    # A fresh discovery folds the log and counts the garbage in the worker's version too.
    async with InProcess(nats_server.url, topology, DiscoveryService, FAST, "discovery") as second:
        await eventually(lambda: acting(second), what="second discovery acting")
        seq = await publish_garbage(nc, topology.events("worker", "w1"))
        await second.discovery.load()
        assert second.discovery.versions["w1"] == seq


async def test_events_tail_marks_a_malformed_message(event_log, nats_server, topology, tmp_path, nc) -> None:
    await submit_and_run(event_log, "j1")
    seq = await publish_garbage(nc, topology.events("job", "j1"))
    env = env_for(nats_server, topology, tmp_path)
    text = (await asyncio.to_thread(stoker, ["events", "tail"], env)).stdout.splitlines()
    marked = [line for line in text if line.split()[0] == str(seq)]
    assert len(marked) == 1 and "MALFORMED" in marked[0] and "unknown event type" in marked[0]
    lines = (await asyncio.to_thread(stoker, ["events", "tail", "--json", "--id", "j1"], env)).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["type"] for r in records][-2:] == ["JobCompleted", None]
    assert records[-1]["seq"] == seq and "unknown event type" in records[-1]["malformed"]
    assert records[-1]["raw"] == "garbage"



async def test_events_dead_letters_lists_what_the_read_models_passed_over(event_log, nats_server, topology,
                                                                          tmp_path, nc) -> None:
    env = env_for(nats_server, topology, tmp_path)
    empty = await asyncio.to_thread(stoker, ["events", "dead-letters"], env)
    assert "no dead letters" in empty.stdout
    await submit_and_run(event_log, "j1")
    seq = await publish_garbage(nc, topology.events("job", "j1"))
    store = await SqliteStore.open(tmp_path / "data" / "readmodels.sqlite3")
    try:
        await ProjectionRunner(event_log, store, all_projections()).catch_up()
    finally:
        await store.close()
    lines = (await asyncio.to_thread(stoker, ["events", "dead-letters", "--json"], env)).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert {(r["seq"], r["projection"], r["reason"]) for r in rows} == {(seq, "jobs", "malformed"),
                                                                       (seq, "workers", "malformed"),
                                                                       (seq, "maps", "malformed"),
                                                                       (seq, "alerts", "malformed")}
    text = (await asyncio.to_thread(stoker, ["events", "dead-letters"], env)).stdout
    assert "malformed" in text and topology.events("job", "j1") in text
