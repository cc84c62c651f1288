"""The under-stoker half of bench/training.py: the same 2048 run submitted through a real `stoker up`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 128  # boards stepped per update by the 2048 workload's default
WARMUP = 100  # iterations left out of every rate: replay warm-up and first allocations


async def _run_job(url: str, iterations: int, timeout: float = 900) -> list[tuple[int, float]]:
    """Submit one 2048 training job, wait for its end, return (iteration, time) from its progress samples."""
    from contracts.commands import JobAccepted, SubmitJob
    from contracts.events import JobCompleted, JobFailed, JobStopped
    from contracts.subjects import Topology
    from contracts.telemetry import JobProgress
    from eventstore.connect import connect
    from eventstore.log import JetStreamLog
    from eventstore.micro import call
    from eventstore.telemetry import sample_history

    nc = await connect(url, "bench-training")
    try:
        topology = Topology()
        log = JetStreamLog(nc, topology)
        reply = await _submit_when_ready(nc, topology, SubmitJob(workload="2048", max_iterations=iterations),
                                         call, JobAccepted)
        async with asyncio.timeout(timeout):
            async for stored in log.subscribe(1, filter_subject=topology.events("job", reply.job_id)):
                if isinstance(stored.event, JobFailed | JobStopped):
                    raise RuntimeError(f"the bench job ended {stored.type}: {stored.event}")
                if isinstance(stored.event, JobCompleted):
                    break
        samples = await sample_history(nc, topology, "progress", reply.job_id, JobProgress)
        return [(s.iteration, s.at.timestamp()) for _seq, s in samples]
    finally:
        await nc.close()


async def _submit_when_ready(nc: Any, topology: Any, command: Any, call: Any, reply_type: Any) -> Any:
    from contracts.errors import Unavailable

    for _ in range(120):
        try:
            return await call(nc, topology, command, reply_type)
        except Unavailable:
            await asyncio.sleep(0.5)  # the scheduler is still starting
    raise RuntimeError("the scheduler never answered")


def _start_platform(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from eventstore.server import free_port, read_record

    env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
    env.update(STOKER_DATA_DIR=str(data_dir), STOKER_GATEWAY_PORT=str(free_port()))
    log = (data_dir / "up.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "ops", "up", "--port", str(free_port())], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        record = read_record(data_dir)
        if record:
            return process, record["url"]
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"stoker up did not start; see {data_dir / 'up.log'}")


def compare(device: str, iterations: int, rounds: int, standalone_rate: Callable[[str, int, int], float],
            emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Alternate standalone and under-stoker runs; return rates, env steps and the overhead ratio."""
    from bench.training import steady_rate

    bare: list[float] = []
    managed: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        process, url = _start_platform(Path(tmp))
        try:
            for _ in range(rounds):
                bare.append(standalone_rate(device, iterations, WARMUP))
                managed.append(steady_rate(asyncio.run(_run_job(url, iterations)), WARMUP))
                emit({"measure": "round", "device": device, "standalone_updates_per_s": round(bare[-1], 2),
                      "stoker_updates_per_s": round(managed[-1], 2)})
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    standalone, stoker = sum(bare) / len(bare), sum(managed) / len(managed)
    return {"standalone_updates_per_s": round(standalone, 2), "stoker_updates_per_s": round(stoker, 2),
            "standalone_env_steps_per_s": round(standalone * BATCH), "stoker_env_steps_per_s": round(stoker * BATCH),
            "overhead": round(1 - stoker / standalone, 4)}
