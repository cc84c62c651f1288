"""The gateway's read-model queries on SQLite and PostgreSQL alike, and one gateway over each store."""

from __future__ import annotations

from contracts import events as ev
from contracts.base import new_id, utcnow
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from gateway import queries
from gateway.views import job_view, worker_view
from tests.integration.gateway_support import gateway_stack, run_job


async def test_queries_on_every_store(event_log, store) -> None:
    await queries.ensure_tables(store)
    trains = [new_id() for _ in range(3)]
    for job_id in trains:
        await run_job(event_log, job_id)
    running = new_id()
    await run_job(event_log, running, kind="eval", checkpoint_of=trains[0], finish=False)
    caps = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=1024)
    await event_log.append("worker", "w1", [ev.WorkerRegistered(worker_id="w1", capabilities=caps,
                                                                registered_at=utcnow())])
    await ProjectionRunner(event_log, store, all_projections()).catch_up()
    await queries.ensure_tables(store)  # again, after the projector: harmless

    rows, cursor = await queries.list_jobs(store, limit=2)
    rest, end = await queries.list_jobs(store, cursor=cursor, limit=2)
    assert len(rows) == 2 and cursor and len(rest) == 2 and end is None
    assert {r["id"] for r in rows + rest} == {*trains, running}
    done, _ = await queries.list_jobs(store, statuses=["completed"], kind="train", workload="2048")
    assert {job_view(r).id for r in done} == set(trains)
    assert [c["iteration"] for c in await queries.checkpoint_rows(store, trains[0])] == [5]
    assert await queries.active_job_ids(store, "eval") == [running]
    assert await queries.running_by_worker(store) == {"w1": [running]}
    worker = worker_view((await queries.worker_rows(store, "w1"))[0], [running], None)
    assert worker.hostname == "box" and worker.last_seen is None
    assert await queries.projection_seq(store, "jobs") == await event_log.last_seq()
    assert (await queries.projection_checkpoints(store))["workers"][0] == await event_log.last_seq()


async def test_a_gateway_over_every_store(nats_server, nc, topology, tmp_path, store) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, store=store) as stack:
        async with stack.client("operator") as client:
            job = (await client.post("/api/v1/jobs", json={"workload": "noop"})).json()
            listed = (await client.get("/api/v1/jobs", params={"status": "queued"})).json()["items"]
            health = (await client.get("/api/v1/health")).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert health["store"] == {"ok": True, "dialect": store.dialect, "error": None}
