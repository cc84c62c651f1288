"""What checking params costs the scheduler: `decide(SubmitJob)` with the params checked against 2048's declared
schema, against the same decision with `strict_params` false (the baseline, same run, same board).

The board holds `--workers` workers offering `2048` with its schema (the check compares the distinct
schemas, so more workers cost only the scan). The DESIGN budget for a whole job is 4 ms of CPU.

    python bench/params_check.py                 # 20,000 decisions each way
    python bench/params_check.py --n 5000 --workers 100

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contracts import events as ev  # noqa: E402
from contracts.commands import SubmitJob  # noqa: E402
from services.scheduler import domain  # noqa: E402
from services.scheduler.board import apply_in_place, initial_state  # noqa: E402
from services.trainer.workloads.game2048.params import TrainParams  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PARAMS = {"learning_rate": 0.0005, "gamma": 0.99, "batch_size": 32, "boards": 64, "checkpoint_every": 100}


def board(workers: int):
    """A board of busy workers (no free slot, so placement does not grow the board) offering 2048."""
    state = initial_state()
    schema = msgspec.json.schema(TrainParams)
    for i in range(workers):
        caps = ev.WorkerCapabilities(hostname=f"h{i}", cpu_cores=2, ram_mb=1024, slots=1, workloads=("2048",),
                                     workload_params={"2048": schema}, labels=("none",))
        apply_in_place(state, ev.WorkerRegistered(worker_id=f"w{i}", capabilities=caps, registered_at=NOW))
    return state


def per_decision(state, strict: bool, n: int) -> float:
    """Seconds of one `decide(SubmitJob)` (the board is not changed: the events are not applied)."""
    command = SubmitJob(workload="2048", max_iterations=10, params=PARAMS, strict_params=strict,
                        labels=("gpu",))  # a label no worker has: nothing is placed
    ids = iter(range(10**9))
    start = time.perf_counter()
    for _ in range(n):
        domain.decide(command, state, NOW, new_job_id=lambda: f"j{next(ids)}")
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=10)
    args = parser.parse_args()
    state = board(args.workers)
    per_decision(state, True, 500)  # warm up
    baseline = per_decision(state, False, args.n)
    checked = per_decision(state, True, args.n)
    print(json.dumps({"bench": "params_check", "workers": args.workers, "n": args.n,
                      "decide_unchecked_us": round(baseline * 1e6, 2), "decide_checked_us": round(checked * 1e6, 2),
                      "check_us": round((checked - baseline) * 1e6, 2), "ratio": round(checked / baseline, 3)}))


if __name__ == "__main__":
    main()
