"""The auth matrix: every route by no token, a bad token and each role; the brake on bad tokens; CORS."""

from __future__ import annotations

import json

import httpx
import pytest
import pytest_asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.tokens import role_allows
from tests.integration.gateway_support import ROLES, assert_error, gateway_stack, run_job

# (method, path, role it needs: None = public). Every route of the API must be here.
ROUTES = [
    ("GET", "/api/v1/jobs", "viewer"), ("POST", "/api/v1/jobs", "operator"),
    ("GET", "/api/v1/jobs/{job}", "viewer"), ("POST", "/api/v1/jobs/{job}/stop", "operator"),
    ("GET", "/api/v1/jobs/{job}/events", "viewer"), ("GET", "/api/v1/jobs/{job}/progress", "viewer"),
    ("GET", "/api/v1/jobs/{job}/checkpoints", "viewer"), ("GET", "/api/v1/jobs/{job}/episodes", "viewer"),
    ("POST", "/api/v1/training/start", "operator"), ("POST", "/api/v1/training/stop", "operator"),
    ("GET", "/api/v1/training/{job}/status", "viewer"), ("GET", "/api/v1/training/{job}/logs", "viewer"),
    ("POST", "/api/v1/testing/start", "operator"), ("POST", "/api/v1/testing/stop", "operator"),
    ("GET", "/api/v1/testing/{test}/status", "viewer"), ("GET", "/api/v1/testing/{test}/results", "viewer"),
    ("GET", "/api/v1/testing/{test}/logs", "viewer"),
    ("GET", "/api/v1/workers", "viewer"), ("GET", "/api/v1/workers/{worker}", "viewer"),
    ("POST", "/api/v1/workers/register", "operator"),
    ("GET", "/api/v1/health", None), ("GET", "/api/v1/events", "admin"),
    ("GET", "/api/v1/tokens", "admin"), ("POST", "/api/v1/tokens", "admin"),
    ("POST", "/api/v1/tokens/{token}/revoke", "admin"), ("GET", "/api/v1/tokens/me", "viewer"),
    ("POST", "/api/v1/maps/upload", "operator"), ("GET", "/api/v1/maps", "viewer"),
    ("GET", "/api/v1/maps/{map}", "viewer"), ("GET", "/api/v1/maps/{map}/file", "viewer"),
    ("DELETE", "/api/v1/maps/{map}", "operator"),
    ("GET", "/api/v1/hosts", "viewer"), ("GET", "/api/v1/alerts", "viewer"),
    ("GET", "/api/v1/network/qr", "viewer"), ("GET", "/api/v1/workloads", "viewer"),
]
BODIES = {"/api/v1/jobs": {"workload": "noop"}, "/api/v1/training/start": {"max_iterations": 3},
          "/api/v1/testing/start": {"checkpoint": "{job}", "episodes": 1},
          "/api/v1/workers/register": {"worker_id": "w1", "capabilities": {"hostname": "h", "cpu_cores": 1,
                                                                          "ram_mb": 1}},
          "/api/v1/tokens": {"role": "viewer"}}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a projector and the real scheduler and discovery."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


def fill(template: str, ids: dict[str, str]) -> str:
    """A route template with real ids."""
    for name, value in ids.items():
        template = template.replace("{" + name + "}", value)
    return template


async def call(client: httpx.AsyncClient, method: str, path: str, ids: dict[str, str]) -> httpx.Response:
    """One request of the matrix, with a valid body where the route takes one."""
    body = BODIES.get(path)
    url = fill(path, ids) + ("?episode_num=1" if path.endswith("/logs") and "testing" in path else "")
    if body is not None:
        body = json.loads(fill(json.dumps(body), ids))
    return await client.request(method, url, json=body)


async def test_every_route_is_in_the_matrix(stack) -> None:
    async with stack.client(None) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    documented = {(m.upper(), p) for p, item in schema["paths"].items() for m in item}
    listed = {(m, p.replace("{job}", "{job_id}").replace("{worker}", "{worker_id}").replace("{token}", "{token_id}")
               .replace("{map}", "{map_id}")) for m, p, _r in ROUTES}
    listed = {(m, p.replace("/training/{job_id}", "/training/{training_id}").replace("{test}", "{test_id}"))
              for m, p in listed}
    assert documented == listed


async def test_matrix(stack) -> None:
    train = await run_job(stack)
    test = await run_job(stack, kind="eval", checkpoint_of=train)
    await stack.projected()
    async with stack.client("admin") as admin:
        spare = (await admin.post("/api/v1/tokens", json={"role": "viewer"})).json()["token_id"]
    ids = {"job": train, "test": test, "worker": "w1", "token": spare, "map": "1"}
    failures = []
    for method, path, needed in ROUTES:
        for who in (None, "bad", *ROLES):
            async with stack.client(None if who == "bad" else who, token="stk_bad" if who == "bad" else None) as c:
                status = (await call(c, method, path, ids)).status_code
            if needed is None:
                expected_ok = True
            elif who in (None, "bad"):
                expected_ok = status == 401
            elif not role_allows(who, needed):
                expected_ok = status == 403
            else:
                expected_ok = status not in (401, 403) and status < 500
            if not expected_ok:
                failures.append(f"{method} {path} as {who}: {status}")
    assert not failures, failures


async def test_repeated_bad_tokens_from_one_address_are_slowed_down(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, auth_max_failures=3) as stack:
        async with stack.client(token="stk_guess") as guesser:
            for _ in range(3):
                assert_error(await guesser.get("/api/v1/jobs"), 401)
            blocked = await guesser.get("/api/v1/jobs")
        assert_error(blocked, 429, "too many")
        assert int(blocked.headers["Retry-After"]) > 0
        async with connect(stack.ws_url) as socket:  # a bad token on the socket is braked too
            await socket.send(json.dumps({"type": "auth", "token": "stk_guess"}))
            with pytest.raises(ConnectionClosed):
                await socket.recv()
            assert socket.close_code == 4429
        async with stack.client(None) as anonymous:  # no token is no guess: a plain 401, not braked
            assert_error(await anonymous.get("/api/v1/jobs"), 401)


async def test_bad_tokens_never_lock_out_a_valid_token(nats_server, nc, topology, tmp_path) -> None:
    # Every local client is 127.0.0.1: a local process sending bad tokens must not lock the dashboard out.
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, auth_max_failures=10) as stack:
        async with stack.client(token="stk_guess") as guesser:
            statuses = [(await guesser.get("/api/v1/jobs")).status_code for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        async with stack.client("admin") as good:
            assert (await good.get("/api/v1/jobs")).status_code == 200
            assert (await good.get("/api/v1/tokens")).status_code == 200
        async with connect(stack.ws_url) as socket:
            await socket.send(json.dumps({"type": "auth", "token": stack.tokens["admin"]}))
            welcome = json.loads(await socket.recv())
            assert welcome["type"] == "welcome" and welcome["role"] == "admin"
        async with stack.client(token="stk_guess") as guesser:  # the guesser is still braked
            assert_error(await guesser.get("/api/v1/jobs"), 429)


async def test_cors_origins_are_configurable(nats_server, nc, topology, tmp_path) -> None:
    origin = "http://dashboard.example"
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, cors_origins=(origin,)) as stack:
        async with stack.client(None) as client:
            preflight = await client.options("/api/v1/jobs", headers={
                "Origin": origin, "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization"})
            other = await client.options("/api/v1/jobs", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "GET"})
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == origin
    assert other.headers.get("access-control-allow-origin") != "http://evil.example"
