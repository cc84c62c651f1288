"""Contract tests of /api/v1/jobs on a real gateway: happy paths, filters, pages, and bad input → 4xx."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.integration.gateway_support import assert_error, gateway_stack, publish_progress, run_job

JOB = {"workload": "noop", "max_iterations": 5}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a projector and the real scheduler and discovery."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def test_submit_then_read_your_write(stack) -> None:
    async with stack.client("operator") as client:
        created = await client.post("/api/v1/jobs", json={**JOB, "params": {"lr": 0.1}, "labels": ["a"]})
        assert created.status_code == 201
        job = created.json()
        assert job["status"] == "queued" and job["params"] == {"lr": 0.1} and job["labels"] == ["a"]
        assert (await client.get(f"/api/v1/jobs/{job['id']}")).json()["id"] == job["id"]
        listed = (await client.get("/api/v1/jobs")).json()["items"]
        assert [j["id"] for j in listed] == [job["id"]]


async def test_same_idempotency_key_gives_the_same_job(stack) -> None:
    async with stack.client("operator") as client:
        first = await client.post("/api/v1/jobs", json={**JOB, "idempotency_key": "k1"})
        again = await client.post("/api/v1/jobs", json={**JOB, "idempotency_key": "k1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]


@pytest.mark.parametrize(("body", "words"), [
    ({"max_iterations": 5}, ["workload"]),
    ({"workload": "noop", "max_iterations": "five"}, ["max_iterations"]),
    ({"workload": "noop", "max_iterations": 10**15}, ["max_iterations"]),
    ({"workload": "noop", "max_iterations": 0}, ["max_iterations"]),
    ({"workload": "noop", "priority": 10**9}, ["priority"]),
    ({"workload": "noop", "gpus": -1}, ["gpus"]),
    ({"workload": "noop", "kind": "bake"}, ["kind"]),
    ({"workload": "noop", "checkpoint_of": "not.an.id"}, ["checkpoint_of"]),
    ({"workload": "noop", "max_iteration": 5}, ["max_iteration"]),
    ({"workload": "", "max_iterations": 5}, ["workload"]),
    ([], []),
])
async def test_submit_rejects_bad_input(stack, body, words) -> None:
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/jobs", json=body), 400, *words)


async def test_submit_rejects_a_body_that_is_not_json(stack) -> None:
    async with stack.client("operator") as client:
        response = await client.post("/api/v1/jobs", content=b"{nope", headers={"Content-Type": "application/json"})
    assert_error(response, 400)


async def test_list_filters_and_pages(stack) -> None:
    ids = [await run_job(stack) for _ in range(3)]
    ids += [await run_job(stack, kind="eval", checkpoint_of=ids[0], finish=False) for _ in range(2)]
    await stack.projected()
    async with stack.client("viewer") as client:
        running = (await client.get("/api/v1/jobs", params={"status": "running"})).json()["items"]
        assert {j["id"] for j in running} == set(ids[3:])
        both = (await client.get("/api/v1/jobs", params=[("status", "running"), ("status", "completed")])).json()
        assert len(both["items"]) == 5
        trains = (await client.get("/api/v1/jobs", params={"kind": "train", "workload": "2048"})).json()["items"]
        assert {j["id"] for j in trains} == set(ids[:3])
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/api/v1/jobs", params=params)).json()
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert sorted(seen) == sorted(ids) and len(seen) == 5


@pytest.mark.parametrize("params", [{"status": "sleeping"}, {"kind": "bake"}, {"limit": 0}, {"limit": 10**9},
                                    {"limit": "many"}, {"cursor": "garbage!"}, {"cursor": "WzEsMl0"}])
async def test_list_rejects_bad_query(stack, params) -> None:
    async with stack.client("viewer") as client:
        assert_error(await client.get("/api/v1/jobs", params=params), 400)


@pytest.mark.parametrize("path", ["", "/events", "/progress", "/checkpoints"])
@pytest.mark.parametrize("job_id", ["01NOSUCHJOB", "a.b", "x" * 300])
async def test_unknown_job_is_404(stack, path, job_id) -> None:
    async with stack.client("viewer") as client:
        assert_error(await client.get(f"/api/v1/jobs/{job_id}{path}"), 404)


async def test_job_timeline_progress_and_checkpoints(stack) -> None:
    job = await run_job(stack, result={"score": 2.0})
    await publish_progress(stack.nc, stack.topology, job, range(1, 6))
    await stack.projected()
    async with stack.client("viewer") as client:
        view = (await client.get(f"/api/v1/jobs/{job}")).json()
        assert view["status"] == "completed" and view["result"] == {"score": 2.0}
        timeline = (await client.get(f"/api/v1/jobs/{job}/events")).json()["events"]
        assert [e["type"] for e in timeline] == ["JobSubmitted", "JobAssigned", "JobStarted", "JobCheckpointed",
                                                 "JobCompleted"]
        progress = (await client.get(f"/api/v1/jobs/{job}/progress")).json()
        assert [s["iteration"] for s in progress["samples"]] == [1, 2, 3, 4, 5]
        later = (await client.get(f"/api/v1/jobs/{job}/progress",
                                  params={"since": progress["samples"][2]["seq"]})).json()
        assert [s["iteration"] for s in later["samples"]] == [4, 5]
        checkpoints = (await client.get(f"/api/v1/jobs/{job}/checkpoints")).json()["checkpoints"]
        assert [(c["iteration"], c["name"]) for c in checkpoints] == [(5, f"{job}/1-5")]
        assert_error(await client.get(f"/api/v1/jobs/{job}/progress", params={"since": -1}), 400)


async def test_stop(stack) -> None:
    async with stack.client("operator") as client:
        job = (await client.post("/api/v1/jobs", json=JOB)).json()["id"]
        stopped = await client.post(f"/api/v1/jobs/{job}/stop")
        assert stopped.status_code == 202 and stopped.json() == {"job_ids": [job]}
        await stack.projected()
        assert (await client.get(f"/api/v1/jobs/{job}")).json()["status"] == "stopped"
        # Stopping it again is refused: it has finished (documented as 409, with what it ended as).
        assert_error(await client.post(f"/api/v1/jobs/{job}/stop"), 409, "already finished", "stopped")
        assert_error(await client.post("/api/v1/jobs/01NOSUCHJOB/stop"), 404)


async def test_a_stopped_job_ends_at_its_current_attempt(stack) -> None:
    async with stack.client("operator") as client:
        job = (await client.post("/api/v1/jobs", json=JOB)).json()["id"]
        assert (await client.post(f"/api/v1/jobs/{job}/stop")).status_code == 202
    events, _version = await stack.log.load("job", job)
    stopped = [e.event for e in events if e.type == "JobStopped"]
    assert [e.attempt for e in stopped] == [1]  # as the scheduler's decider says, not 0


async def test_a_job_the_projector_has_not_reached_is_read_from_the_log(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, read_your_writes_s=0.05) as stack:
        job = await run_job(stack, finish=False)
        await stack.projected()
        # Drop the row the projector wrote: the gateway must fall back to folding the log.
        async with stack.store.transaction() as tx:
            await tx.execute("DELETE FROM jobs WHERE id = ?", job)
        async with stack.client("viewer") as client:
            view = (await client.get(f"/api/v1/jobs/{job}")).json()
    assert view["status"] == "running" and view["last_checkpoint_iteration"] == 5 and view["worker_id"] == "w1"


async def test_commands_without_the_scheduler_are_503(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, command_timeout_s=0.5) as stack:
        async with stack.client("operator") as client:
            assert_error(await client.post("/api/v1/jobs", json=JOB), 503, "scheduler")
            assert_error(await client.post("/api/v1/training/stop"), 503)


async def test_a_scheduler_that_does_not_answer_is_504_and_the_schema_says_both(nats_server, nc, topology,
                                                                               tmp_path) -> None:
    # Something takes the commands and never answers (a leader stuck mid-command): a timeout, not an absence.
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, command_timeout_s=0.5) as stack:
        async def never_answer(_msg) -> None:
            pass

        silent = [await nc.subscribe(topology.command("scheduler", verb), cb=never_answer)
                  for verb in ("submit", "stop")]
        try:
            async with stack.client("operator") as client:
                assert_error(await client.post("/api/v1/jobs", json=JOB), 504, "SubmitJob", "within 0.5 s")
                assert_error(await client.post("/api/v1/jobs", json={**JOB, "idempotency_key": "k"}), 504,
                             "SubmitJob", "within 0.5 s")
                assert_error(await client.post("/api/v1/training/stop"), 504, "StopJob")
                schema = (await client.get("/schema/openapi.json")).json()
        finally:
            for subscription in silent:
                await subscription.unsubscribe()
    for path, method in [("/api/v1/jobs", "post"), ("/api/v1/training/stop", "post"),
                         ("/api/v1/testing/start", "post"), ("/api/v1/jobs/{job_id}/stop", "post")]:
        assert {"503", "504"} <= set(schema["paths"][path][method]["responses"]), path
