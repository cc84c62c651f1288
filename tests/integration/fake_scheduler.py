"""A scripted scheduler and discovery for the worker's side of docs/protocol.md, on real NATS.

It answers `scheduler.confirm` (for what it assigned), `scheduler.report`, `discovery.register` and
`discovery.deregister`, records what workers say, and publishes the Assignment / StopAttempt a test
writes on a worker's dispatch subject.

It is a script, not a copy of the services: it decides nothing (no queue, no placement, no fencing
rule); the test says what to send and which attempt to fence. That is why it stays beside the real
services, which `test_trainer_agent` runs wherever they can lead the agent into the case under test:
some cases need a scheduler to say what the real one never says of its own accord (an assignment
it would have refused, a duplicate delivery, "not yours any more" to a live attempt, a second
attempt of a finished job, a replay to a restarted worker), and some read a report's own fields
(a stopped attempt's result) that the events the real scheduler appends do not keep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client

from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.commands import (
    AssignmentConfirmed,
    ConfirmAssignment,
    DeregisterWorker,
    JobReport,
    RegisterWorker,
    ReportAccepted,
    ReportJobCheckpointed,
    ReportJobFinished,
    ReportJobStarted,
    WorkerAccepted,
)
from contracts.dispatch import Assignment, CheckpointRef, StopAttempt
from contracts.subjects import Topology
from eventstore.micro import start_service


class FakeScheduler:
    """Records reports and registrations; fences reports of attempts it was told to fence."""

    def __init__(self, nc: Client, topology: Topology) -> None:
        self.nc, self.topology = nc, topology
        self.reports: list[JobReport] = []
        self._seen: set[bytes] = set()
        self.registered: dict[str, RegisterWorker] = {}
        self.deregistered: list[str] = []
        self.fenced: set[tuple[str, int]] = set()
        self.stop_requested: set[str] = set()
        self.assigned: dict[tuple[str, int], Assignment] = {}
        self.confirms: list[ConfirmAssignment] = []
        self._changed = asyncio.Condition()
        self._services: list[Any] = []

    async def start(self) -> FakeScheduler:
        """Serve the scheduler's report endpoint and discovery's register/deregister endpoints."""
        self._services.append(await start_service(self.nc, self.topology, "scheduler", "0.0.0",
                                                  {"report": (JobReport, self._on_report),
                                                   "confirm": (ConfirmAssignment, self._on_confirm)}))
        self._services.append(await start_service(self.nc, self.topology, "discovery", "0.0.0", {
            "register": (RegisterWorker, self._on_register), "deregister": (DeregisterWorker, self._on_deregister)}))
        return self

    async def close(self) -> None:
        """Stop answering."""
        for service in self._services:
            await service.stop()
        self._services.clear()

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _on_report(self, report: JobReport) -> ReportAccepted:
        key = (report.job_id, report.attempt)
        if key in self.fenced:
            return ReportAccepted(accepted=False, stop=True, reason="stale attempt")
        seen = encode(report)
        if seen not in self._seen:  # a worker re-sends a report until it is answered: record it once
            self._seen.add(seen)
            if isinstance(report, ReportJobFinished) and report.started is not None:
                self.reports.append(report.started)  # a short job's start comes with its end, as the scheduler reads it
            self.reports.append(report)
        await self._note()
        return ReportAccepted(accepted=True, stop=report.job_id in self.stop_requested)

    async def _on_confirm(self, command: ConfirmAssignment) -> AssignmentConfirmed:
        self.confirms.append(command)
        key = (command.job_id, command.attempt)
        assignment = self.assigned.get(key)
        if key in self.fenced or assignment is None or assignment.worker_id != command.worker_id:
            return AssignmentConfirmed(confirmed=False, reason=f"not assigned: {command.job_id}")
        if command.job_id in self.stop_requested:
            return AssignmentConfirmed(confirmed=True, stop=True, reason="requested")
        return AssignmentConfirmed(confirmed=True, assignment=assignment)

    async def _on_register(self, command: RegisterWorker) -> WorkerAccepted:
        self.registered[command.worker_id] = command
        await self._note()
        return WorkerAccepted(worker_id=command.worker_id, status="healthy")

    async def _on_deregister(self, command: DeregisterWorker) -> WorkerAccepted:
        self.deregistered.append(command.worker_id)
        await self._note()
        return WorkerAccepted(worker_id=command.worker_id, status="left")

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Wait until `predicate()` is truthy and return its value."""
        async def until() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value

        return await asyncio.wait_for(until(), timeout)

    async def assign(self, worker_id: str, workload: str, *, job_id: str | None = None, attempt: int = 1,
                     kind: str = "train", params: dict[str, Any] | None = None, max_iterations: int | None = None,
                     episodes: int | None = None, checkpoints: tuple[CheckpointRef, ...] = (),
                     gpu_indices: tuple[int, ...] = ()) -> Assignment:
        """Publish an assignment to a worker's dispatch subject, as the scheduler does after JobAssigned."""
        assignment = Assignment(job_id=job_id or new_id(), attempt=attempt, worker_id=worker_id, kind=kind,
                                workload=workload, params=params or {}, max_iterations=max_iterations,
                                episodes=episodes, checkpoints=checkpoints, gpu_indices=gpu_indices,
                                assigned_at=utcnow())
        self.assigned[(assignment.job_id, attempt)] = assignment
        msg_id = f"{assignment.job_id}.{attempt}.assign"
        await self.nc.jetstream().publish(self.topology.dispatch(worker_id), encode(assignment),
                                          headers={"Nats-Msg-Id": msg_id})
        return assignment

    async def stop(self, assignment: Assignment, reason: str = "requested") -> None:
        """Publish a StopAttempt for an assignment."""
        stop = StopAttempt(job_id=assignment.job_id, attempt=assignment.attempt, worker_id=assignment.worker_id,
                           reason=reason)
        await self.nc.jetstream().publish(self.topology.dispatch(assignment.worker_id), encode(stop),
                                          headers={"Nats-Msg-Id": f"{assignment.job_id}.{assignment.attempt}.stop"})

    def of(self, job_id: str, kind: type, attempt: int | None = None) -> list[Any]:
        """Reports of one type for one job (and attempt)."""
        return [r for r in self.reports if isinstance(r, kind) and r.job_id == job_id
                and (attempt is None or r.attempt == attempt)]

    async def finished(self, job_id: str, attempt: int = 1, timeout: float = 30.0) -> ReportJobFinished:
        """Wait for the attempt's ReportJobFinished."""
        found = await self.wait_for(lambda: self.of(job_id, ReportJobFinished, attempt), timeout)
        return found[0]

    async def started(self, job_id: str, attempt: int = 1, timeout: float = 30.0) -> ReportJobStarted:
        """Wait for the attempt's ReportJobStarted."""
        found = await self.wait_for(lambda: self.of(job_id, ReportJobStarted, attempt), timeout)
        return found[0]

    def checkpoints(self, job_id: str) -> tuple[CheckpointRef, ...]:
        """Every reported checkpoint of a job, newest first, as an Assignment carries them."""
        reports = self.of(job_id, ReportJobCheckpointed)
        refs = [CheckpointRef(name=r.name, sha256=r.sha256, size=r.size, iteration=r.iteration) for r in reports]
        return tuple(sorted(refs, key=lambda r: -r.iteration))
