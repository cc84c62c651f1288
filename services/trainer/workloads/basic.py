"""Workloads for tests and smoke checks (noop, sleep, fail); they need no torch and checkpoint plain dicts.

Iterations count from 1: after iteration i is done it is reported, and a checkpoint taken then holds
{"iteration": i}, so a resumed attempt continues with iteration i + 1.
"""

from __future__ import annotations

import math
import time
from typing import Annotated, Any

import msgspec

from services.trainer.sdk import JobContext, workload

SLICE_S = 0.05  # longest single sleep, so a stop request is noticed within this
Every = Annotated[int, msgspec.Meta(ge=0, description="iterations between checkpoints (0: none but the last)")]


class NoopParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Counting through max_iterations."""

    checkpoint_every: Every = 0


class SleepParams(NoopParams, kw_only=True, forbid_unknown_fields=True):
    """Sleeping in steps."""

    seconds: Annotated[float, msgspec.Meta(ge=0, description="how long to sleep (without max_iterations)")] = 1.0
    step_s: Annotated[float, msgspec.Meta(gt=0, description="seconds per step: per iteration (0.1 if not given),"
                                           " else per slice of `seconds` (0.05)")] | None = None


class FailParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Failing on purpose."""

    message: Annotated[str, msgspec.Meta(max_length=4096, description="the error raised")] = "failing on purpose"


@workload(params=NoopParams, reuse_process=True)  # keeps nothing between jobs: its process may run the next
def noop(ctx: JobContext) -> dict[str, Any]:
    """Do nothing: one report and done, or count through `max_iterations` with checkpoints."""
    if ctx.max_iterations is None:
        ctx.report(iteration=1)
        return {"ok": True, "iteration": 1}
    return _count(ctx, "noop", ctx.max_iterations, 0.0)


@workload(params=SleepParams)
def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleep `seconds` in small steps, or `max_iterations` steps of `step_s` seconds, checkpointing."""
    params = ctx.params or {}
    if ctx.max_iterations is not None:
        return _count(ctx, "sleep", ctx.max_iterations, float(params.get("step_s", 0.1)))
    seconds = max(0.0, float(params.get("seconds", 1.0)))
    steps = max(1, math.ceil(seconds / float(params.get("step_s", SLICE_S))))
    return _count(ctx, "sleep", steps, seconds / steps)


@workload(params=FailParams)
def fail(ctx: JobContext) -> dict[str, Any]:
    """Raise at once; for testing failures and retries."""
    raise RuntimeError((ctx.params or {}).get("message", "failing on purpose"))


def _count(ctx: JobContext, workload: str, total: int, step_s: float) -> dict[str, Any]:
    """Run iterations up to `total` (each `step_s` long) from the last checkpoint, checkpointing as asked."""
    every = int(float((ctx.params or {}).get("checkpoint_every", 0)))
    ckpt = ctx.load_checkpoint()
    start = int(ckpt["iteration"]) if ckpt else 0
    last, saved, stopped = start, start, False
    for i in range(start + 1, total + 1):
        if ctx.should_stop or not _pause(ctx, step_s):
            stopped = True
            break
        last = i
        ctx.report(iteration=i, progress=i / total)
        if every > 0 and i % every == 0:
            ctx.save_checkpoint({"workload": workload, "iteration": i}, iteration=i)
            saved = i
    if last == start:
        ctx.report(iteration=last, progress=last / total if total else 1.0)
    if stopped and last != saved:
        ctx.save_checkpoint({"workload": workload, "iteration": last}, iteration=last)
    return {"ok": True, "iteration": last, "resumed_from": start if ckpt else None,
            "iterations_run": last - start, "stopped": stopped}


def _pause(ctx: JobContext, seconds: float) -> bool:
    """Sleep `seconds` in short slices; False as soon as a stop is requested."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, SLICE_S))
        if ctx.should_stop:
            return False
    return True
