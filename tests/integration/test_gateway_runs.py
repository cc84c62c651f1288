"""Contract tests of /api/v1/training and /api/v1/testing: the user's earlier API, field for field."""

from __future__ import annotations

import pytest
import pytest_asyncio

from tests.integration.gateway_support import (
    assert_error,
    gateway_stack,
    publish_episodes,
    publish_progress,
    run_job,
)

STATUS_FIELDS = {"training_id", "status", "progress", "latest_metrics", "started_at"}
PROGRESS_FIELDS = {"current_iteration", "max_iterations", "progress_percent", "elapsed_seconds",
                   "estimated_remaining_seconds"}
LOG_FIELDS = {"training_id", "max_iterations", "final_iteration", "started_at", "completed_at", "duration_seconds",
              "iterations", "max_loss", "min_loss", "mean_loss", "final_loss"}


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    """A gateway with a projector and the real scheduler and discovery."""
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


async def test_training_start_status_stop(stack) -> None:
    async with stack.client("operator") as client:
        started = await client.post("/api/v1/training/start", json={"max_iterations": 100, "params": {"lr": 0.01}})
        assert started.status_code == 202
        body = started.json()
        assert {"training_id", "status", "max_iterations", "started_at"} <= body.keys()
        assert body["status"] == "started" and body["state"] == "pending" and body["workload"] == "2048"
        assert body["max_iterations"] == 100 and body["task_id"] == body["training_id"]
        status = (await client.get(f"/api/v1/training/{body['training_id']}/status")).json()
        assert STATUS_FIELDS <= status.keys() and PROGRESS_FIELDS <= status["progress"].keys()
        assert status["latest_metrics"] is None and status["progress"]["current_iteration"] == 0
        stopped = (await client.post("/api/v1/training/stop", json={"training_id": body["training_id"]})).json()
        assert stopped["stopped_count"] == 1 and stopped["training_ids"] == [body["training_id"]]
        assert stopped["message"]
        again = await client.post("/api/v1/training/stop", json={"training_id": body["training_id"]})
        assert_error(again, 409, "already finished", "stopped")  # documented: a finished run cannot stop


async def test_training_stop_without_id_stops_every_training_run_only(stack) -> None:
    async with stack.client("operator") as client:
        trains = [(await client.post("/api/v1/training/start", json={"max_iterations": 5})).json()["training_id"]
                  for _ in range(2)]
        # Nothing to evaluate before a checkpoint: 400 (documented), naming the run.
        assert_error(await client.post("/api/v1/testing/start", json={"checkpoint": trains[0], "episodes": 3}),
                     400, trains[0], "no checkpoint yet")
        trained = await run_job(stack)
        test = (await client.post("/api/v1/testing/start", json={"checkpoint": trained, "episodes": 3})).json()
        stopped = (await client.post("/api/v1/training/stop")).json()
        assert sorted(stopped["training_ids"]) == sorted(trains) and stopped["stopped_count"] == 2
        assert (await client.get(f"/api/v1/testing/{test['test_id']}/status")).json()["status"] == "pending"
        assert (await client.post("/api/v1/testing/stop", json={})).json()["test_ids"] == [test["test_id"]]


async def test_training_status_and_logs_from_telemetry(stack) -> None:
    job = await run_job(stack, finish=False)
    await publish_progress(stack.nc, stack.topology, job, range(1, 5))
    await publish_progress(stack.nc, stack.topology, job, range(3, 5))  # a resumed attempt repeats iterations
    await stack.projected()
    async with stack.client("viewer") as client:
        status = (await client.get(f"/api/v1/training/{job}/status")).json()
        assert status["status"] == "running"
        assert status["progress"]["current_iteration"] == 4 and status["progress"]["progress_percent"] == 40.0
        assert status["progress"]["estimated_remaining_seconds"] is not None
        assert status["latest_metrics"]["iteration"] == 4 and status["latest_metrics"]["loss"] == 0.25
        logs = (await client.get(f"/api/v1/training/{job}/logs")).json()
    assert LOG_FIELDS <= logs.keys()
    assert [i["iteration"] for i in logs["iterations"]] == [1, 2, 3, 4]
    assert logs["max_loss"] == 1.0 and logs["min_loss"] == 0.25 and logs["final_loss"] == 0.25
    assert logs["final_iteration"] == 4 and logs["completed_at"] is None


@pytest.mark.parametrize(("body", "word"), [({}, "max_iterations"), ({"max_iterations": 0}, "max_iterations"),
                                            ({"max_iterations": "ten"}, "max_iterations"),
                                            ({"max_iterations": 10**12}, "max_iterations"),
                                            ({"max_iterations": 5, "workload": "no spaces"}, "workload"),
                                            ({"max_iterations": 5, "params": []}, "params")])
async def test_training_start_rejects_bad_input(stack, body, word) -> None:
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/training/start", json=body), 400, word)


async def test_unknown_or_wrong_kind_runs_are_404(stack) -> None:
    train = await run_job(stack)
    test = await run_job(stack, kind="eval", checkpoint_of=train)
    await stack.projected()
    async with stack.client("operator") as client:
        for path in (f"/api/v1/training/{test}/status", f"/api/v1/training/{test}/logs",
                     f"/api/v1/testing/{train}/status", f"/api/v1/testing/{train}/results",
                     "/api/v1/training/01NOSUCH/status", "/api/v1/testing/01NOSUCH/results",
                     f"/api/v1/testing/{train}/logs?episode_num=1"):
            assert_error(await client.get(path), 404)
        assert_error(await client.post("/api/v1/training/stop", json={"training_id": test}), 404)
        assert_error(await client.post("/api/v1/testing/start", json={"checkpoint": test, "episodes": 2}), 404)
        assert_error(await client.post("/api/v1/testing/start", json={"checkpoint": "01NOSUCH", "episodes": 2}), 404)
        assert_error(await client.post("/api/v1/training/stop", json={"training_id": "bad id"}), 400)


async def test_testing_start_status_results_and_logs(stack) -> None:
    train = await run_job(stack)
    await stack.projected()
    async with stack.client("operator") as client:
        started = await client.post("/api/v1/testing/start", json={"checkpoint": train, "episodes": 3})
        assert started.status_code == 202
        test = started.json()
        assert {"test_id", "status", "checkpoint", "episodes", "started_at"} <= test.keys()
        assert test["checkpoint"] == train and test["workload"] == "2048" and test["status"] == "started"
        await publish_episodes(stack.nc, stack.topology, test["test_id"], [10.0, 30.0])
        status = (await client.get(f"/api/v1/testing/{test['test_id']}/status")).json()
        assert {"current_episode", "total_episodes", "progress_percent", "elapsed_seconds",
                "estimated_remaining_seconds"} <= status["progress"].keys()
        assert status["progress"]["current_episode"] == 2 and status["progress"]["total_episodes"] == 3
        assert status["latest_episode"]["episode"] == 2 and status["latest_episode"]["score"] == 30.0
        results = (await client.get(f"/api/v1/testing/{test['test_id']}/results")).json()
        assert [e["score"] for e in results["episodes"]] == [10.0, 30.0]
        score = results["aggregate_metrics"]["score"]
        assert score == {"min": 10.0, "max": 30.0, "mean": 20.0, "median": 20.0, "std": 10.0}
        assert results["aggregate_metrics"]["max_tile"]["max"] == 512.0
        log = (await client.get(f"/api/v1/testing/{test['test_id']}/logs", params={"episode_num": 2})).json()
        assert log["episode"] == 2 and log["log"][0]["action"] == "up"
        assert_error(await client.get(f"/api/v1/testing/{test['test_id']}/logs", params={"episode_num": 9}), 404)
        assert_error(await client.get(f"/api/v1/testing/{test['test_id']}/logs"), 400, "episode_num")
        assert_error(await client.get(f"/api/v1/testing/{test['test_id']}/logs",
                                      params={"episode_num": "x"}), 400)


async def test_results_of_a_finished_run_come_from_its_result_when_telemetry_is_gone(stack) -> None:
    result = {"episodes": 2, "score": {"min": 1.0, "max": 3.0, "mean": 2.0, "median": 2.0, "std": 1.0}}
    train = await run_job(stack)
    test = await run_job(stack, kind="eval", checkpoint_of=train, result=result)
    await stack.projected()
    async with stack.client("viewer") as client:
        results = (await client.get(f"/api/v1/testing/{test}/results")).json()
        status = (await client.get(f"/api/v1/testing/{test}/status")).json()
    assert results["status"] == "completed" and results["episodes"] == []
    assert results["aggregate_metrics"]["score"]["max"] == 3.0 and results["result"] == result
    assert status["progress"]["progress_percent"] == 100.0


@pytest.mark.parametrize(("body", "word"), [({"episodes": 3}, "checkpoint"), ({"checkpoint": "x"}, "episodes"),
                                            ({"checkpoint": "x", "episodes": 0}, "episodes"),
                                            ({"checkpoint": "x", "episodes": 10**9}, "episodes"),
                                            ({"checkpoint": "a b", "episodes": 2}, "checkpoint")])
async def test_testing_start_rejects_bad_input(stack, body, word) -> None:
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/testing/start", json=body), 400, word)


# The specification's shapes: every field by name and JSON type (None: null is allowed too).
NUM = (int, float)
ISO = str  # timestamps are ISO-8601 text


def assert_shape(body: dict, shape: dict, nullable: tuple[str, ...] = ()) -> None:
    """Every field of `shape` is in `body` with the JSON type given (or null where `nullable` says)."""
    for name, kind in shape.items():
        assert name in body, f"{name} is missing from {sorted(body)}"
        value = body[name]
        if value is None and name in nullable:
            continue
        assert isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)), (name, value)


SPEC_TRAINING_START = {"map_id": 1, "max_iterations": 1000, "action_combinations": "MOVE_LEFT+ATTACK,MOVE_RIGHT",
                       "params": {"lr": 0.0005}}


async def upload_map(client, content: bytes = b"level data", filename: str = "level1.wad", **form) -> dict:
    """POST /api/v1/maps/upload as a browser form does; the reply."""
    reply = await client.post("/api/v1/maps/upload", files={"file": (filename, content)}, data=form)
    assert reply.status_code == 201, reply.text
    return reply.json()


async def test_spec_training_bodies_are_accepted_and_answered_in_the_specs_fields(stack) -> None:
    async with stack.client("operator") as client:
        assert (await upload_map(client, name="Level One"))["id"] == 1
        started = await client.post("/api/v1/training/start", json=SPEC_TRAINING_START)
        assert started.status_code == 202, started.text
        body = started.json()
        assert_shape(body, {"training_id": str, "status": str, "map_id": int, "max_iterations": int,
                            "started_at": ISO, "task_id": str})
        assert body["status"] == "started" and body["map_id"] == 1 and body["max_iterations"] == 1000
        assert body["action_combinations"] == SPEC_TRAINING_START["action_combinations"]
        training_id = body["training_id"]
        job = (await client.get(f"/api/v1/jobs/{training_id}")).json()
        assert job["map_id"] == 1 and job["action_combinations"] == SPEC_TRAINING_START["action_combinations"]
        status = (await client.get(f"/api/v1/training/{training_id}/status")).json()
        assert_shape(status, {"training_id": str, "status": str, "map_id": int, "map_name": str, "progress": dict,
                              "latest_metrics": dict, "started_at": ISO}, nullable=("latest_metrics",))
        assert status["map_name"] == "Level One"
        assert status["status"] in {"pending", "running", "stopped", "completed", "failed"}
        assert_shape(status["progress"], {"current_iteration": int, "max_iterations": int, "progress_percent": NUM,
                                          "elapsed_seconds": NUM, "estimated_remaining_seconds": NUM},
                     nullable=("estimated_remaining_seconds",))
        stopped = await client.post("/api/v1/training/stop", json={"training_id": training_id})
        assert_shape(stopped.json(), {"stopped_count": int, "training_ids": list, "message": str})
        everything = await client.post("/api/v1/training/stop")  # the empty body: stop all
        assert everything.status_code == 200
        assert_shape(everything.json(), {"stopped_count": int, "training_ids": list, "message": str})


async def test_spec_training_status_and_logs_carry_dqn_loss(stack) -> None:
    job = await run_job(stack, finish=False)
    await publish_progress(stack.nc, stack.topology, job, range(1, 4))
    async with stack.client("viewer") as client:
        status = (await client.get(f"/api/v1/training/{job}/status")).json()
        logs = (await client.get(f"/api/v1/training/{job}/logs")).json()
    assert_shape(status["latest_metrics"], {"iteration": int, "dqn_loss": NUM, "timestamp": ISO})
    assert status["latest_metrics"]["dqn_loss"] == 1 / 3 and status["status"] == "running"
    assert_shape(logs, {"training_id": str, "map_id": int, "max_iterations": int, "final_iteration": int,
                        "started_at": ISO, "completed_at": ISO, "duration_seconds": NUM, "iterations": list,
                        "max_loss": NUM, "min_loss": NUM, "mean_loss": NUM, "final_loss": NUM},
                 nullable=("map_id", "completed_at"))
    for row in logs["iterations"]:
        assert_shape(row, {"iteration": int, "dqn_loss": NUM, "timestamp": ISO})
    assert [r["dqn_loss"] for r in logs["iterations"]] == [1.0, 0.5, 1 / 3] and logs["final_loss"] == 1 / 3


EPISODE = {"episode_num": int, "score": NUM, "max_tile": NUM, "moves": NUM, "duration_seconds": NUM,
           "timestamp": ISO}


async def test_spec_testing_bodies_are_accepted_and_answered_in_the_specs_fields(stack) -> None:
    train = await run_job(stack)
    await stack.projected()
    body = {"map_id": 1, "checkpoint": train, "episodes": 3, "action_combinations": "MOVE_LEFT,MOVE_RIGHT",
            "params": {"episode_time": 60, "visualize": False}}
    async with stack.client("operator") as client:
        await upload_map(client)
        started = await client.post("/api/v1/testing/start", json=body)
        assert started.status_code == 202, started.text
        test = started.json()
        assert_shape(test, {"test_id": str, "status": str, "map_id": int, "checkpoint": str, "episodes": int,
                            "started_at": ISO, "task_id": str})
        assert test["status"] == "started" and test["checkpoint"] == train and test["episodes"] == 3
        test_id = test["test_id"]
        await publish_episodes(stack.nc, stack.topology, test_id, [30.0, 10.0], durations=True)
        status = (await client.get(f"/api/v1/testing/{test_id}/status")).json()
        assert_shape(status, {"test_id": str, "status": str, "map_id": int, "map_name": str, "checkpoint": str,
                              "progress": dict, "latest_episode": dict, "started_at": ISO})
        assert status["map_name"] == "level1"  # no name given: the file's, without its suffix
        assert_shape(status["progress"], {"current_episode": int, "total_episodes": int, "progress_percent": NUM,
                                          "elapsed_seconds": NUM, "estimated_remaining_seconds": NUM},
                     nullable=("estimated_remaining_seconds",))
        assert_shape(status["latest_episode"], EPISODE)
        assert status["latest_episode"]["episode_num"] == 2
        results = (await client.get(f"/api/v1/testing/{test_id}/results")).json()
        assert_shape(results, {"test_id": str, "map_id": int, "map_name": str, "checkpoint": str, "started_at": ISO,
                               "completed_at": ISO, "duration_seconds": NUM, "episodes": list,
                               "aggregate_metrics": dict},
                     nullable=("started_at", "completed_at", "duration_seconds"))
        assert [e["episode_num"] for e in results["episodes"]] == [1, 2]  # episode order
        for episode in results["episodes"]:
            assert_shape(episode, {**EPISODE, "events": list})
            for event in episode["events"]:
                assert_shape(event, {"timestamp": ISO, "type": str})
        for figure in ("score", "max_tile", "moves"):
            assert_shape(results["aggregate_metrics"][figure],
                         {"min": NUM, "max": NUM, "mean": NUM, "median": NUM, "std": NUM})
        log = (await client.get(f"/api/v1/testing/{test_id}/logs", params={"episode_num": 1})).json()
        assert_shape(log, {"test_id": str, "episode_num": int, "duration_seconds": NUM, "frames": int,
                           "events": list, "timeline": list})
        assert log["frames"] == 1 and log["episode_num"] == 1
        assert_shape(log["events"][0], {"frame": int, "timestamp": ISO, "type": str})
        assert log["timeline"][0] == {"frame": 1, "timestamp": log["events"][0]["timestamp"], "value": 4.0}
        stopped = (await client.post("/api/v1/testing/stop", json={"test_id": test_id})).json()
        assert_shape(stopped, {"stopped_count": int, "test_ids": list, "message": str})
        assert stopped["test_ids"] == [test_id]


@pytest.mark.parametrize(("body", "word"), [({"max_iterations": 5, "map_id": 0}, "map_id"),
                                            ({"max_iterations": 5, "map_id": "one"}, "map_id"),
                                            ({"max_iterations": 5, "action_combinations": 3}, "action_combinations"),
                                            ({"max_iterations": 5, "action_combinations": "x" * 5000},
                                             "action_combinations")])
async def test_spec_fields_reject_bad_values(stack, body, word) -> None:
    async with stack.client("operator") as client:
        assert_error(await client.post("/api/v1/training/start", json=body), 400, word)
