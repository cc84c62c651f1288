"""Workloads the trainer tests run as `tests.integration.test_trainer_workloads:<name>` (no tests here)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from services.trainer.sdk import workload


@workload
def write_pid_and_wait(ctx: Any) -> dict[str, Any]:
    """Write this process's pid to `params["pid_file"]`, then report (and checkpoint) until stopped, `seconds`
    are over, or the file `release_file` exists."""
    Path(ctx.params["pid_file"]).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(ctx.params.get("seconds", 60))
    every, i = int(ctx.params.get("checkpoint_every", 0)), 0
    release = ctx.params.get("release_file")
    while time.monotonic() < deadline and not ctx.should_stop and not (release and Path(release).exists()):
        i += 1
        ctx.report(iteration=i)
        if every and i % every == 0:
            ctx.save_checkpoint({"iteration": i}, iteration=i)
        time.sleep(0.02)
    return {"iterations": i}


@workload
def chatty(ctx: Any) -> dict[str, Any]:
    """Report `n` times as fast as it can (coalescing keeps the stream small; the last one must arrive)."""
    n = int(ctx.params.get("n", 20_000))
    for i in range(1, n + 1):
        ctx.report(iteration=i, loss=1.0 / i, score=float(i))
    return {"n": n}


@workload
def raise_after_report(ctx: Any) -> None:
    """Report once, then fail with a recognisable error from a nested call."""
    ctx.report(iteration=1)
    _inner(ctx.params.get("message", "boom"))


def _inner(message: str) -> None:
    raise ValueError(message)


@workload
def environment(ctx: Any) -> dict[str, Any]:
    """What the job process sees: its GPUs and device."""
    return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": ctx.device,
            "job_id": os.environ.get("STOKER_JOB_ID")}


@workload
def checkpoint_bytes_and_objects(ctx: Any) -> dict[str, Any]:
    """Save raw bytes, then a dict; the next attempt gets back the dict."""
    previous = ctx.load_checkpoint()
    ctx.save_checkpoint(b"\x00raw bytes", iteration=1)
    ctx.save_checkpoint({"step": 2, "values": [1.5, 2.5]}, iteration=2)
    return {"previous": previous}


@workload
def spawn_helper(ctx: Any) -> dict[str, Any]:
    """Start a long-running helper process, note its pid, and return without waiting for it."""
    import subprocess
    import sys

    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(ctx.params["pid_file"]).write_text(str(helper.pid))
    return {"helper": helper.pid}


@workload
def episodes(ctx: Any) -> dict[str, Any]:
    """Report `ctx.episodes` episodes with a small move log each."""
    for episode in range(1, (ctx.episodes or 1) + 1):
        ctx.report_episode(episode, score=10.0 * episode, log=[{"move": 1, "action": "up"}], moves=1)
        ctx.report(iteration=episode, score=10.0 * episode)
    return {"episodes": ctx.episodes}


def not_a_workload(ctx: Any) -> dict[str, Any]:
    """An ordinary function (not marked @workload): a worker must refuse to run it as a job."""
    Path(ctx.params["ran_file"]).write_text("ran")
    return {}


@workload(reuse_process=True)
def reusable_pid(ctx: Any) -> dict[str, Any]:
    """Say which process ran this job; with `leave_thread`, leave a thread running; with `leave_helper`, a
    helper process; with `fail`, raise."""
    if ctx.params.get("fail"):
        raise RuntimeError("failing on purpose")
    if ctx.params.get("leave_helper"):
        subprocess.Popen(["sleep", "60"])
    if "release_file" in ctx.params:  # note a SIGTERM (never reading should_stop)
        previous, termed = signal.getsignal(signal.SIGTERM), Path(ctx.params["termed_file"])

        def on_term(sig: int, frame: Any) -> None:
            previous(sig, frame)
            termed.write_text("1")

        signal.signal(signal.SIGTERM, on_term)
        Path(ctx.params["ready_file"]).write_text("1")
        deadline = time.monotonic() + 30
        while not Path(ctx.params["release_file"]).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if ctx.params.get("leave_thread"):
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    return {"pid": os.getpid(), "job_id": os.environ["STOKER_JOB_ID"]}
