"""Contract tests of workers, health, the admin event feed and tokens on a real gateway."""

from __future__ import annotations

import pytest
import pytest_asyncio

from contracts.base import utcnow
from contracts.codec import encode
from contracts.events import MAX_SLOTS
from contracts.telemetry import WorkerHeartbeat
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import assert_error, gateway_stack, run_job

CAPS = {"hostname": "box", "cpu_cores": 4, "ram_mb": 2048, "gpus": [{"index": 0, "name": "T4", "memory_mb": 16000}]}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a projector and the real scheduler and discovery."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def test_register_list_and_show_workers(stack) -> None:
    async with stack.client("operator") as client:
        for _ in range(2):  # registering again is fine
            reply = await client.post("/api/v1/workers/register", json={"worker_id": "box", "capabilities": CAPS})
            assert reply.status_code == 200 and reply.json()["worker_id"] == "box"
        job = (await client.post("/api/v1/jobs", json={"workload": "noop"})).json()["id"]
        await eventually(lambda: assigned(stack, job), what="the job placed on box")  # box's only slot
        beat = WorkerHeartbeat(worker_id="box", running=(job,), free_slots=0, cpu_percent=50.0, at=utcnow())
        await stack.nc.jetstream().publish(stack.topology.telemetry("heartbeat", "box"), encode(beat))
        await stack.projected()
        workers = (await client.get("/api/v1/workers")).json()["items"]
        assert [w["id"] for w in workers] == ["box"]
        worker = (await client.get("/api/v1/workers/box")).json()
    assert worker["status"] == "healthy" and worker["gpus"][0]["name"] == "T4"
    assert worker["running_jobs"] == [job] and worker["last_seen"] is not None and worker["cpu_percent"] == 50.0


async def assigned(stack, job_id: str) -> bool:
    """Whether the scheduler has placed the job on box."""
    stored, _ = await stack.log.load("job", job_id)
    return any(getattr(s.event, "worker_id", None) == "box" for s in stored)


@pytest.mark.parametrize("body", [{"worker_id": "w1"}, {"capabilities": CAPS},
                                  {"worker_id": "w 1", "capabilities": CAPS},
                                  {"worker_id": "w1", "capabilities": {**CAPS, "cpu_cores": 0}},
                                  {"worker_id": "w1", "capabilities": {**CAPS, "labels": [""]}},
                                  {"worker_id": "w1", "capabilities": {**CAPS, "gpus": CAPS["gpus"] * 2}}])
async def test_register_rejects_bad_input(stack, body) -> None:
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/workers/register", json=body), 400)


async def test_unknown_worker_is_404(stack) -> None:
    async with stack.client("viewer") as client:
        assert_error(await client.get("/api/v1/workers/nobody"), 404)


async def test_health_is_200_when_everything_answers(stack) -> None:
    async with stack.client(None) as client:
        health = await client.get("/api/v1/health")
    body = health.json()
    assert health.status_code == 200 and body["state"] == "ok"
    assert {s["name"] for s in body["services"] if s["up"]} >= {"scheduler", "discovery"}
    assert {p["name"] for p in body["projections"]} == {"jobs", "workers", "maps", "alerts"}
    assert body["nats"]["connected"] and body["store"]["ok"] and all(s["ok"] for s in body["streams"])
    # The earlier API's fields, beside stoker's.
    assert body["status"] == "healthy" and body["version"] and isinstance(body["timestamp"], str)
    assert body["database"] == "connected" and body["storage"] == "available"
    assert body["workers"] == {"count": 0, "status": "none"}  # nobody registered a worker here


async def test_health_is_503_when_a_required_service_is_silent(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False) as stack:
        async with stack.client(None) as client:
            health = await client.get("/api/v1/health")
    assert health.status_code == 503 and health.json()["state"] == "degraded"
    assert health.json()["status"] == "unhealthy"
    assert not next(s for s in health.json()["services"] if s["name"] == "scheduler")["up"]


async def test_event_feed_pages_through_the_log(stack) -> None:
    await run_job(stack)
    last = await stack.log.last_seq()
    async with stack.client("admin") as client:
        first = (await client.get("/api/v1/events", params={"since": 0, "limit": 3})).json()
        assert [e["seq"] for e in first["events"]] == [1, 2, 3] and first["next_since"] == 3
        rest = (await client.get("/api/v1/events", params={"since": first["next_since"], "limit": 1000})).json()
        assert rest["events"][-1]["seq"] == last and rest["last_seq"] == last
        assert {e["type"] for e in rest["events"]} >= {"JobSubmitted", "JobCompleted"}
        beyond = (await client.get("/api/v1/events", params={"since": 10**9})).json()
        assert beyond["events"] == [] and beyond["next_since"] == 10**9
        for params in ({"since": -1}, {"limit": 0}, {"limit": 5000}, {"since": "x"}):
            assert_error(await client.get("/api/v1/events", params=params), 400)


async def test_tokens_issue_list_revoke(stack) -> None:
    async with stack.client("admin") as admin:
        created = await admin.post("/api/v1/tokens", json={"role": "viewer", "name": "dash"})
        assert created.status_code == 201
        token = created.json()
        listed = (await admin.get("/api/v1/tokens")).json()["items"]
        assert any(t["token_id"] == token["token_id"] and t["active"] for t in listed)
        assert all("token" not in t for t in listed)
        async with stack.client(token=token["token"]) as viewer:
            assert (await viewer.get("/api/v1/jobs")).status_code == 200
            revoked = await admin.post(f"/api/v1/tokens/{token['token_id']}/revoke")
            assert revoked.status_code == 200 and revoked.json()["active"] is False
            assert_error(await viewer.get("/api/v1/jobs"), 401, "revoked")
        assert (await admin.post(f"/api/v1/tokens/{token['token_id']}/revoke")).status_code == 200
        assert_error(await admin.post("/api/v1/tokens/01NOSUCH/revoke"), 404)
        for body in ({"role": "root"}, {}, {"role": "viewer", "expires_in_s": -5}, {"role": "viewer", "name": 7}):
            assert_error(await admin.post("/api/v1/tokens", json=body), 400)


async def test_an_expired_token_is_refused(stack) -> None:
    async with stack.client("admin") as admin:
        token = (await admin.post("/api/v1/tokens", json={"role": "viewer", "expires_in_s": 0.001})).json()
    async with stack.client(token=token["token"]) as viewer:
        assert_error(await viewer.get("/api/v1/jobs"), 401, "expired")


async def test_schema_is_public_and_complete(stack) -> None:
    async with stack.client(None) as client:
        schema = (await client.get("/schema/openapi.json")).json()
        assert (await client.get("/schema")).status_code == 200
    paths = schema["paths"]
    for path in ("/api/v1/jobs", "/api/v1/training/start", "/api/v1/testing/{test_id}/results",
                 "/api/v1/workers/register", "/api/v1/health", "/api/v1/events", "/api/v1/tokens"):
        assert path in paths
    assert schema["components"]["schemas"]["SubmitJobBody"]["additionalProperties"] is False
    # As the services decide: discovery takes at most MAX_SLOTS slots; a finished job cannot be stopped.
    assert schema["components"]["schemas"]["WorkerCapabilities"]["properties"]["slots"]["maximum"] == MAX_SLOTS
    for path in ("/api/v1/jobs/{job_id}/stop", "/api/v1/training/stop", "/api/v1/testing/stop"):
        assert "409" in paths[path]["post"]["responses"], path
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    assert paths["/api/v1/health"]["get"]["security"] == []


async def test_tokens_me_tells_the_caller_its_own_role_and_expiry(stack) -> None:
    async with stack.client("admin") as admin:
        made = (await admin.post("/api/v1/tokens", json={"role": "viewer", "name": "tv", "expires_in_s": 3600})).json()
    async with stack.client(None, token=made["token"]) as client:
        me = (await client.get("/api/v1/tokens/me")).json()
    assert (me["token_id"], me["role"], me["name"], me["active"]) == (made["token_id"], "viewer", "tv", True)
    assert me["expires_at"] is not None and me["revoked_at"] is None
    async with stack.client("operator") as client:
        assert (await client.get("/api/v1/tokens/me")).json()["role"] == "operator"
    async with stack.client(None) as client:
        assert_error(await client.get("/api/v1/tokens/me"), 401)
