"""Placement: which queued jobs go to which worker slot now. Pure: reads the board, changes nothing.

Queue order is priority (high first), then submission order; a requeued job keeps its place. A job
that does not fit anywhere is skipped and later jobs may still run (backfill). Every job takes one
of its worker's slots; a job with `gpus > 0` also needs that many free GPU indices. Among eligible
workers the least loaded wins (active jobs per slot), then round robin by worker id. Only healthy
workers take jobs (not draining, lost or left ones), and only jobs whose workload they offer
(`contracts.workloads.offers`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from contracts.workloads import offers
from services.scheduler.board import Job, JobBoard


class Placement(NamedTuple):
    """One decision: attempt `job_id` runs on `worker_id`, in `slot`, with `gpu_indices`."""

    job_id: str
    worker_id: str
    slot: int
    gpu_indices: tuple[int, ...]


@dataclass
class _Capacity:
    free_slots: list[int]
    free_gpus: list[int]
    active: int
    slots: int
    labels: frozenset[str]
    workloads: frozenset[str] | None
    target_modules: tuple[str, ...] | None

    def fits(self, job: Job) -> bool:
        spec = job.spec
        return len(self.free_gpus) >= spec.gpus and self.labels.issuperset(spec.labels) \
            and offers(self.workloads, self.target_modules, spec.workload, spec.kind)

    def load(self) -> float:
        # Equal fractions divide to equal floats (IEEE division is correctly rounded), so ties stay ties.
        return self.active / self.slots


def place(state: JobBoard, now: datetime, extra: Job | None = None) -> list[Placement]:
    """Assignments to make now, in queue order; `extra` is a job not on the board yet, queued as submitted."""
    free = free_capacity(state)
    placements: list[Placement] = []
    if not free:
        return placements
    hopeless: set[tuple[int, tuple[str, ...], str, str]] = set()  # capacity only shrinks during a pass
    cursor = state.last_worker
    for job in queue_order(state, extra):
        if job.not_before is not None and job.not_before > now:
            continue
        shape = (job.spec.gpus, job.spec.labels, job.spec.workload, job.spec.kind)
        if shape in hopeless:
            continue
        worker_id = _choose(free, job, cursor)
        if worker_id is None:
            hopeless.add(shape)
            continue
        placements.append(_take(free, worker_id, job))
        cursor = worker_id
        if not free:
            break
    return placements


def free_capacity(state: JobBoard) -> dict[str, _Capacity]:
    """Healthy workers that are not draining with at least one free slot, and what is free on each."""
    free = {}
    for worker_id, worker in state.workers.items():
        if worker.health != "healthy" or worker.draining:
            continue
        active = [state.jobs[j] for j in state.running.get(worker_id, ()) if j in state.jobs]
        used_slots = {job.slot for job in active}
        slots = [s for s in range(worker.slots) if s not in used_slots]
        if not slots or len(active) >= worker.slots:
            continue
        used_gpus = {g for job in active for g in job.gpu_indices}
        gpus = [g for g in sorted(worker.gpus) if g not in used_gpus]
        workloads = frozenset(worker.workloads) if worker.workloads is not None else None
        free[worker_id] = _Capacity(slots, gpus, len(active), worker.slots, frozenset(worker.labels), workloads,
                                    worker.target_modules)
    return free


def queue_order(state: JobBoard, extra: Job | None = None) -> Iterator[Job]:
    """Queued jobs, first to be placed first; `extra` slotted in where its queue key puts it."""
    keys = state.queue
    cut = bisect_right(keys, extra.queue_key) if extra is not None else len(keys)
    for index in range(cut):
        yield state.jobs[keys[index][2]]
    if extra is not None:
        yield extra
        for index in range(cut, len(keys)):
            yield state.jobs[keys[index][2]]


def _choose(free: dict[str, _Capacity], job: Job, cursor: str) -> str | None:
    eligible = [w for w, cap in free.items() if cap.fits(job)]
    if not eligible:
        return None
    lowest = min(free[w].load() for w in eligible)
    tied = sorted(w for w in eligible if free[w].load() == lowest)
    return next((w for w in tied if w > cursor), tied[0])


def _take(free: dict[str, _Capacity], worker_id: str, job: Job) -> Placement:
    cap = free[worker_id]
    slot = cap.free_slots.pop(0)
    gpus = tuple(cap.free_gpus[:job.spec.gpus])
    del cap.free_gpus[:job.spec.gpus]
    cap.active += 1
    if not cap.free_slots or cap.active >= cap.slots:
        del free[worker_id]
    return Placement(job.job_id, worker_id, slot, gpus)
