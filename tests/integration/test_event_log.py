"""The event log on a real nats-server: missing streams, restarts, traces, a 3-node cluster.

What both event logs promise (versions, dedup, atomic batches, bad input) is in test_event_log_contract.py.
"""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import events as ev
from contracts.base import new_id, utcnow
from contracts.subjects import Topology
from eventstore import observability
from eventstore.connect import NatsUnavailable, connect
from eventstore.log import AppendError, JetStreamLog
from eventstore.server import free_port, start_cluster
from tests.conftest import start_node


def submitted(job_id: str, **extra) -> ev.JobSubmitted:
    return ev.JobSubmitted(job_id=job_id, kind="train", workload="noop", submitted_at=utcnow(), **extra)


def assigned(job_id: str, attempt: int = 1) -> ev.JobAssigned:
    return ev.JobAssigned(job_id=job_id, attempt=attempt, worker_id="w1", assigned_at=utcnow())


async def test_append_without_streams_explains(nc) -> None:
    log = JetStreamLog(nc, Topology(prefix="nostreamhere"), timeout=1, retries=0)
    job = new_id()
    with pytest.raises(AppendError, match="ensure_streams"):
        await log.append("job", job, [submitted(job)])


async def test_unreachable_nats_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(NatsUnavailable, match=f"cannot reach NATS at nats://127.0.0.1:{port}.*stoker up"):
        await connect(f"nats://127.0.0.1:{port}", "test", timeout=0.5, reconnect=False)


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


async def test_a_long_log_is_read_whole_and_in_order_through_flow_control(event_log: JetStreamLog) -> None:
    # 3,000 messages of 16 KiB: far more than the server sends an ordered consumer before it asks for a
    # flow-control reply, so a reader that takes what arrived in bulk must still answer it, or stall.
    nc, count, payload = event_log.nc, 3000, b"x" * 16_384
    first = await event_log.last_seq() + 1
    subject = event_log.topology.events("job", new_id())
    for index in range(count):
        await nc.publish(subject, payload + str(index).encode())
    await nc.flush()
    for _ in range(600):  # stored without acknowledgements: wait (bounded) until the stream holds them all
        if await event_log.last_seq() >= first + count - 1:
            break
        await asyncio.sleep(0.05)
    seen: list[int] = []

    async def read() -> None:
        async for msg in event_log.read_raw(first, filter_subject=subject):
            seen.append(msg.metadata.sequence.stream)
            assert msg.data == payload + str(len(seen) - 1).encode()

    await asyncio.wait_for(read(), 120)
    assert seen == list(range(first, first + count))
