"""Training benchmark: 2048 board-steps/s and agent updates/s on this machine's device, as JSON lines.

env_steps_per_s counts board-steps (one move on one board) under random valid moves; updates_per_s
counts training iterations of the "2048" workload, each one 128-board env step plus one gradient update.
The overhead figure compares the workload's steady-state update rate run bare in this process with the
same workload submitted through stoker (`stoker up` in a temporary data dir: scheduler, discovery, a
worker running the job in its warm child, progress and checkpoints going through NATS), measured from
iteration timestamps after a warm-up, in alternating rounds so machine noise hits both alike.

    python bench/training.py [--seconds 3] [--iterations 600] [--batch-sizes 256,4096] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.jobspec import PARAMS_VERSION

ROOT = Path(__file__).resolve().parent.parent


class BareContext:
    """The cheapest JobContext: reports and checkpoints go nowhere, so only the workload is timed."""

    kind = "train"
    workload = "2048"
    job_id = "bench"
    attempt = 1
    episodes = None
    params_version = PARAMS_VERSION  # parameters named as workloads declare them now

    def __init__(self, max_iterations: int, device: str, params: dict[str, Any]) -> None:
        self.max_iterations = max_iterations
        self.device = device
        self.params = params
        self.times: list[tuple[int, float]] = []

    def report(self, iteration: int, loss: float | None = None, **metrics: float) -> None:
        """Keep only when each iteration finished (what the under-stoker figure reads from telemetry)."""
        self.times.append((iteration, time.time()))

    def report_episode(self, episode: int, *, score: float, log: Any = None, **figures: float) -> None:
        """Drop the episode."""

    def save_checkpoint(self, obj: Any, iteration: int) -> None:
        """Drop the checkpoint."""

    def load_checkpoint(self) -> Any | None:
        """Never a checkpoint: every run starts fresh."""
        return None

    @property
    def should_stop(self) -> bool:
        """Never asked to stop."""
        return False


def pick_device() -> str:
    """cuda when available, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def sync(device: str) -> None:
    """Wait for queued GPU work so timings are honest."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def env_steps_per_s(device: str, batch_size: int, seconds: float) -> float:
    """Board-steps per second of the vectorised env under uniformly random valid moves."""
    import torch

    from services.trainer.workloads.game2048.agent import random_actions
    from services.trainer.workloads.game2048.env import Batch2048Env

    env = Batch2048Env(batch_size, device, seed=0)
    g = torch.Generator(device=device).manual_seed(0)
    for _ in range(10):
        env.step(random_actions(env.valid, g))
    sync(device)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            env.step(random_actions(env.valid, g))
        steps += 10
        sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def measure(run: Callable[[], int]) -> dict[str, float]:
    """Time `run`, which runs a job to its end and returns how many iterations it did."""
    start = time.perf_counter()
    iterations = run()
    seconds = time.perf_counter() - start
    return {"iterations": iterations, "seconds": seconds, "updates_per_s": iterations / seconds}


def standalone_run(device: str, iterations: int, params: dict[str, Any]) -> Callable[[], int]:
    """A callable that runs the 2048 training workload in this process, outside stoker."""
    from services.trainer.workloads.game2048 import train

    def run() -> int:
        return int(train.run(BareContext(iterations, device, params))["iteration"])

    return run


def steady_rate(times: list[tuple[int, float]], warmup: int) -> float:
    """Iterations per second between the first sample at or past `warmup` and the last sample."""
    later = [(i, t) for i, t in times if i >= warmup]
    if len(later) < 2 or later[-1][1] <= later[0][1]:
        raise ValueError("too few progress samples past the warm-up to measure a rate")
    return (later[-1][0] - later[0][0]) / (later[-1][1] - later[0][1])


def standalone_rate(device: str, iterations: int, warmup: int) -> float:
    """Steady-state updates/s of the workload run bare in this process."""
    from services.trainer.workloads.game2048 import train

    ctx = BareContext(iterations, device, {})
    train.run(ctx)
    return steady_rate(ctx.times, warmup)


def main(argv: list[str] | None = None) -> None:
    """Print one JSON line per measurement and a summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per env measurement")
    parser.add_argument("--iterations", type=int, default=600, help="training iterations to time")
    parser.add_argument("--batch-sizes", default="256,4096", help="boards per env measurement")
    parser.add_argument("--rounds", type=int, default=2, help="alternating standalone / under-stoker rounds")
    parser.add_argument("--standalone-only", action="store_true", help="skip the under-stoker comparison")
    args = parser.parse_args(argv)
    device = pick_device()
    best_env = 0.0
    for b in (int(x) for x in args.batch_sizes.split(",")):
        rate = env_steps_per_s(device, b, args.seconds)
        best_env = max(best_env, rate)
        emit({"measure": "env", "device": device, "batch_size": b, "env_steps_per_s": round(rate)})
    standalone_run(device, 20, {})()  # warm-up: first-call allocations and kernel selection
    train = measure(standalone_run(device, args.iterations, {}))
    emit({"measure": "train_standalone", "device": device, **rounded(train)})
    summary: dict[str, Any] = {"device": device, "env_steps_per_s": round(best_env),
                               "updates_per_s": round(train["updates_per_s"], 1)}
    if not args.standalone_only:
        from bench.training_under_stoker import compare

        summary.update(compare(device, args.iterations, args.rounds, standalone_rate, emit))
    emit(summary)


def rounded(figures: dict[str, float]) -> dict[str, float]:
    """Figures to three decimals for readable output."""
    return {k: round(v, 3) for k, v in figures.items()}


def emit(line: dict[str, Any]) -> None:
    """Print one benchmark JSON line."""
    print(json.dumps({"bench": "training", **line}), flush=True)


if __name__ == "__main__":
    # First, always: run as a script, bench/ is sys.path[0] and bench/eventstore.py would shadow the package.
    sys.path.insert(0, str(ROOT))
    main()
