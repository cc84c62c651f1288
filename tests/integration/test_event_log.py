"""The event log on a real nats-server: versions, dedup, restarts, bad input, traces, a 3-node cluster."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import events as ev
from contracts.base import new_id, utcnow, uuid7
from contracts.subjects import Topology
from eventstore import observability
from eventstore.connect import NatsUnavailable, connect
from eventstore.log import AppendError, ConcurrencyError, EventTooLarge, JetStreamLog
from eventstore.server import free_port, start_cluster
from tests.conftest import start_node


def submitted(job_id: str, **extra) -> ev.JobSubmitted:
    return ev.JobSubmitted(job_id=job_id, kind="train", workload="noop", submitted_at=utcnow(), **extra)


def assigned(job_id: str, attempt: int = 1) -> ev.JobAssigned:
    return ev.JobAssigned(job_id=job_id, attempt=attempt, worker_id="w1", assigned_at=utcnow())


async def test_versions_and_optimistic_concurrency(event_log: JetStreamLog) -> None:
    job = new_id()
    first = await event_log.append("job", job, [submitted(job), assigned(job)], expected_version=0)
    version = first.versions[f"job.{job}"]
    assert version == first.last_seq
    with pytest.raises(ConcurrencyError):
        await event_log.append("job", job, [assigned(job, 2)], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await event_log.append("job", job, [assigned(job, 2), assigned(job, 3)], expected_version=version - 1)
    events, loaded = await event_log.load("job", job)
    assert loaded == version and [e.type for e in events] == ["JobSubmitted", "JobAssigned"]
    assert events[1].correlation_id == events[0].event_id  # one decision shares a correlation id
    assert await event_log.load("job", new_id()) == ([], 0)


@pytest.mark.parametrize("count", [1, 3])
async def test_retried_append_is_deduplicated(event_log: JetStreamLog, count: int) -> None:
    job = new_id()
    await event_log.append("job", job, [submitted(job)], expected_version=0)
    batch = [assigned(job, n) for n in range(1, count + 1)]
    ids = [uuid7() for _ in batch]
    first = await event_log.append("job", job, batch, expected_version=1 and await event_log.version("job", job),
                                   event_ids=ids)
    # The acknowledgement was "lost": the caller sends the very same append again.
    again = await event_log.append("job", job, batch, expected_version=first.last_seq - count, event_ids=ids)
    assert again.duplicate and again.last_seq == first.last_seq
    events, _ = await event_log.load("job", job)
    assert len(events) == 1 + count


async def test_append_spanning_aggregates_is_atomic(event_log: JetStreamLog) -> None:
    from eventstore.log import PendingAppend

    a, b = new_id(), new_id()
    await event_log.append("job", a, [submitted(a)], expected_version=0)
    before = await event_log.last_seq()
    with pytest.raises(ConcurrencyError):
        await event_log.append_batch([PendingAppend("job", b, [submitted(b)], 0),
                                      PendingAppend("job", a, [assigned(a)], 0)])  # a is at version 1, not 0
    assert await event_log.last_seq() == before
    assert await event_log.load("job", b) == ([], 0)


async def test_bad_appends_are_refused_and_change_nothing(event_log: JetStreamLog) -> None:
    job = new_id()
    before = await event_log.last_seq()
    with pytest.raises(EventTooLarge, match="bytes"):
        await event_log.append("job", job, [submitted(job, params={"blob": "x" * 2_000_000})])
    with pytest.raises(ValueError, match="does not belong"):
        await event_log.append("job", job, [submitted(new_id())])
    with pytest.raises(ValueError, match="at least one event"):
        await event_log.append("job", job, [])
    assert await event_log.last_seq() == before


async def test_append_without_streams_explains(nc) -> None:
    log = JetStreamLog(nc, Topology(prefix="nostreamhere"), timeout=1, retries=0)
    job = new_id()
    with pytest.raises(AppendError, match="ensure_streams"):
        await log.append("job", job, [submitted(job)])


async def test_unreachable_nats_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(NatsUnavailable, match=f"cannot reach NATS at nats://127.0.0.1:{port}.*stoker up"):
        await connect(f"nats://127.0.0.1:{port}", "test", timeout=0.5, reconnect=False)


async def test_subscribe_follows_live(event_log: JetStreamLog) -> None:
    job = new_id()
    await event_log.append("job", job, [submitted(job)], expected_version=0)
    seen: list[str] = []

    async def follow() -> None:
        async for stored in event_log.subscribe(1, filter_subject=event_log.topology.events("job", job)):
            seen.append(stored.type)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await event_log.append("job", job, [assigned(job)])
    await event_log.append("job", job, [assigned(job, 2)])
    await asyncio.wait_for(task, 10)
    assert seen == ["JobSubmitted", "JobAssigned", "JobAssigned"]


async def test_server_restart_loses_nothing_acknowledged(tmp_path) -> None:
    server = start_node(tmp_path, "restart")
    await server.wait_healthy()
    nc = await connect(server.url, "test")
    log = JetStreamLog(nc, Topology("restart"))
    await log.ensure_streams()
    jobs = [new_id() for _ in range(50)]
    for job in jobs:
        await log.append("job", job, [submitted(job), assigned(job)], expected_version=0)
    acknowledged = await log.last_seq()
    await nc.close()
    server.kill()  # SIGKILL: no chance to flush anything it had not already written
    server.start_process()
    await server.wait_healthy()
    nc = await connect(server.url, "test")
    try:
        log = JetStreamLog(nc, Topology("restart"))
        stored = [e async for e in log.read()]
        assert len(stored) == acknowledged == 100
        assert [e.aggregate_id for e in stored[::2]] == jobs
    finally:
        await nc.close()
        server.stop()


async def test_append_trace_is_the_parent_of_the_consumer_span(event_log: JetStreamLog) -> None:
    exporter = InMemorySpanExporter()
    provider = observability.configure_tracing("test", "off", extra=exporter)
    tracer = provider.get_tracer("test")
    try:
        job = new_id()
        with tracer.start_as_current_span("submit"):
            await event_log.append("job", job, [submitted(job)], expected_version=0)
        events, _ = await event_log.load("job", job)
        assert "traceparent" in events[0].headers
        with observability.consumer_span("handle", events[0].headers):
            pass
        spans = {s.name: s for s in exporter.get_finished_spans()}
        append, handle = spans["stoker.append"], spans["handle"]
        assert handle.parent is not None and handle.parent.span_id == append.context.span_id
        assert handle.context.trace_id == spans["submit"].context.trace_id
    finally:
        observability._tracing["on"] = False
        trace.get_tracer_provider().shutdown()


@pytest.mark.slow
async def test_three_node_cluster_survives_a_killed_node(tmp_path) -> None:
    servers = await start_cluster(tmp_path, 3, name="t3")
    nc = await connect(",".join(s.url for s in servers[1:]), "test")
    try:
        log = JetStreamLog(nc, Topology("cluster"), timeout=3, retries=10)
        await log.ensure_streams(replicas=3)
        acknowledged: list[str] = []
        for index in range(60):
            job = new_id()
            await log.append("job", job, [submitted(job)], expected_version=0)
            acknowledged.append(job)
            if index == 20:
                servers[0].kill()
        stored = [e.aggregate_id async for e in log.read()]
        assert stored == acknowledged
    finally:
        await nc.close()
        for server in servers:
            server.stop()
