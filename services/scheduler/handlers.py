"""The scheduler's handlers: decide on the live board, apply, append (group commit) and dispatch, reply.

The board lives in memory (`LiveBoard`): commands never reload it. A decision is applied to the
board at once, so the next command already sees it, and queued for the log with each job's expected
version. A failed append (another writer, a lost connection) fails every queued decision; the board
is rebuilt from the log and each command is decided again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from contracts import events as ev
from contracts.base import Event, new_id, utcnow
from contracts.codec import encode
from contracts.commands import (
    AssignmentConfirmed,
    ConfirmAssignment,
    JobAccepted,
    JobReport,
    JobsStopping,
    ReportAccepted,
    ReportJobFinished,
    RestartStalledJob,
    StalledJobRestarted,
    StopJob,
    SubmitJob,
)
from contracts.dispatch import Assignment, DispatchMessage
from contracts.errors import InvalidCommand, Unavailable, UnknownWorkload
from contracts.subjects import MAX_EVENT_BYTES, Topology
from eventstore.dispatch import DispatchPublisher
from eventstore.log import StoredEvent
from eventstore.observability import context_of, get_logger, span, traceparent
from services.scheduler import domain
from services.scheduler.board import record_version
from services.scheduler.committer import CommitFailed, Committer
from services.scheduler.live import LiveBoard
from services.scheduler.settings import SchedulerSettings

log = get_logger(component="scheduler")
FREES_CAPACITY = (ev.JobCompleted, ev.JobFailed, ev.JobStopped, ev.JobRequeued, ev.JobTimedOut)
CARRIES_USER_DATA = (ev.JobSubmitted, ev.JobCompleted, ev.JobFailed)  # the only events that can be large
DECISION_TRIES = 3


class Scheduler:
    """The leader's loop body: commands, reactions, placement passes and ticks on one live board."""

    def __init__(self, board: LiveBoard, settings: SchedulerSettings, dispatch: DispatchPublisher, *,
                 clock: Callable[[], datetime] = utcnow, new_job_id: Callable[[], str] = new_id) -> None:
        self.board, self.settings, self.dispatch = board, settings, dispatch
        self.clock, self.new_job_id = clock, new_job_id
        self.topology: Topology = board.log.topology
        self.policy = domain.RetryPolicy(base_s=settings.retry_backoff_s, max_s=settings.retry_backoff_max_s)
        self.committer = Committer(board.log, batch_min_events=settings.batch_min_events,
                                   max_in_flight=settings.max_in_flight,
                                   on_versions=self._on_versions, on_failure=self._on_commit_failure)
        self.leading = False
        self.ready = asyncio.Event()  # leading and not paused: decisions may be made
        self.failed = asyncio.Event()  # an append failed: the adapter rebuilds the board and leads again
        self._placement_due = False
        self._tasks: set[asyncio.Task] = set()
        board.on_foreign = self._on_foreign

    # -- commands -------------------------------------------------------------------------------

    async def submit(self, command: SubmitJob) -> JobAccepted:
        """Queue a job (placing it at once when a slot is free); the same idempotency key gives the same job."""
        async def once() -> JobAccepted:
            parent = traceparent()
            try:
                events = domain.decide(command, self.board.state, self.clock(), policy=self.policy,
                                       new_job_id=self.new_job_id, traceparent=parent)
            except UnknownWorkload:
                await self._fold_all()  # refuse only on a board that knows every worker registered so far
                events = domain.decide(command, self.board.state, self.clock(), policy=self.policy,
                                       new_job_id=self.new_job_id, traceparent=parent)
            if not events:
                job_id = self.board.state.idempotency[command.idempotency_key or ""]
                await self._settled(job_id)
                return JobAccepted(job_id=job_id, created=False)
            futures = self._commit(events)
            return JobAccepted(job_id=events[0].job_id, created=True, seq=await futures[0])
        return await self._retrying(once)

    async def stop(self, command: StopJob) -> JobsStopping:
        """Ask one job, or every unfinished job (of a kind), to stop."""
        async def once() -> JobsStopping:
            events = domain.decide(command, self.board.state, self.clock())
            await asyncio.gather(*self._commit(events))
            if command.job_id is not None:
                await self._settled(command.job_id)
                return JobsStopping(job_ids=[command.job_id])
            return JobsStopping(job_ids=[e.job_id for e in events if isinstance(e, ev.JobStopRequested)])
        return await self._retrying(once)

    async def restart(self, command: RestartStalledJob) -> StalledJobRestarted:
        """Requeue a stalled attempt (the monitor's request), then tell its worker to end it."""
        async def once() -> StalledJobRestarted:
            events = domain.decide(command, self.board.state, self.clock())
            futures = self._commit(events)
            self._spawn(self._dispatch_after(futures[0], domain.stalled_stop(command)))
            await asyncio.gather(*futures)
            return StalledJobRestarted(job_id=command.job_id, attempt=command.attempt + 1)
        return await self._retrying(once)

    async def report(self, command: JobReport) -> ReportAccepted:
        """Record a worker's report of its attempt; a stale attempt is told to stop (fencing)."""
        if isinstance(command, ReportJobFinished) and command.outcome == "interrupted":
            await self._fold_all()  # the worker said it is draining before it sent this: place knowing that

        async def once() -> ReportAccepted:
            try:
                events = domain.decide(command, self.board.state, self.clock(), policy=self.policy)
            except domain.StaleAttempt as exc:
                return ReportAccepted(accepted=False, stop=True, reason=exc.message)
            futures = self._commit(events)
            reply = domain.report_reply(command, self.board.state)  # as of this decision, not later ones
            await asyncio.gather(*futures)
            await self._settled(command.job_id)
            return reply
        return await self._retrying(once)

    async def confirm(self, command: ConfirmAssignment) -> AssignmentConfirmed:
        """Tell a worker whether an assignment it got is its own, before it loads anything of the job (fencing)."""
        async def once() -> AssignmentConfirmed:
            await self._settled(command.job_id)  # answer from the log: an assignment still being appended is not yet
            return domain.confirmation(command, self.board.state)
        return await self._retrying(once)

    async def _retrying(self, once):
        for _ in range(DECISION_TRIES):
            await self._wait_ready()
            try:
                return await once()
            except CommitFailed:
                continue
        raise Unavailable("the scheduler could not record the decision (log unavailable); try again")

    async def _fold_all(self) -> None:
        """Fold what the log holds now (a little while at most: deciding late beats not deciding)."""
        try:
            await self.board.catch_up(timeout=self.settings.command_wait_s)
        except Exception as exc:
            log.warning("board not caught up with the log; deciding anyway", error=repr(exc))

    async def _wait_ready(self) -> None:
        if self.ready.is_set():
            return  # the common case: no timer task to create
        try:
            await asyncio.wait_for(self.ready.wait(), self.settings.command_wait_s)
        except TimeoutError:
            raise Unavailable("this scheduler is not leading right now; try again") from None

    async def _settled(self, job_id: str) -> None:
        pending = self.committer.pending_for(job_id)
        if pending is not None:
            await pending

    # -- applying decisions ---------------------------------------------------------------------

    def _commit(self, events: Sequence[Event]) -> list[asyncio.Future[int]]:
        """Apply events to the board now and queue them for the log; dispatch follows each append."""
        if not events:
            return []
        for event in events:
            if isinstance(event, CARRIES_USER_DATA) and len(encode(event)) > MAX_EVENT_BYTES - 4096:
                raise InvalidCommand(f"{type(event).__name__} would be over {MAX_EVENT_BYTES - 4096} bytes; "
                                     "keep params and results small (store large data as a blob)")
        state, futures = self.board.state, []
        for group in domain.atomic_groups(events):
            versions = {e.job_id: state.jobs[e.job_id].version if e.job_id in state.jobs else 0 for e in group}
            ids = self.board.apply_own(group)
            messages = [m for m in (domain.dispatch_for(state, e) for e in group) if m is not None]
            future = self.committer.enqueue(group[0].job_id, group, ids, versions[group[0].job_id])
            futures.append(future)
            for message in messages:
                if isinstance(message, Assignment):
                    # On its way while JobAssigned is appended: the worker's confirmation waits for the append
                    # (confirm), so nothing of it runs unless the assignment is on the log.
                    self._spawn(self.publish(message))
                else:
                    self._spawn(self._dispatch_after(future, message))
        if any(isinstance(e, FREES_CAPACITY) for e in events):
            self.request_placement()
        return futures

    def _on_versions(self, versions: dict[str, int]) -> None:
        state = self.board.state
        for key, version in versions.items():
            aggregate, _, aggregate_id = key.partition(".")
            record_version(state, aggregate, aggregate_id, version)

    def _on_commit_failure(self, exc: BaseException) -> None:
        self.step_down()
        self.failed.set()

    # -- dispatch -------------------------------------------------------------------------------

    async def _dispatch_after(self, appended: asyncio.Future[int], message: DispatchMessage) -> None:
        try:
            await appended
        except CommitFailed:
            return  # not on the log: nothing to tell the worker (a rebuild re-publishes what is)
        await self.publish(message)

    async def publish(self, message: DispatchMessage) -> None:
        """Hand one message to its worker's dispatch queue (the port retries; the message id dedups repeats).

        An assignment continues the job's submission trace, whichever command or pass decided it (a
        scheduler's current span may be another command's); a stop continues the trace that asked for it.
        """
        verb = "assign" if isinstance(message, Assignment) else "stop"
        parent = None
        if isinstance(message, Assignment):
            job = self.board.state.jobs.get(message.job_id)
            parent = context_of(job.traceparent if job else "") or Context()
        attributes = {"stoker.job_id": message.job_id, "stoker.worker_id": message.worker_id}
        with span(f"stoker.dispatch {verb}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes):
            await self.dispatch.publish(message)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- reactions, placement, time -------------------------------------------------------------

    def _on_foreign(self, stored: StoredEvent) -> None:
        if not self.ready.is_set():
            return  # a standby only folds; the leader reconciles on taking over (see lead)
        if stored.aggregate == "job":
            log.warning("job event from another writer", job_id=stored.aggregate_id, type=stored.type)
        self._commit(domain.on_worker_event(self.board.state, stored.event, self.clock()))
        self.request_placement()

    def request_placement(self) -> None:
        """Run a placement pass soon (once, however often it is asked for before it runs)."""
        if not self._placement_due:
            self._placement_due = True
            asyncio.get_running_loop().call_soon(self._place_now)

    def _place_now(self) -> None:
        self._placement_due = False
        if self.ready.is_set():
            self._commit(domain.assign(self.board.state, self.clock()))

    def run_tick(self) -> None:
        """Time passes: timeouts, orphaned attempts, retries whose backoff is over."""
        if self.ready.is_set():
            self._commit(domain.tick(self.board.state, self.clock()))
            self.request_placement()

    # -- leadership -----------------------------------------------------------------------------

    async def lead(self) -> None:
        """Take over: fold the whole log, reconcile, re-publish unstarted assignments, place."""
        await self.board.catch_up()
        self.failed.clear()
        self.leading = True
        self.ready.set()
        self.run_tick()
        for assignment in domain.unstarted_assignments(self.board.state):
            self._spawn(self.publish(assignment))

    def step_down(self) -> None:
        """Stop deciding (lease lost, append failed, shutting down)."""
        self.leading = False
        self.ready.clear()

    async def quiesce(self, timeout: float = 10.0) -> bool:
        """Pause decisions until everything decided is on the log and folded back; True when quiet."""
        self.ready.clear()
        try:
            await asyncio.wait_for(self.committer.drained(), timeout)
            await self.board.wait_position(self.committer.last_seq, timeout)
        except TimeoutError:
            return False
        return self.board.quiet

    async def snapshot_if_due(self) -> None:
        """Write a snapshot when `snapshot_every` events were folded since the last one."""
        if self.board.position - self.board.snapshot_seq < self.settings.snapshot_every:
            return
        try:
            if await self.quiesce():
                await self.board.save_snapshot()
        except Exception:
            log.exception("snapshot failed; trying again after snapshot_every more events")
            self.board.snapshot_seq = self.board.position  # don't pause every tick for a failing store
        finally:
            if self.leading:
                self.ready.set()
                self.run_tick()  # reactions skipped during the pause are caught up here

    @property
    def busy(self) -> bool:
        """Decisions queued or in flight, a placement pass due, or dispatches on their way."""
        return self._placement_due or bool(self._tasks) or not self.committer.idle

    async def drain_dispatch(self, timeout: float = 5.0) -> None:
        """Wait (a while) for in-flight dispatch publishes."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

