"""A real worker process behind the gateway: /ws as the earlier API's frontend uses it (the token in the URL or a
header, nothing sent, run messages heard), and a run's map fetched onto the worker and digest-checked.

The training run is a real 2048 run on a real worker process (the trainer agent), through the real
scheduler and discovery; the frontend only starts it over REST and listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import gateway_stack, publish_episodes, run_job
from tests.integration.test_gateway_runs import upload_map

ROOT = Path(__file__).resolve().parents[2]
NUM = (int, float)


@pytest_asyncio.fixture
async def stack(nats_server, nc, topology, tmp_path):
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as running:
        yield running


def start_worker(stack, nats_url: str, base: Path) -> subprocess.Popen:
    """A real trainer agent process (one slot, CPU), registering with the stack's discovery."""
    env = {**os.environ, "STOKER_NATS_URL": nats_url, "STOKER_PREFIX": stack.topology.prefix,
           "STOKER_DATA_DIR": str(base / "worker"), "STOKER_LOG_LEVEL": "warning", "STOKER_LOG_FORMAT": "json",
           "STOKER_TRAINER_WORKER_ID": "ws-w1", "STOKER_TRAINER_SLOTS": "1", "STOKER_TRAINER_DETECT_GPUS": "false",
           "STOKER_TRAINER_HEARTBEAT_S": "0.3", "STOKER_TRAINER_STOP_GRACE_S": "5"}
    (base / "logs").mkdir(parents=True, exist_ok=True)
    with (base / "logs" / "worker.log").open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "services.trainer"], env=env, cwd=ROOT, stdout=out,
                                stderr=out, start_new_session=True)


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def run_messages(conn: ClientConnection, until: str, timeout: float) -> list[dict[str, Any]]:
    """Every message up to and including the first of type `until` (welcome, pings and all)."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            seen.append(json.loads(await conn.recv()))
            if seen[-1]["type"] == until:
                return seen


async def test_a_frontend_with_its_token_in_the_url_hears_a_real_2048_run(stack, nats_server, tmp_path) -> None:
    worker = start_worker(stack, nats_server.url, tmp_path)
    try:
        async with connect(f"{stack.ws_url}?token={stack.tokens['viewer']}") as conn:
            assert json.loads(await conn.recv())["type"] == "welcome"  # and the frontend sends nothing
            async with stack.client("operator") as client:
                started = await client.post("/api/v1/training/start", json={
                    "max_iterations": 40, "params": {"boards": 8, "checkpoint_every": 20}})
                assert started.status_code == 202, started.text
            training_id = started.json()["training_id"]
            messages = await run_messages(conn, "training_completed", timeout=240)
    finally:
        stop_worker(worker)
    progress = [m for m in messages if m["type"] == "training_progress"]
    assert progress, [m["type"] for m in messages]
    for message in progress:
        assert message["training_id"] == training_id and isinstance(message["iteration"], int)
        assert message["dqn_loss"] is None or isinstance(message["dqn_loss"], NUM)
        assert isinstance(message["timestamp"], str)
    assert [m["iteration"] for m in progress] == sorted(m["iteration"] for m in progress)
    done = messages[-1]
    assert done["training_id"] == training_id and done["final_iteration"] == 40
    assert isinstance(done["final_loss"], NUM) and isinstance(done["duration_seconds"], NUM)
    assert not any(m["type"] in ("event", "progress") for m in messages)  # none of stoker's topic messages


async def test_a_header_authenticated_client_hears_testing_and_one_that_subscribes_hears_only_its_topics(
        stack) -> None:
    headers = {"Authorization": f"Bearer {stack.tokens['viewer']}"}
    train = await run_job(stack)
    await stack.projected()
    async with connect(stack.ws_url, additional_headers=headers) as plain, \
            connect(stack.ws_url, additional_headers=headers) as speaker:
        assert json.loads(await plain.recv())["type"] == "welcome"
        assert json.loads(await speaker.recv())["type"] == "welcome"
        await speaker.send(json.dumps({"type": "subscribe", "topics": ["jobs"]}))
        assert (await run_messages(speaker, "subscribed", timeout=10))[-1]["topics"] == ["jobs"]
        async with stack.client("operator") as client:
            test = (await client.post("/api/v1/testing/start", json={"checkpoint": train, "episodes": 2})).json()
        await publish_episodes(stack.nc, stack.topology, test["test_id"], [12.0], durations=True)
        [*_, heard] = await run_messages(plain, "testing_progress", timeout=10)
        assert heard["test_id"] == test["test_id"] and heard["episode"] == 1 and heard["score"] == 12.0
        assert heard["max_tile"] == 256.0 and heard["duration_seconds"] == 1.5 and isinstance(heard["timestamp"], str)
        jobs = await run_messages(speaker, "event", timeout=10)  # the submission, on the topic it asked for
        assert not any(m["type"].startswith("testing") for m in jobs)


async def test_a_bad_token_in_the_url_is_refused(stack) -> None:
    async with connect(f"{stack.ws_url}?token=nope") as conn:
        await conn.wait_closed()
    assert conn.close_code == 4401


async def test_a_run_with_a_map_gets_the_file_on_the_worker_digest_checked(stack, nats_server, tmp_path) -> None:
    content = bytes(range(256)) * 64
    worker = start_worker(stack, nats_server.url, tmp_path)
    try:
        async with stack.client("operator") as client:
            uploaded = await upload_map(client, content, "arena.cfg")
            started = await client.post("/api/v1/jobs", json={
                "kind": "train", "workload": "tests.integration.asset_workload:run", "max_iterations": 1,
                "map_id": uploaded["id"], "map_sha256": "0" * 64})  # a digest the caller sets is not trusted
            assert started.status_code in (200, 201, 202), started.text
            job_id = started.json()["id"]

            async def finished() -> dict | None:
                job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
                return job if job["status"] in ("completed", "failed") else None
            job = await eventually(finished, timeout=120, what="the map job finishing")
            listed = (await client.get("/api/v1/maps")).json()["maps"]
    finally:
        stop_worker(worker)
    assert job["status"] == "completed", job["error"]
    assert job["map_sha256"] == uploaded["sha256"] and job["map_filename"] == "arena.cfg"
    assert job["result"]["sha256"] == hashlib.sha256(content).hexdigest() == uploaded["sha256"]
    assert job["result"]["name"] == "arena.cfg" and job["result"]["assets"] == ["arena.cfg"]
    assert listed[0]["train_count"] == 1 and listed[0]["test_count"] == 0
