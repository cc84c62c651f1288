"""The read models' queries (the gateway and the CLI both read through them) on SQLite and PostgreSQL alike,
and one gateway over each store."""

from __future__ import annotations

from contracts import events as ev
from contracts.base import new_id, utcnow
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections, ensure_tables, is_built, projection_checkpoints, projection_seq
from eventstore.readmodels.jobs import job_checkpoints, jobs_on_workers, list_jobs
from eventstore.readmodels.workers import list_workers
from gateway.views import job_view, worker_view
from tests.integration.gateway_support import gateway_stack, run_job


async def test_queries_on_every_store(event_log, store) -> None:
    assert not await is_built(store, "jobs")
    await ensure_tables(store)
    assert await is_built(store, "jobs") and await is_built(store, "workers")
    trains = [new_id() for _ in range(3)]
    for job_id in trains:
        await run_job(event_log, job_id)
    running = new_id()
    await run_job(event_log, running, kind="eval", checkpoint_of=trains[0], finish=False)
    caps = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=1024)
    await event_log.append("worker", "w1", [ev.WorkerRegistered(worker_id="w1", capabilities=caps,
                                                                registered_at=utcnow())])
    await ProjectionRunner(event_log, store, all_projections()).catch_up()
    await ensure_tables(store)  # again, after the projector: harmless

    rows, cursor = await list_jobs(store, limit=2)
    rest, end = await list_jobs(store, cursor=cursor, limit=2)
    assert len(rows) == 2 and cursor and len(rest) == 2 and end is None
    assert {r["id"] for r in rows + rest} == {*trains, running}
    done, _ = await list_jobs(store, statuses=["completed"], kind="train", workload="2048")
    assert {job_view(r).id for r in done} == set(trains)
    assert [c["iteration"] for c in await job_checkpoints(store, trains[0])] == [5]
    assert await jobs_on_workers(store) == {"w1": [running]}
    record = (await list_workers(store, "w1"))[0]
    assert record["labels"] == ["training", "evaluation"] and record["gpus"] == []
    assert await list_workers(store) == [record]
    worker = worker_view(record, [running], None)
    assert worker.hostname == "box" and worker.last_seen is None
    assert await projection_seq(store, "jobs") == await event_log.last_seq()
    assert (await projection_checkpoints(store))["workers"][0] == await event_log.last_seq()


async def test_a_gateway_over_every_store(nats_server, nc, topology, tmp_path, store) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, store=store) as stack:
        async with stack.client("operator") as client:
            job = (await client.post("/api/v1/jobs", json={"workload": "noop"})).json()
            listed = (await client.get("/api/v1/jobs", params={"status": "queued"})).json()["items"]
            health = (await client.get("/api/v1/health")).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert health["store"] == {"ok": True, "dialect": store.dialect, "error": None}
