"""An integer too large for the read models is refused at the edge (HTTP 400, a typed NATS error)."""

from __future__ import annotations

import msgspec
import pytest_asyncio

from contracts.commands import CommandError
from tests.integration.gateway_support import assert_error, gateway_stack

CAPS = {"hostname": "box", "cpu_cores": 4, "ram_mb": 2048}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a projector and the real scheduler and discovery."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def test_an_oversized_integer_over_http_is_a_400_naming_the_field(stack) -> None:
    async with stack.client("operator") as client:
        for field, value in (("cpu_cores", 10**34), ("ram_mb", 2**53), ("slots", 2**31), ("slots", 1025)):
            body = {"worker_id": "w1", "capabilities": {**CAPS, field: value}}
            assert_error(await client.post("/api/v1/workers/register", json=body), 400, field)
        gpus = [{"index": 0, "name": "T4", "memory_mb": 10**30}]
        assert_error(await client.post("/api/v1/workers/register",
                                       json={"worker_id": "w1", "capabilities": {**CAPS, "gpus": gpus}}),
                     400, "memory_mb")
        assert_error(await client.post("/api/v1/jobs", json={"workload": "noop", "max_iterations": 10**30}),
                     400, "max_iterations")
        ok = await client.post("/api/v1/workers/register", json={"worker_id": "w1", "capabilities": CAPS})
        assert ok.status_code == 200
    assert await stack.log.last_seq() == ok.json()["seq"]  # nothing oversized reached the log


async def test_an_oversized_integer_over_nats_is_a_typed_400(stack) -> None:
    subject = stack.topology.command("scheduler", "submit")
    before = await stack.log.last_seq()
    body = msgspec.json.encode({"type": "SubmitJob", "workload": "noop", "max_iterations": 10**30})
    reply = await stack.nc.request(subject, body, timeout=5)
    error = msgspec.json.decode(reply.data, type=CommandError)
    assert (error.code, error.error) == (400, "invalid") and "max_iterations" in error.message
    assert await stack.log.last_seq() == before
