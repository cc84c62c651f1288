"""Mixed load: training and evaluation jobs at once on labelled workers, then the same with a worker killed.

The seed's load test. Starts an authenticated nats-server, the scheduler, discovery and three workers (two
labelled `training`, one `evaluation`), trains one short 2048 job whose checkpoint the evaluations play, then
runs two phases of 10 concurrent 2048 training jobs and 20 concurrent 2048-eval ("backtest") jobs:

- steady: every job to its end;
- worker_killed: the same, with the first training worker SIGKILLed (its job processes with it) once the
  phase's first job has completed and that worker is running something.

Per phase and kind it prints one JSON line: jobs/s (jobs of that kind over the phase's wall time, first
submit to last end), queue wait p50/p95 (JobSubmitted.submitted_at to the first JobStarted.started_at, as
the log says), attempts, and whether every job completed exactly once (one JobCompleted, no final failure).
A phase's summary line compares its throughput with the steady phase's (the baseline of the same run).

    python bench/mixed.py [--train-iterations 150] [--episodes 4] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._platform import Platform  # noqa: E402
from bench.dispatch import percentile  # noqa: E402
from contracts.commands import JobAccepted, SubmitJob  # noqa: E402
from contracts.errors import Unavailable  # noqa: E402
from contracts.events import JobCompleted, JobFailed, JobStarted, JobSubmitted  # noqa: E402
from eventstore.connect import connect  # noqa: E402
from eventstore.log import JetStreamLog  # noqa: E402
from eventstore.micro import call  # noqa: E402

TRAINING, EVALUATION = "training", "evaluation"
WORKERS = {
    "train-1": {"LABELS": json.dumps([TRAINING]), "SLOTS": "2"},
    "train-2": {"LABELS": json.dumps([TRAINING]), "SLOTS": "2"},
    "eval-1": {"LABELS": json.dumps([EVALUATION]), "SLOTS": "4"},
}
VICTIM = "train-1"
TRAIN_JOBS, EVAL_JOBS = 10, 20


class Jobs:
    """Every job event of the run, folded per job as the log delivers it."""

    def __init__(self) -> None:
        self.submitted: dict[str, float] = {}
        self.started: dict[str, float] = {}  # first attempt's start
        self.worker: dict[str, str] = {}  # the worker of the latest start
        self.running: dict[str, set[str]] = defaultdict(set)
        self.attempts: Counter[str] = Counter()
        self.completed: Counter[str] = Counter()
        self.failed: dict[str, str] = {}
        self.ended_at: dict[str, float] = {}
        self.changed = asyncio.Event()

    def take(self, event: Any) -> None:
        job = getattr(event, "job_id", None)
        if isinstance(event, JobSubmitted):
            self.submitted[job] = event.submitted_at.timestamp()
        elif isinstance(event, JobStarted):
            self.started.setdefault(job, event.started_at.timestamp())
            self.attempts[job] += 1
            if job in self.worker:
                self.running[self.worker[job]].discard(job)
            self.worker[job] = event.worker_id
            self.running[event.worker_id].add(job)
        elif isinstance(event, JobCompleted):
            self.completed[job] += 1
            self.ended_at.setdefault(job, event.completed_at.timestamp())
            self.running[self.worker.get(job, "")].discard(job)
        elif isinstance(event, JobFailed) and not event.will_retry:
            self.failed[job] = event.error
            self.ended_at.setdefault(job, event.failed_at.timestamp())
            self.running[self.worker.get(job, "")].discard(job)
        else:
            return
        self.changed.set()

    async def follow(self, log: JetStreamLog) -> None:
        async for stored in log.subscribe(1, filter_subject=log.topology.events("job", "*")):
            self.take(stored.event)

    def ended(self, job: str) -> bool:
        return job in self.ended_at

    async def until(self, predicate, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                unended = [j for j in self.submitted if not self.ended(j)]
                where = Counter(self.worker.get(j, "queued") for j in unended)
                raise TimeoutError(f"the mixed benchmark did not finish in time: {len(unended)} jobs not ended"
                                   f" ({dict(where)}), e.g. {unended[:3]}")
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass


async def submit(nc, topology, command: SubmitJob) -> str:
    """One SubmitJob, retried while the scheduler is not leading yet."""
    for _ in range(600):
        try:
            return (await call(nc, topology, command, JobAccepted, timeout=30)).job_id
        except Unavailable:
            await asyncio.sleep(0.1)
    raise RuntimeError("the scheduler never accepted a job")


def training_job(iterations: int) -> SubmitJob:
    return SubmitJob(kind="train", workload="2048", max_iterations=iterations, labels=(TRAINING,), max_retries=2,
                     params={"checkpoint_every": max(1, iterations // 3)})


def evaluation_job(source: str, episodes: int) -> SubmitJob:
    return SubmitJob(kind="eval", workload="2048-eval", episodes=episodes, checkpoint_of=source,
                     labels=(EVALUATION,), max_retries=2)


def figures(jobs: Jobs, ids: list[str], began: float) -> dict[str, Any]:
    """Throughput, queue wait and exactly-once for one kind's jobs of one phase."""
    waits = [(jobs.started[j] - jobs.submitted[j]) * 1000 for j in ids if j in jobs.started]
    wall = max(jobs.ended_at[j] for j in ids) - began
    return {"jobs": len(ids), "wall_s": round(wall, 2), "jobs_per_s": round(len(ids) / wall, 3),
            "queue_wait_ms_p50": round(percentile(waits, 50), 1), "queue_wait_ms_p95": round(percentile(waits, 95), 1),
            "attempts": sum(jobs.attempts[j] for j in ids),
            "completed_exactly_once": all(jobs.completed[j] == 1 and j not in jobs.failed for j in ids),
            "failed": sum(1 for j in ids if j in jobs.failed)}


async def phase(name: str, platform: Platform, nc, jobs: Jobs, source: str, args, kill: bool) -> dict[str, Any]:
    """Submit one phase's jobs at once, optionally kill the victim worker mid-phase, wait for every end."""
    topology = platform.topology
    began = time.time()
    commands = [training_job(args.train_iterations)] * TRAIN_JOBS + [evaluation_job(source, args.episodes)] * EVAL_JOBS
    ids = await asyncio.gather(*(submit(nc, topology, c) for c in commands))
    train_ids, eval_ids = list(ids[:TRAIN_JOBS]), list(ids[TRAIN_JOBS:])
    killed_at = None
    if kill:
        await jobs.until(lambda: any(jobs.ended(j) for j in ids) and jobs.running[VICTIM], args.timeout)
        killed_at = time.time() - began
        lost = sorted(jobs.running[VICTIM])
        platform.kill(VICTIM)
    await jobs.until(lambda: all(jobs.ended(j) for j in ids), args.timeout)
    out = {}
    for kind, kind_ids in ((TRAINING, train_ids), (EVALUATION, eval_ids)):
        line = {"bench": "mixed", "phase": name, "kind": kind, **figures(jobs, kind_ids, began)}
        if kill:
            line.update(killed=VICTIM, killed_after_s=round(killed_at, 2),
                        running_on_killed=sum(1 for j in lost if j in kind_ids))
        print(json.dumps(line), flush=True)
        out[kind] = line
    return out


async def run(args) -> None:
    with tempfile.TemporaryDirectory(prefix="stoker-mixed-") as tmp:
        platform = Platform(Path(tmp), WORKERS)
        await platform.start()
        try:
            nc = await connect(platform.server.url, "bench-mixed", credentials=platform.admin)
            jobs = Jobs()
            follower = asyncio.create_task(jobs.follow(JetStreamLog(nc, platform.topology)))
            source = await submit(nc, platform.topology, training_job(args.train_iterations))
            await jobs.until(lambda: jobs.ended(source), args.timeout)
            if source in jobs.failed:
                raise RuntimeError(f"the seed training job failed: {jobs.failed[source]}")
            steady = await phase("steady", platform, nc, jobs, source, args, kill=False)
            killed = await phase("worker_killed", platform, nc, jobs, source, args, kill=True)
            labels = {w: s["LABELS"] for w, s in WORKERS.items()}
            print(json.dumps({"bench": "mixed", "summary": True, "workers": labels,
                              "train_iterations": args.train_iterations, "episodes": args.episodes,
                              **{f"{kind}_ratio_killed_vs_steady": round(killed[kind]["jobs_per_s"]
                                                                         / steady[kind]["jobs_per_s"], 3)
                                 for kind in (TRAINING, EVALUATION)},
                              "every_job_exactly_once": all(line["completed_exactly_once"]
                                                            for p in (steady, killed) for line in p.values())}),
                  flush=True)
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await nc.close()
        finally:
            platform.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-iterations", type=int, default=150, help="updates per training job")
    parser.add_argument("--episodes", type=int, default=4, help="games per evaluation job")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a phase may take")
    asyncio.run(run(parser.parse_args()))
