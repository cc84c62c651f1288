"""GET /api/v1/jobs/{id}/episodes on a real gateway, and the client's follow reading the episodes that came after
the job's final event (the live socket is left once that event is in)."""

from __future__ import annotations

import pytest_asyncio

from contracts.telemetry import EpisodeReport
from gateway.client import AsyncClient
from gateway.schemas.jobs import JobView
from tests.integration.gateway_support import assert_error, gateway_stack, publish_episodes, publish_progress, run_job


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def test_episodes_since_a_telemetry_sequence(stack) -> None:
    train = await run_job(stack)
    evaluation = await run_job(stack, kind="eval", checkpoint_of=train, finish=False)
    await publish_episodes(stack.nc, stack.topology, evaluation, [10.0])
    await publish_progress(stack.nc, stack.topology, evaluation, range(1, 3))
    await publish_episodes(stack.nc, stack.topology, evaluation, [10.0, 20.0])  # episodes 1 (again) and 2
    async with stack.client("viewer") as client:
        path = f"/api/v1/jobs/{evaluation}/episodes"
        every = (await client.get(path)).json()
        assert [(e["episode"], e["score"]) for e in every["episodes"]] == [(1, 10.0), (1, 10.0), (2, 20.0)]
        assert every["episodes"][2]["figures"] == {"max_tile": 512.0, "moves": 102.0}
        assert every["episodes"][0]["log"][0]["action"] == "up" and every["next_since"] == every["episodes"][2]["seq"]
        seqs = [e["seq"] for e in every["episodes"]]
        progress = (await client.get(f"/api/v1/jobs/{evaluation}/progress")).json()["samples"]
        assert seqs[0] < progress[0]["seq"] < progress[1]["seq"] < seqs[1]  # one telemetry sequence for both
        later = (await client.get(path, params={"since": seqs[0]})).json()
        assert [e["seq"] for e in later["episodes"]] == seqs[1:]
        paged = (await client.get(path, params={"since": seqs[0], "limit": 1})).json()
        assert [e["seq"] for e in paged["episodes"]] == seqs[1:2] and paged["next_since"] == seqs[1]
        none = (await client.get(path, params={"since": seqs[2]})).json()
        assert none == {"job_id": evaluation, "episodes": [], "next_since": seqs[2]}
        assert (await client.get(f"/api/v1/jobs/{train}/episodes")).json()["episodes"] == []
        assert_error(await client.get(path, params={"since": -1}), 400)
        assert_error(await client.get(path, params={"limit": 0}), 400)
        assert_error(await client.get("/api/v1/jobs/01NOSUCHJOB/episodes"), 404)
        schema = (await client.get("/schema/openapi.json")).json()
    documented = schema["paths"]["/api/v1/jobs/{job_id}/episodes"]["get"]
    assert {"200", "400", "404"} <= set(documented["responses"])
    assert {p["name"] for p in documented["parameters"]} == {"job_id", "since", "limit"}
    assert "EpisodeHistory" in schema["components"]["schemas"]


async def test_follow_brings_the_episodes_reported_after_the_final_event(stack) -> None:
    train = await run_job(stack)
    evaluation = await run_job(stack, kind="eval", checkpoint_of=train, finish=False)
    await publish_episodes(stack.nc, stack.topology, evaluation, [10.0])
    updates: list = []
    async with AsyncClient(stack.url, stack.tokens["viewer"]) as client:
        async for update in client.follow(evaluation):
            updates.append(update)
            if len(updates) == 1:
                # While the follow waits: the job ends, and only then do its last episodes reach telemetry.
                worker = await stack.worker()
                assert (await worker.report_finished(stack.assignments[evaluation], result={"score": 20.0})).accepted
                await publish_episodes(stack.nc, stack.topology, evaluation, [10.0, 20.0, 30.0])
    final = updates.pop()
    assert isinstance(final, JobView) and final.status == "completed"
    assert all(isinstance(u, EpisodeReport) for u in updates)
    assert [u.episode for u in updates] == [1, 1, 2, 3]  # every report once, in telemetry order
