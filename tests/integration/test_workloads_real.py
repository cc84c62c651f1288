"""A real worker describes its workloads; the gateway checks a submission against them; a real 2048 evaluation of
a checkpoint chosen by its stored name, its episodes in episode order. Kept tiny: 20 iterations, 4 games."""

from __future__ import annotations

import pytest
import pytest_asyncio

from contracts import events as ev
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import assert_error, gateway_stack
from tests.integration.test_trainer_agent import running_agent

pytestmark = pytest.mark.slow
TINY = {"boards": 8, "batch_size": 16, "hidden": 16, "warmup": 32, "checkpoint_every": 10, "seed": 3}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def finished(client, kind: str, run_id: str, timeout: float = 180.0) -> dict:
    """The run's status once it has ended."""
    async def ended() -> dict | None:
        status = (await client.get(f"/api/v1/{kind}/{run_id}/status")).json()
        return status if status["status"] in {"completed", "failed", "stopped"} else None
    return await eventually(ended, timeout=timeout, what=f"{kind} run {run_id} ended")


async def test_a_described_2048_is_checked_trained_and_evaluated_at_a_named_checkpoint(
        stack, nats_server, topology, tmp_path) -> None:
    pytest.importorskip("torch")
    async with running_agent(nats_server, topology, stack.plane, tmp_path / "state", worker_id="real",
                             describe_workloads=True, warm=False), stack.client("operator") as client:
        async def described() -> dict | None:
            offers = {w["name"]: w for w in (await client.get("/api/v1/workloads")).json()["workloads"]}
            return offers if offers.get("2048", {}).get("declares_params") else None

        offers = await eventually(described, timeout=90, what="the worker's workloads described")
        assert offers["2048-eval"]["declares_params"] and offers["2048"]["workers"] == ["real"]
        await eventually(lambda: stack.plane.board.workers["real"].workload_params, what="the scheduler has them")
        assert_error(await client.post("/api/v1/training/start", json={"max_iterations": 20,
                                                                       "params": {**TINY, "minibatch": 16}}),
                     400, "unknown parameter 'minibatch'", "batch_size")

        started = await client.post("/api/v1/training/start", json={"max_iterations": 20, "params": TINY})
        assert started.status_code == 202, started.text
        training_id = started.json()["training_id"]
        assert (await finished(client, "training", training_id))["status"] == "completed"
        checkpoints = (await client.get(f"/api/v1/jobs/{training_id}/checkpoints")).json()["checkpoints"]
        assert [c["iteration"] for c in checkpoints] == [10, 20]
        chosen = checkpoints[0]["name"]  # not the newest

        assert_error(await client.post("/api/v1/testing/start", json={"checkpoint": f"{training_id}/1-15",
                                                                      "episodes": 2}), 404, "no stored checkpoint")
        body = {"checkpoint": chosen, "episodes": 4, "params": {"parallel": 2, "seed": 1, "visualize": True}}
        test = await client.post("/api/v1/testing/start", json=body)
        assert test.status_code == 202, test.text
        assert test.json()["checkpoint"] == chosen
        test_id = test.json()["test_id"]
        status = await finished(client, "testing", test_id)
        assert status["status"] == "completed", status
        assert status["checkpoint"] == chosen
        events, _ = await stack.log.load("job", test_id)
        started_event = next(e.event for e in events if isinstance(e.event, ev.JobStarted))
        assert started_event.resumed_from == 10  # the chosen checkpoint's iteration, not the newest (20)

        results = (await client.get(f"/api/v1/testing/{test_id}/results")).json()
        assert results["checkpoint"] == chosen
        assert [e["episode_num"] for e in results["episodes"]] == [1, 2, 3, 4]
        assert all(e["moves"] > 0 and e["max_tile"] >= 2 for e in results["episodes"])
        assert results["aggregate_metrics"]["score"]["max"] >= results["aggregate_metrics"]["score"]["min"]
