"""A worker speaks only for the jobs it runs: progress and episodes another admitted worker publishes for them
(on its own subject, `….progress.<job>.<rogue>`, the only one NATS lets it use) are stored but never shown:
not by REST, `stoker logs` (with and without --follow), the WebSocket feed (even for a job the hub did not see
assigned), or a resume of it. The monitor's
side is tests/integration/test_monitor_service.py::test_progress_from_a_worker_the_job_is_not_on_does_not_count;
the server refusing `….progress.<job>.<someone else>` is tests/integration/test_nats_permissions.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest_asyncio
from websockets.asyncio.client import connect

from contracts import events as ev
from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore import telemetry
from gateway.hub import Hub, Subscriber
from gateway.live import TELEMETRY
from tests.integration.gateway_support import gateway_stack, publish_episodes, publish_progress, run_job

ROOT = Path(__file__).resolve().parents[2]
FORGED_ITERATION, FORGED_EPISODE = 999, 7


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def forge(stack, job_id: str) -> int:
    """What a rogue worker publishes for w1's job: samples that even claim w1 in their bodies; the last seq."""
    js, topology = stack.nc.jetstream(), stack.topology
    progress = JobProgress(job_id=job_id, attempt=1, worker_id="w1", iteration=FORGED_ITERATION, total=10,
                           at=utcnow())
    await js.publish(topology.job_telemetry("progress", job_id, "rogue"), encode(progress))
    report = EpisodeReport(job_id=job_id, attempt=1, episode=FORGED_EPISODE, score=1e9, figures={}, log=[],
                           at=utcnow())
    return (await js.publish(topology.job_telemetry("episode", job_id, "rogue"), encode(report))).seq


def cli(stack, tmp_path: Path, *args: str):
    """The real `stoker` CLI in a subprocess, against the stack's NATS."""
    env = {**os.environ, "STOKER_NATS_URL": stack.nc.connected_url.geturl(), "STOKER_PREFIX": stack.topology.prefix,
           "STOKER_DATA_DIR": str(tmp_path / "cli")}
    return asyncio.create_subprocess_exec(sys.executable, "-m", "ops", *args, cwd=ROOT, env=env,
                                          stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def socket_on(stack, topic: str, **subscribe: Any):
    """A viewer's socket on one topic: it, the `subscribed` answer, and the telemetry a resume sent before it."""
    conn = await connect(stack.ws_url)
    await conn.send(json.dumps({"type": "auth", "token": stack.tokens["viewer"]}))
    assert json.loads(await conn.recv())["type"] == "welcome"
    await conn.send(json.dumps({"type": "subscribe", "topics": [topic], **subscribe}))
    replayed = []
    async with asyncio.timeout(10):
        while (message := json.loads(await conn.recv()))["type"] != "subscribed":
            if message.get("stream") == TELEMETRY:
                replayed.append(message)
    return conn, message, replayed


async def telemetry_until(conn, last: int) -> list[dict[str, Any]]:
    """The socket's telemetry messages until sequence `last` has come (bounded)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not out or out[-1]["seq"] < last:
            message = json.loads(await conn.recv())
            if message.get("stream") == TELEMETRY:
                out.append(message)
    return out


async def test_forged_samples_are_not_shown_by_rest_the_socket_or_stoker_logs(stack, tmp_path) -> None:
    train = await run_job(stack)
    evaluation = await run_job(stack, kind="eval", checkpoint_of=train, finish=False)  # running on w1
    live, subscribed, _ = await socket_on(stack, f"job:{evaluation}")
    every, _, _ = await socket_on(stack, "progress")
    await publish_progress(stack.nc, stack.topology, evaluation, range(1, 3), total=3)
    await publish_episodes(stack.nc, stack.topology, evaluation, [10.0])
    await forge(stack, evaluation)  # the newest progress and episode on the stream are the forged ones
    await publish_progress(stack.nc, stack.topology, evaluation, range(3, 4), total=3)  # w1's, after them
    last = (await stack.nc.jetstream().stream_info(stack.topology.telemetry_stream)).state.last_seq

    # The live feed, on the job's topic and on `progress`, and a resume from before any of it.
    for conn in (live, every):
        shown = await telemetry_until(conn, last)
        assert [(m["type"], m["data"].get("iteration", m["data"].get("episode"))) for m in shown] == (
            [("progress", 1), ("progress", 2), ("episode", 1), ("progress", 3)] if conn is live
            else [("progress", 1), ("progress", 2), ("progress", 3)])
        await conn.close()
    resumed, answer, replayed = await socket_on(stack, f"job:{evaluation}",
                                                resume={"telemetry": subscribed["positions"]["telemetry"]})
    assert [m["data"].get("iteration", m["data"].get("episode")) for m in replayed] == [1, 2, 1, 3]
    assert answer["replayed"] == 4
    await resumed.close()

    async with stack.client("viewer") as client:
        progress = (await client.get(f"/api/v1/jobs/{evaluation}/progress")).json()["samples"]
        assert [(s["iteration"], s["worker_id"]) for s in progress] == [(1, "w1"), (2, "w1"), (3, "w1")]
        episodes = (await client.get(f"/api/v1/jobs/{evaluation}/episodes")).json()["episodes"]
        assert [(e["episode"], e["score"]) for e in episodes] == [(1, 10.0)]
        status = (await client.get(f"/api/v1/testing/{evaluation}/status")).json()
        assert status["latest_episode"]["score"] == 10.0 and status["progress"]["current_episode"] == 3
        results = (await client.get(f"/api/v1/testing/{evaluation}/results")).json()
        assert [e["score"] for e in results["episodes"]] == [10.0]
        assert (await client.get(f"/api/v1/jobs/{evaluation}")).json()["progress"]["iteration"] == 3

    process = await cli(stack, tmp_path, "logs", evaluation, "--json")
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err
    assert [line["iteration"] for line in map(json.loads, out.decode().splitlines()) if "iteration" in line] == [
        1, 2, 3]


async def test_stoker_logs_follow_shows_only_the_jobs_worker(stack, tmp_path) -> None:
    job = await run_job(stack, finish=False)  # a training on w1
    await publish_progress(stack.nc, stack.topology, job, range(1, 2))
    process = await cli(stack, tmp_path, "logs", job, "--follow", "--json")
    try:
        async with asyncio.timeout(60):
            first = json.loads(await process.stdout.readline())  # the history is out: live samples are heard
        assert first["iteration"] == 1
        await forge(stack, job)
        await publish_progress(stack.nc, stack.topology, job, range(2, 3))
        worker = await stack.worker()
        assert (await worker.report_finished(stack.assignments[job], result={})).accepted
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err
    lines = [first, *map(json.loads, out.decode().splitlines())]
    assert [line.get("iteration") for line in lines[:-1]] == [1, 2] and lines[-1]["type"] == "JobCompleted"


async def test_the_hub_reads_the_assignments_of_a_job_it_did_not_see_assigned(event_log, nc, topology) -> None:
    # A job assigned before the hub listened: its samples are held, in order, while its events are read.
    job = new_id()
    await event_log.append("job", job, [
        ev.JobSubmitted(job_id=job, kind="train", workload="noop", max_iterations=10, submitted_at=utcnow()),
        ev.JobAssigned(job_id=job, attempt=1, worker_id="w1", assigned_at=utcnow())], 0)
    for worker, iteration in (("w1", 1), ("rogue", FORGED_ITERATION), ("w1", 2)):
        sample = JobProgress(job_id=job, attempt=1, worker_id="w1", iteration=iteration, at=utcnow())
        await nc.jetstream().publish(topology.job_telemetry("progress", job, worker), encode(sample))
    hub = Hub(event_log)
    watcher = Subscriber(queue_size=100)
    hub.subscribe(watcher, [f"job:{job}"])
    async for msg in event_log.read_raw(1, filter_subject=topology.job_telemetry("progress", job),
                                        stream=topology.telemetry_stream):
        hub.dispatch(TELEMETRY, msg)
    async with asyncio.timeout(10):
        shown = [json.loads(await watcher.queue.get()) for _ in range(2)]
    assert [m["data"]["iteration"] for m in shown] == [1, 2] and watcher.queue.empty()
    assert hub.assignments.knows(job) and not hub.assignments.believes(
        topology, topology.job_telemetry("progress", job, "rogue"))
    await hub.stop()


async def test_samples_stored_before_subjects_named_their_worker_are_kept_as_history(stack) -> None:
    # Only admin may publish on the old `….progress.<job>` now: what is there was stored before the upgrade.
    old, both = await run_job(stack, finish=False), await run_job(stack, finish=False)
    for job, iteration in ((old, 4), (both, 1)):
        sample = JobProgress(job_id=job, attempt=1, worker_id="w1", iteration=iteration, total=10, at=utcnow())
        await stack.nc.jetstream().publish(stack.topology.telemetry("progress", job), encode(sample))
    await publish_progress(stack.nc, stack.topology, both, range(2, 4))
    await stack.projected()  # the rows say where both jobs run (the job views below read them)
    async with stack.client("viewer") as client:
        samples = (await client.get(f"/api/v1/jobs/{both}/progress")).json()["samples"]
        assert [s["iteration"] for s in samples] == [1, 2, 3]
        assert (await client.get(f"/api/v1/jobs/{both}")).json()["progress"]["iteration"] == 3
        assert (await client.get(f"/api/v1/jobs/{old}")).json()["progress"]["iteration"] == 4  # only history
        listed = {j["id"]: j["progress"] for j in (await client.get("/api/v1/jobs")).json()["items"]}
        assert listed[old]["iteration"] == 4 and listed[both]["iteration"] == 3


async def test_the_job_lists_batched_read_believes_what_one_by_one_reads_believe(event_log, nc, topology,
                                                                                monkeypatch) -> None:
    # Jobs whose newest believed sample is: the current worker's, an earlier worker's (the current one sent
    # none), only history, none at all, or history behind a malformed newest sample; and a rogue's forgery on
    # each. Chunks of 7 subjects, so one page takes several batched gets.
    monkeypatch.setattr(telemetry, "MULTI_LAST_CHUNK", 7)
    js = nc.jetstream()

    async def put(job: str, worker: str | None, iteration: int, data: bytes | None = None) -> None:
        sample = JobProgress(job_id=job, attempt=1, worker_id=worker or "w1", iteration=iteration, total=10,
                             at=utcnow())
        subject = topology.job_telemetry("progress", job, worker) if worker else topology.telemetry("progress", job)
        await js.publish(subject, data if data is not None else encode(sample))

    jobs: list[tuple[str, list[str]]] = []
    for n in range(6):
        current, earlier, history, nothing, malformed = (new_id() for _ in range(5))
        await put(current, "w1", 1)
        await put(current, "w2", 2 + n)
        await put(earlier, "w1", 5)
        await put(history, None, 6)
        await put(malformed, None, 7)
        await put(malformed, "w1", 8, data=b"{not a sample")
        for job in (current, earlier, history, nothing, malformed):
            await put(job, "rogue", FORGED_ITERATION)
        jobs += [(current, ["w1", "w2"]), (earlier, ["w1", "w2"]), (history, ["w1"]), (nothing, []),
                 (malformed, ["w1"])]
    batched = await telemetry.last_job_samples(nc, topology, "progress", jobs, JobProgress)
    one_by_one = [await telemetry.last_job_sample(nc, topology, "progress", job, workers, JobProgress)
                  for job, workers in jobs]
    assert batched == one_by_one
    assert [s.iteration if s else None for s in batched[:5]] == [2, 5, 6, None, 7]
    assert FORGED_ITERATION not in {s.iteration for s in batched if s}
    assert await telemetry.last_job_samples(nc, topology, "progress", [], JobProgress) == []
