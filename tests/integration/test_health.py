"""Health tells the truth: the projector's liveness and read-model lag count; passed-over events are reported."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

from eventstore.config import CommonSettings
from eventstore.connect import connect
from eventstore.log import JetStreamLog
from eventstore.service import ServiceContext
from services.projector.__main__ import main as projector_main
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import gateway_stack, run_job
from tests.integration.test_dead_letters import publish_oversized_registration

NO_PROJECTOR = ("scheduler", "discovery")  # lag tests: the projector's liveness is not what they look at


@asynccontextmanager
async def real_projector(nats_url: str, topology, data_dir):
    """`services.projector`'s main on this loop, with its own connection, stopped the way SIGTERM stops it."""
    nc = await connect(nats_url, "test-projector")
    stop = asyncio.Event()
    ctx = ServiceContext("projector", CommonSettings(data_dir=str(data_dir), prefix=topology.prefix), nc,
                         JetStreamLog(nc, topology), stop)
    task = asyncio.create_task(projector_main(ctx))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await nc.close()


async def health(stack) -> tuple[int, dict]:
    async with stack.client(None) as client:
        reply = await client.get("/api/v1/health")
    return reply.status_code, reply.json()


async def test_health_is_503_while_the_projector_is_stopped(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, projector=False) as stack:
        async with real_projector(nats_server.url, topology, tmp_path):
            async def fine():
                code, body = await health(stack)
                return code == 200 and body
            body = await eventually(fine, what="health ok with the projector running")
            assert body["state"] == "ok" and body["problems"] == []
            assert next(s for s in body["services"] if s["name"] == "projector")["up"]
        await run_job(stack)  # the projector is gone: these wait
        code, body = await health(stack)
    assert code == 503 and body["state"] == "degraded"
    assert not next(s for s in body["services"] if s["name"] == "projector")["up"]
    assert "projector is not answering" in body["problems"]


async def test_health_is_503_when_a_read_model_is_too_many_events_behind(nats_server, nc, topology,
                                                                         tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, projector=False,
                             required_services=NO_PROJECTOR, max_projection_lag=5,
                             max_projection_behind_s=3600) as stack:
        code, body = await health(stack)
        assert code == 200, body  # three token events behind: within 5
        await run_job(stack)  # w1's registration and the job's five events
        code, body = await health(stack)
    assert code == 503 and body["state"] == "degraded"
    assert {p["name"]: p["lag"] for p in body["projections"]} == {"jobs": 9, "workers": 9, "maps": 9, "alerts": 9}
    assert any("jobs is 9 events behind (more than 5)" in p for p in body["problems"])


async def test_health_is_503_when_a_read_model_has_not_moved_for_too_long(nats_server, nc, topology,
                                                                          tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, projector=False,
                             required_services=NO_PROJECTOR, max_projection_behind_s=0.2) as stack:
        async def stale():
            code, body = await health(stack)
            return code == 503 and body
        body = await eventually(stale, what="health 503 for a read model that does not move")
        assert any("has not applied event 1 for" in p for p in body["problems"])
        assert all(p["behind_s"] > 0.2 for p in body["projections"])
        # The projector starts and catches up: health is fine again.
        async with real_projector(nats_server.url, topology, tmp_path):
            async def fine():
                code, body = await health(stack)
                return code == 200 and body
            body = await eventually(fine, what="health ok once caught up")
    assert all(p["lag"] == 0 and p["behind_s"] is None for p in body["projections"])


async def test_health_counts_malformed_and_quarantined_events(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as stack:
        await nc.jetstream().publish(topology.events("job", "junk"), b"garbage")
        await publish_oversized_registration(nc, topology, "huge")
        await run_job(stack)
        await stack.projected()
        code, body = await health(stack)
    assert code == 200 and body["state"] == "ok"  # history passed over, not a part that is down
    assert body["malformed"] == 2 and body["dead_letters"] == 0
    assert {p["name"]: p["malformed"] for p in body["projections"]} == {"jobs": 2, "workers": 2, "maps": 2,
                                                                        "alerts": 2}
    assert any("2 malformed message(s)" in w for w in body["warnings"])
