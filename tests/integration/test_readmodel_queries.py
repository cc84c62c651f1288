"""The read models' queries (the gateway and the CLI both read through them) on SQLite and PostgreSQL alike,
and one gateway over each store."""

from __future__ import annotations

from eventstore.readmodels import ensure_tables, is_built, projection_checkpoints, projection_seq
from eventstore.readmodels.jobs import job_checkpoints, jobs_on_workers, list_jobs
from eventstore.readmodels.workers import list_workers
from gateway.views import job_view, worker_view
from tests.integration.gateway_support import gateway_stack, run_job


async def test_queries_on_every_store(nats_server, nc, topology, tmp_path, store) -> None:
    assert not await is_built(store, "jobs")
    await ensure_tables(store)
    assert await is_built(store, "jobs") and await is_built(store, "workers")
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, store=store) as stack:
        trains = [await run_job(stack) for _ in range(3)]
        running = await run_job(stack, kind="eval", checkpoint_of=trains[0], finish=False)
        await stack.projected()
        last = await stack.log.last_seq()
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
    assert record["labels"] == ["training", "evaluation"] and record["gpus"] == [] and record["slots"] == 16
    assert await list_workers(store) == [record]
    worker = worker_view(record, [running], None)
    assert worker.hostname == "fake-w1" and worker.last_seen is None
    assert await projection_seq(store, "jobs") == last
    assert (await projection_checkpoints(store))["workers"][0] == last


async def test_a_gateway_over_every_store(nats_server, nc, topology, tmp_path, store) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, store=store) as stack:
        async with stack.client("operator") as client:
            job = (await client.post("/api/v1/jobs", json={"workload": "noop"})).json()
            listed = (await client.get("/api/v1/jobs", params={"status": "queued"})).json()["items"]
            health = (await client.get("/api/v1/health")).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert health["store"] == {"ok": True, "dialect": store.dialect, "error": None}
