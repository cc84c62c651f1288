"""One attempt on this worker: resume, hand it to a warm child, relay what it says, report how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats.errors
from nats.aio.client import Client
from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind

from contracts.codec import encode
from contracts.commands import (
    AssignmentConfirmed,
    ConfirmAssignment,
    JobReport,
    ReportJobCheckpointed,
    ReportJobFinished,
    ReportJobStarted,
)
from contracts.dispatch import Assignment, CheckpointRef
from contracts.jobspec import spec_fields
from contracts.subjects import MAX_TELEMETRY_BYTES, Topology
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.observability import get_logger, inject_trace, span, traceparent
from services.trainer import wire
from services.trainer.blobstore import AssetUnavailable, CheckpointStore, fetch_asset
from services.trainer.checkpoints import CheckpointUnavailable, Choice, checkpoint_name, choose
from services.trainer.outbox import AttemptLog, Outbox, deliver
from services.trainer.outcome import Ending, decide
from services.trainer.pool import BASE, WarmPool
from services.trainer.processes import ChildProcess, kill, terminate
from services.trainer.settings import TrainerSettings
from services.trainer.telemetry import TelemetryPublisher
from services.trainer.workloads_registry import Registry, UnknownWorkload, module_of

log = get_logger(component="runner")
EXIT_WAIT_S = 2.0
MAX_SAMPLE_BYTES = MAX_TELEMETRY_BYTES - 64 * 1024


@dataclass
class Deps:
    """What every runner of this worker shares."""

    nc: Client
    topology: Topology
    settings: TrainerSettings
    worker_id: str
    pool: WarmPool
    store: CheckpointStore
    registry: Registry
    attempts: AttemptLog
    spool: Path
    telemetry: TelemetryPublisher


def at(epoch: float) -> datetime:
    """An epoch timestamp from the child as an aware datetime."""
    return datetime.fromtimestamp(epoch, UTC)


class JobRunner:
    """Runs one assignment to its end; `stop()` and `fence()` may be called at any time.

    Nothing of the job is loaded (no checkpoint fetched, no workload resolved or imported) before the
    scheduler confirms the assignment; what runs then is the scheduler's copy of it, not the message's.
    """

    def __init__(self, deps: Deps, assignment: Assignment, on_release: Callable[[JobRunner], None]) -> None:
        self.deps, self.on_release = deps, on_release
        self.key = (assignment.job_id, assignment.attempt)
        self.child: ChildProcess | None = None
        self.stop_reason: str | None = None
        self.fenced = False
        self.refused = False  # the scheduler said this assignment is not ours: nothing of it ran
        self.outbox = Outbox()
        self.spool = deps.spool / f"{assignment.job_id}-{assignment.attempt}"
        self._take(assignment)
        self._kill_timer: asyncio.TimerHandle | None = None
        self._saving = 0  # checkpoints handed over by the child, not yet stored and reported
        self._last_sample: asyncio.Future | None = None  # acknowledgement of the last telemetry sample sent
        self._finished = False
        self._trace: otel_context.Context | None = None  # the job process's start: its first report continues it
        self._unreported_start: ReportJobStarted | None = None  # held a moment: a short job sends it with its end
        self._started_at = 0.0  # time.monotonic() when the job process was handed its Start
        self._start_timer: asyncio.TimerHandle | None = None
        self.log = log.bind(job_id=assignment.job_id, attempt=assignment.attempt)

    def _take(self, assignment: Assignment) -> None:
        self.a = assignment
        self.total = assignment.max_iterations if assignment.kind == "train" else assignment.episodes
        self.workload = assignment.workload  # the name it runs, once resolved (see _run)

    def stop(self, reason: str) -> None:
        """Ask the attempt to stop: SIGTERM now (the SDK's should_stop), SIGKILL after the grace period."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.child is not None and self._kill_timer is None:
            terminate(self.child)
            grace = self.deps.settings.stop_grace_s
            self._kill_timer = asyncio.get_running_loop().call_later(grace, kill, self.child)

    def fence(self, reason: str) -> None:
        """The scheduler says this attempt is no longer ours: end it now and report nothing more."""
        if not self.fenced:
            self.log.warning("attempt fenced, killing it", reason=reason)
        self.fenced = True
        if self.child is not None:
            kill(self.child)

    async def run(self) -> None:
        """The whole attempt; never raises."""
        try:
            await self._run()
        except Exception as exc:
            self.log.exception("runner failed")
            if not self._finished:
                with contextlib.suppress(Exception):
                    await self._finish(Ending("failed", error=f"worker error: {exc!r}", retryable=True))
        finally:
            if self._kill_timer is not None:
                self._kill_timer.cancel()
            if self._start_timer is not None:
                self._start_timer.cancel()
            shutil.rmtree(self.spool, ignore_errors=True)

    async def _run(self) -> None:
        if not await self._confirmed():
            return
        if self.stop_reason is not None:
            await self._finish(decide(None, None, self.stop_reason))  # asked to stop before anything was loaded
            return
        registry = self.deps.registry
        self.workload = registry.resolve(self.a.workload, self.a.kind)  # an evaluation of X runs X-eval if here
        try:
            target = registry.target(self.workload)
        except UnknownWorkload as exc:
            await self._finish(Ending("failed", error=str(exc)))
            return
        choice = Choice()
        if self.a.checkpoints:
            try:
                choice = await self._choose_checkpoint()
            except CheckpointUnavailable as exc:
                await self._finish(Ending("failed", error=str(exc), retryable=True))
                return
        asset = None
        if self.a.map_sha256 is not None:
            try:
                asset = await self._fetch_asset()
            except AssetUnavailable as exc:
                await self._finish(Ending("failed", error=str(exc)))
                return
        if self.stop_reason is not None or self.fenced:
            await self._finish(decide(None, None, self.stop_reason or "stopped"))
            return
        key = self._pool_key(target)
        child = await self.deps.pool.acquire(key, target)
        self._start(child, target, choice, asset)
        done = await self._pump(child)
        exit_code = None
        if done is None:
            with contextlib.suppress(TimeoutError):
                exit_code = await asyncio.wait_for(asyncio.shield(child.exit_code), EXIT_WAIT_S)
        # Passed on only if never signalled: no stop or kill meant for this job can reach the next one.
        reusable = done is not None and done.reusable and self._kill_timer is None and not self.fenced
        if reusable:
            self.child = None  # a stop or fence from now on is not for that process any more
        self.deps.pool.release(child, key, target, reusable)
        await self._finish(decide(done, exit_code, self.stop_reason))

    async def _confirmed(self) -> bool:
        """Ask the scheduler whether this assignment is ours (fencing); False: nothing of it may run."""
        a = self.a
        question = ConfirmAssignment(job_id=a.job_id, attempt=a.attempt, worker_id=self.deps.worker_id)
        reply: AssignmentConfirmed | None = await deliver(
            self.deps.nc, self.deps.topology, question, self.deps.settings.report_timeout_s,
            cancelled=lambda: self.fenced, reply_type=AssignmentConfirmed)
        if reply is None:  # no answer (the connection is closing): the journal settles it on the next run
            self.log.error("assignment not confirmed by the scheduler; not running it")
            self._finished = True
            self.on_release(self)
            return False
        if not reply.confirmed:
            self.log.warning("assignment refused by the scheduler; nothing of it runs", reason=reply.reason,
                             workload=a.workload)
            self.refused = self.fenced = True
            await self._finish(Ending("stopped"))  # fenced: frees the slot and reports nothing
            return False
        if reply.stop:
            self.stop(reply.reason or "requested")
        elif reply.assignment is not None:
            mine = reply.assignment
            if mine.spec != a.spec:
                self.log.warning("dispatch message differs from the scheduler's assignment; running the scheduler's",
                                 sent=a.workload, assigned=mine.workload)
            self._take(mine)
        return True

    def _pool_key(self, target: str) -> str:
        module = module_of(target)
        if self.deps.registry.is_registered(self.workload) or self.deps.settings.warm_user_workloads:
            self.deps.pool.warm_up(module)
            return module
        return BASE

    async def _choose_checkpoint(self) -> Choice:
        self.spool.mkdir(parents=True, exist_ok=True)

        async def fetch(ref: CheckpointRef):
            return await self.deps.store.fetch(ref, self.spool / f"resume-{ref.iteration}-{ref.sha256[:12]}")

        choice = await choose(self.a.checkpoints, fetch)
        if choice.corrupt:
            self.log.warning("skipped corrupt checkpoints", corrupt=choice.reasons,
                             using=choice.ref.name if choice.ref else None)
        return choice

    async def _fetch_asset(self) -> Path:
        """The job's map in its spool directory, under the map's file name, digest-checked."""
        assert self.a.map_sha256 is not None
        dest = self.spool / "assets" / (self.a.map_filename or self.a.map_sha256)
        return await fetch_asset(self.deps.nc.jetstream(), self.deps.topology.map_bucket, self.a.map_sha256, dest)

    def _start(self, child: ChildProcess, target: str, choice: Choice, asset: Path | None = None) -> None:
        a = self.a
        resume = None
        if choice.ref is not None and choice.fetched is not None:
            resume = wire.Resume(path=str(choice.fetched.path), format=choice.fetched.format,
                                 iteration=choice.ref.iteration, name=choice.ref.name)
        self.child = child
        with span("stoker.job start", attributes={
                "stoker.job_id": a.job_id, "stoker.attempt": a.attempt, "stoker.workload": self.workload,
                "process.pid": child.pid}):
            self._trace = otel_context.get_current()
            child.send(wire.Start(
                **{**spec_fields(a), "workload": self.workload}, job_id=a.job_id, attempt=a.attempt,
                worker_id=self.deps.worker_id, target=target,
                registered=self.deps.registry.is_registered(self.workload), gpu_indices=a.gpu_indices,
                spool_dir=str(self.spool), resume=resume, asset_path=str(asset) if asset else None,
                progress_interval_s=self.deps.settings.progress_interval_s, traceparent=traceparent()))
        self._unreported_start = ReportJobStarted(job_id=a.job_id, attempt=a.attempt, worker_id=self.deps.worker_id,
                                                  resumed_from=choice.ref.iteration if choice.ref else None,
                                                  corrupt_checkpoints=tuple(choice.corrupt))
        self._started_at = time.monotonic()
        delay = self.deps.settings.started_report_delay_s
        if delay > 0:
            self._start_timer = asyncio.get_running_loop().call_later(delay, self._report_start)
        else:
            self._report_start()
        if self.stop_reason is not None:
            self.stop(self.stop_reason)  # asked while it was being prepared
        elif self.fenced:
            kill(child)

    def _take_start(self) -> ReportJobStarted | None:
        """The start report, if it has not gone out yet (it goes once: on its own, or with the end)."""
        start, self._unreported_start = self._unreported_start, None
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        if start is None:
            return None
        return msgspec.structs.replace(start, running_for_s=round(time.monotonic() - self._started_at, 6))

    def _report_start(self) -> None:
        """Send the start report now, ahead of anything reported after it."""
        start = self._take_start()
        if start is not None:
            self._report(start)

    async def _pump(self, child: ChildProcess) -> wire.Done | None:
        async for frame in child.frames():
            if isinstance(frame, wire.Progress):
                await self._progress(frame)
            elif isinstance(frame, wire.Episode):
                await self._episode(frame)
            elif isinstance(frame, wire.Saved):
                self._report_start()  # a checkpoint is reported after the start
                self._saving += 1
                self.outbox.then(lambda frame=frame: self._store_checkpoint(child, frame))
            elif isinstance(frame, wire.Done):
                return frame  # it exits on its own; waiting for its end of the socket would only add latency
        return None

    async def _progress(self, frame: wire.Progress) -> None:
        sample = JobProgress(job_id=self.a.job_id, attempt=self.a.attempt, worker_id=self.deps.worker_id,
                             iteration=max(0, frame.iteration), total=self.total, loss=frame.loss,
                             metrics=frame.metrics, at=at(frame.at))
        if self._trace is None:
            await self._publish("progress", encode(sample))
            return
        # The first report closes the job's trace (later ones would only make it long).
        parent, self._trace = self._trace, None
        with span("stoker.job progress", context=parent, kind=SpanKind.PRODUCER,
                  attributes={"stoker.iteration": sample.iteration}):
            await self._publish("progress", encode(sample), inject_trace({}))

    async def _episode(self, frame: wire.Episode) -> None:
        moves = frame.log
        while True:
            sample = EpisodeReport(job_id=self.a.job_id, attempt=self.a.attempt, episode=max(0, frame.episode),
                                   score=frame.score, figures=frame.figures, log=moves, at=at(frame.at))
            data = encode(sample)
            if len(data) <= MAX_SAMPLE_BYTES or not moves:
                break
            moves = moves[: len(moves) // 2]  # a sample over the stream's limit would be dropped whole
        await self._publish("episode", data)

    async def _publish(self, kind: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            subject = self.deps.topology.job_telemetry(kind, self.a.job_id, self.deps.worker_id)  # its own
            acked = await self.deps.telemetry.publish(subject, data, headers)
        except nats.errors.Error as exc:  # telemetry is disposable; the job goes on
            self.log.debug("telemetry sample dropped", kind=kind, error=repr(exc))
            return
        if acked is not None:
            self._last_sample = acked

    async def _store_checkpoint(self, child: ChildProcess, frame: wire.Saved) -> None:
        try:
            await self._store_and_report(child, frame)
        finally:
            self._saving -= 1

    async def _store_and_report(self, child: ChildProcess, frame: wire.Saved) -> None:
        name = checkpoint_name(self.a.job_id, self.a.attempt, frame.iteration)
        path = Path(frame.path)
        try:
            digest = await self.deps.store.upload(path, name, frame.format, self.deps.settings.upload_timeout_s)
        except (CheckpointUnavailable, OSError) as exc:
            self.log.error("checkpoint not stored", name=name, error=str(exc))
            child.send(wire.Ack(seq=frame.seq, ok=False, error=str(exc)))
            return
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # uploaded or not, the spool copy is done with
        if digest and digest != frame.sha256:
            self.log.warning("stored checkpoint digest differs from the child's", name=name)
        report = ReportJobCheckpointed(job_id=self.a.job_id, attempt=self.a.attempt, worker_id=self.deps.worker_id,
                                       iteration=frame.iteration, name=name, sha256=digest or frame.sha256,
                                       size=frame.size)
        await self._deliver(report)
        child.send(wire.Ack(seq=frame.seq, ok=True))

    def _report(self, report: JobReport) -> asyncio.Task[None]:
        return self.outbox.then(lambda: self._deliver(report))

    async def _deliver(self, report: JobReport) -> None:
        if self.fenced:
            return
        reply = await deliver(self.deps.nc, self.deps.topology, report, self.deps.settings.report_timeout_s,
                              cancelled=lambda: self.fenced)
        if reply is None or not reply.stop:
            return
        if not reply.accepted:
            self.fence(reply.reason or "stale attempt")
        elif not isinstance(report, ReportJobFinished):
            self.stop(reply.reason or "requested")

    async def _finish(self, ending: Ending) -> None:
        a = self.a
        self._finished = True
        self.on_release(self)
        if self.fenced:
            self.deps.attempts.forget(a.job_id, a.attempt)
            return
        report = ReportJobFinished(job_id=a.job_id, attempt=a.attempt, worker_id=self.deps.worker_id,
                                   outcome=ending.outcome, result=ending.result, error=ending.error[:16_000],
                                   traceback=ending.traceback[-16_000:], retryable=ending.retryable,
                                   started=self._take_start())
        self.deps.attempts.finish(report)
        started = time.monotonic()
        # The end must not overtake the last progress: whoever sees JobCompleted can read every sample.
        await self.deps.telemetry.stored(self._last_sample, self.deps.settings.report_timeout_s)
        if self._saving:
            await self._report(report)  # after the checkpoints it still stores and reports
        else:
            # Only the start report can still be in flight, and it went out first on this connection: send the
            # outcome right behind it instead of waiting for its reply (or it travels with the outcome).
            await self._deliver(report)
        await self.outbox.drain()
        self.deps.attempts.forget(a.job_id, a.attempt)
        level = self.log.debug if ending.outcome == "completed" else self.log.info
        level("attempt ended", outcome=ending.outcome, error=ending.error or None,
              report_s=round(time.monotonic() - started, 3))
