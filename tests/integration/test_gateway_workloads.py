"""Contract tests of GET /api/v1/workloads and of submissions checked against the parameters a workload declares.

A protocol-level worker offers the real schemas of the bundled workloads (msgspec.json.schema of their
Structs), as a real worker does once it has described them; the real scheduler checks every submission.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest
import pytest_asyncio

from contracts.commands import JobAccepted, SubmitJob
from contracts.errors import InvalidParams
from eventstore.micro import call
from services.trainer.workloads.basic import NoopParams
from services.trainer.workloads.game2048.params import EvalParams, TrainParams
from tests.integration.control_plane import assignment_of
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import assert_error, gateway_stack, publish_progress, run_job
from tests.integration.test_gateway_runs import assert_shape

SCHEMAS = {"2048": msgspec.json.schema(TrainParams), "2048-eval": msgspec.json.schema(EvalParams),
           "noop": msgspec.json.schema(NoopParams)}
OFFERED = ("2048", "2048-eval", "noop", "sleep")  # sleep: offered without declared parameters
# The earlier API's sample names that mean the same for 2048 (docs/api-compat.md).
SPEC_PARAMS = {"learning_rate": 0.0005, "gamma": 0.99, "batch_size": 32}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway, the real scheduler and discovery, and a worker offering the bundled workloads' schemas."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        # As `stack.worker()` (w1), so the helpers that run jobs use this one.
        running._worker = await running.plane.worker("w1", slots=4, workloads=OFFERED, workload_params=SCHEMAS)
        await running.projected()
        yield running


async def test_workloads_lists_every_offered_workload_with_its_parameter_schema(stack) -> None:
    async with stack.client("viewer") as client:
        reply = await client.get("/api/v1/workloads")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert_shape(body, {"workloads": list, "total": int})
    by_name = {w["name"]: w for w in body["workloads"]}
    assert sorted(by_name) == sorted(OFFERED) and body["total"] == len(OFFERED)
    train = by_name["2048"]
    assert_shape(train, {"name": str, "workers": list, "healthy_workers": int, "declares_params": bool,
                         "params": list, "params_schema": dict, "evaluation_of": str}, nullable=("evaluation_of",))
    assert train["workers"] == ["w1"] and train["healthy_workers"] == 1 and train["declares_params"] is True
    assert train["params_schema"] == SCHEMAS["2048"]
    params = {p["name"]: p for p in train["params"]}
    assert set(SPEC_PARAMS) <= params.keys() and "lr" not in params  # the specification's names
    assert params["learning_rate"] == {"name": "learning_rate", "type": "number", "default": 0.0005,
                                       "description": "Adam step size", "maximum": 1, "exclusiveMinimum": 0}
    assert params["batch_size"]["type"] == "integer" and "minibatch" in params["batch_size"]["description"]
    assert by_name["2048-eval"]["evaluation_of"] == "2048"
    assert {"episode_time", "visualize"} <= {p["name"] for p in by_name["2048-eval"]["params"]}
    assert by_name["sleep"]["declares_params"] is False and by_name["sleep"]["params"] == []


async def test_the_specs_sample_params_are_accepted_for_2048(stack) -> None:
    async with stack.client("operator") as client:
        started = await client.post("/api/v1/training/start", json={"max_iterations": 10, "params": SPEC_PARAMS})
        assert started.status_code == 202, started.text
        assert started.json()["params"] == SPEC_PARAMS
        job = (await client.get(f"/api/v1/jobs/{started.json()['training_id']}")).json()
        assert job["params_version"] == 1  # named as the workload declares them (old jobs: 0)


async def test_an_unknown_parameter_is_a_400_naming_it_and_the_known_ones(stack) -> None:
    async with stack.client("operator") as client:
        reply = await client.post("/api/v1/training/start",
                                  json={"max_iterations": 10, "params": {"learnign_rate": 0.1, "gamma": 0.9}})
        assert_error(reply, 400, "unknown parameter 'learnign_rate'", "workload '2048'", "known parameters",
                     "learning_rate", "batch_size", "boards", "strict_params")
        assert "'gamma'" not in reply.json()["detail"].split("(known")[0]  # the good one is not blamed
        # The old name is refused for a new submission too: the reply says what it is called now.
        assert_error(await client.post("/api/v1/training/start", json={"max_iterations": 10, "params": {"lr": 1e-3}}),
                     400, "unknown parameter 'lr'", "learning_rate")
        # An evaluation is checked against what it runs: 2048-eval.
        assert_error(await client.post("/api/v1/jobs", json={"kind": "eval", "workload": "2048", "episodes": 2,
                                                             "checkpoint_of": "nope", "params": {"speed": 2}}),
                     400)
        assert_error(await client.post("/api/v1/jobs", json={"workload": "noop", "params": {"checkpoint_evry": 2}}),
                     400, "unknown parameter 'checkpoint_evry'", "workload 'noop'", "checkpoint_every")


async def test_an_ill_typed_parameter_is_a_400_naming_it(stack) -> None:
    async with stack.client("operator") as client:
        for params, words in (({"learning_rate": "fast"}, ("'learning_rate'", "must be a number", "'fast'")),
                              ({"batch_size": 2.5}, ("'batch_size'", "must be an integer")),
                              ({"gamma": 1.5}, ("'gamma'", "must be <= 1")),
                              ({"boards": True}, ("'boards'", "must be an integer", "boolean"))):
            reply = await client.post("/api/v1/training/start", json={"max_iterations": 10, "params": params})
            assert_error(reply, 400, *words, "known parameters")


async def test_strict_params_false_passes_them_unchecked(stack) -> None:
    async with stack.client("operator") as client:
        loose = {"max_iterations": 10, "params": {"learnign_rate": 0.1, "gamma": "high"}, "strict_params": False}
        started = await client.post("/api/v1/training/start", json=loose)
        assert started.status_code == 202, started.text
        assert started.json()["params"] == loose["params"]
        assert (await client.post("/api/v1/jobs", json={"workload": "noop", "params": {"x": 1},
                                                        "strict_params": False})).status_code == 201
        # A switch means only true or false (not 0, "false"): 400.
        for value in (0, "false", None):
            assert_error(await client.post("/api/v1/training/start", json={**loose, "strict_params": value}), 400,
                         "strict_params")


async def test_workloads_that_declare_nothing_or_no_schema_offered_are_not_checked(stack) -> None:
    async with stack.client("operator") as client:
        reply = await client.post("/api/v1/jobs", json={"workload": "sleep", "params": {"anything": [1, 2]}})
        assert reply.status_code == 201, reply.text


async def test_a_cli_submission_over_nats_is_checked_by_the_same_rule(stack) -> None:
    # `stoker submit` sends SubmitJob to the scheduler as this does: the scheduler is the one place params are checked.
    with pytest.raises(InvalidParams, match=r"unknown parameter 'lrate'.*known parameters: .*learning_rate"):
        await call(stack.nc, stack.topology, SubmitJob(workload="2048", max_iterations=5, params={"lrate": 1}),
                   JobAccepted)
    accepted = await call(stack.nc, stack.topology, SubmitJob(workload="2048", max_iterations=5, params={"lrate": 1},
                                                              strict_params=False), JobAccepted)
    assert accepted.created


async def test_job_rows_carry_the_newest_progress_of_running_jobs(stack) -> None:
    worker = await stack.worker()
    async with stack.client("operator") as client:
        running = (await client.post("/api/v1/jobs", json={"workload": "noop", "max_iterations": 10})).json()["id"]
        queued_row_before = (await client.get("/api/v1/jobs")).json()["items"][0]
        assert queued_row_before["progress"] is None
        assignment = await worker.next_assignment()
        assert assignment.job_id == running
        assert (await worker.report_started(assignment)).accepted
        await publish_progress(stack.nc, stack.topology, running, range(1, 5), total=10)

        async def running_row() -> dict | None:  # the list's cache follows the projector's checkpoint a poll later
            rows = {r["id"]: r for r in (await client.get("/api/v1/jobs")).json()["items"]}
            return rows[running] if rows[running]["status"] == "running" else None

        progress = (await eventually(running_row, what="the row shows the job running"))["progress"]
        assert_shape(progress, {"iteration": int, "total": int, "progress_percent": float, "loss": float, "at": str})
        assert (progress["iteration"], progress["total"], progress["progress_percent"]) == (4, 10, 40.0)
        # The same on the one job's view; and a page served from the cache still gets the newest.
        await publish_progress(stack.nc, stack.topology, running, range(5, 7), total=10)
        assert (await client.get(f"/api/v1/jobs/{running}")).json()["progress"]["iteration"] == 6
        assert {r["id"]: r for r in (await client.get("/api/v1/jobs")).json()["items"]}[running][
            "progress"]["iteration"] == 6


async def cli(stack, url: str, tmp_path, *args: str):
    """`stoker …` against the stack's NATS and read models (the CLI runs its own event loop: in a thread)."""
    from click.testing import CliRunner

    from ops.cli import main

    base = ["--data-dir", str(tmp_path), "--nats", url]
    env = {"STOKER_PREFIX": stack.topology.prefix}
    return await asyncio.to_thread(CliRunner().invoke, main, [*base, *args], env=env)


async def test_the_cli_lists_workloads_refuses_bad_params_and_evaluates_a_named_checkpoint(stack, nats_server,
                                                                                          tmp_path) -> None:
    listed = await cli(stack, nats_server.url, tmp_path, "workloads", "2048")
    assert listed.exit_code == 0, listed.output
    assert "learning_rate" in listed.output and "Adam step size" in listed.output and "noop" not in listed.output
    refused = await cli(stack, nats_server.url, tmp_path, "submit", "train", "2048", "--iterations", "5",
                        "--param", "lr=0.1")
    assert refused.exit_code == 1 and "unknown parameter 'lr'" in refused.output and "learning_rate" in refused.output
    loose = await cli(stack, nats_server.url, tmp_path, "submit", "train", "2048", "--iterations", "5",
                      "--param", "lr=0.1", "--no-strict-params")
    assert loose.exit_code == 0, loose.output

    trained = await run_job(stack)  # checkpointed at iteration 5 by the protocol-level worker
    name = f"{trained}/1-5"
    evaluated = await cli(stack, nats_server.url, tmp_path, "--json", "submit", "eval", "2048", "--checkpoint", name,
                          "--episodes", "2")
    assert evaluated.exit_code == 0, evaluated.output
    job_id = json.loads(evaluated.output)["job_id"]
    assignment = await assignment_of(stack._worker, job_id)
    assert [c.name for c in assignment.checkpoints] == [name] and assignment.checkpoint_of == trained
    missing = await cli(stack, nats_server.url, tmp_path, "submit", "eval", "2048", "--checkpoint",
                        f"{trained}/1-6", "--episodes", "2")
    assert missing.exit_code == 1 and "no stored checkpoint" in missing.output and name in missing.output
