"""The alerter's handlers: decide on the alert board, append each alert with its expected version, evolve.

Only the lease holder runs these, and it is the only writer of alert events, so the board is folded
from the log once when it takes over and then kept by evolving what it appends. Decisions are
serialised by a lock; a failed append folds the board again and decides again (eventstore.decision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from contracts import events as ev
from contracts.base import Event, new_id, utcnow
from contracts.commands import RestartStalledJob
from contracts.errors import DomainError
from contracts.telemetry import HostSample, JobProgress, WorkerHeartbeat
from eventstore.decision import Folded, run_decision
from eventstore.log import AppendError, ConcurrencyError
from eventstore.observability import get_logger
from eventstore.ports import EventLog
from eventstore.telemetry import trusted_sample
from services.monitor import domain, jobwatch
from services.monitor.notices import Notice, notices_of, reminder_notice

log = get_logger(component="monitor")


class Alerter:
    """The acting alerter: open alerts, what the rules are waiting on, running jobs and their progress."""

    def __init__(self, event_log: EventLog, rules: Sequence[domain.Rule], *, missing_after_s: float,
                 stall_after_s: float, clock: Callable[[], datetime] = utcnow,
                 notify: Callable[[Notice], None] | None = None,
                 restart: Callable[[RestartStalledJob], Awaitable[object]] | None = None) -> None:
        self.log, self.rules, self.clock = event_log, tuple(rules), clock
        self.missing_after_s, self.stall_after_s = missing_after_s, stall_after_s
        self.notify = notify or (lambda notice: None)
        self.restart = restart  # asks the scheduler to restart a stalled job (the monitor never appends job.*)
        self.facts: dict[str, jobwatch.JobFacts] = {}  # running jobs' specs and assignments, from their events
        self.pids: dict[str, int] = {}  # job id -> its process, from its worker's heartbeat
        self.asked: dict[str, datetime] = {}  # stall alert id -> when a restart was last asked for
        self.state = domain.initial_state()
        self.versions: dict[str, int] = {}
        self.watch = domain.Watch()
        self.running: dict[str, domain.RunningJob] = {}
        self.progress: dict[str, datetime] = {}  # job id -> its last progress sample's arrival
        self.heard: dict[str, datetime] = {}  # worker id -> its last heartbeat's arrival
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Fold every alert event in the log; hosts with open alerts count as heard now."""
        state, versions = domain.initial_state(), {}
        subjects = self.log.topology.events("alert", "*")
        if await self.log.has_events(subjects):
            async for msg in self.log.read_raw(1, filter_subject=subjects):
                where = self.log.topology.parse_event_subject(msg.subject)
                if where is not None:
                    versions[where[1]] = msg.metadata.sequence.stream
                stored = self.log.decode(msg)
                if stored is not None:
                    state = domain.evolve(state, stored.event)
        self.state, self.versions = state, versions
        now = self.clock()
        seen = {a.target: now for a in state.open.values() if a.target_kind == "host"}
        self.watch = domain.Watch(seen={**seen, **self.watch.seen}, pending=self.watch.pending,
                                  reminded=self.watch.reminded)

    async def sample(self, sample: HostSample) -> None:
        """A host's sample: rules raise and resolve; a silent host is back."""
        steps: list[domain.Step] = []

        def decide(state: domain.AlertBoard, now: datetime) -> list[Event]:
            jobs = jobwatch.jobs_on(sample.host_id, self.running, self.facts, self.pids)
            steps.append(domain.decide_sample(state, self.watch, sample, self.rules, now, new_id, jobs))
            return steps[-1].events

        if await self._run(decide) and steps:  # when the append failed, the same breach is decided again
            self.watch = steps[-1].watch
            for reminder in steps[-1].reminders:
                log.warning("alert still open", alert_id=reminder.alert_id, rule=reminder.rule,
                            target=reminder.target, value=reminder.value)
                self.notify(reminder_notice(reminder, self.clock()))

    async def heartbeat(self, beat: WorkerHeartbeat) -> None:
        """A worker says which jobs it runs now (a job seen for the first time: its facts from its events)."""
        now = self.clock()
        self.heard[beat.worker_id] = now
        before = self.running
        self.running = jobwatch.track_running(self.running, beat.worker_id, beat.running, now)
        self.pids.update({j: p for j, p in beat.pids.items() if j in beat.running})
        for job_id in beat.running:
            if job_id not in self.facts or before.get(job_id) != self.running.get(job_id):
                await self._learn(job_id)

    async def _learn(self, job_id: str) -> jobwatch.JobFacts | None:
        """Read one job's facts from its events (kept until it stops running)."""
        try:
            stored, _version = await self.log.load("job", job_id)
        except Exception as exc:  # the log is unreachable: the job's rules use the defaults meanwhile
            log.warning("could not read a running job's events", job_id=job_id, error=str(exc))
            return self.facts.get(job_id)
        facts = jobwatch.job_facts(job_id, (s.event for s in stored))
        if facts is not None:
            self.facts[job_id] = facts
        return facts

    def job_progress(self, sample: JobProgress, worker_id: str) -> None:
        """A job made progress, as `worker_id` (its subject's last token) says: believed only from the worker
        the job's events assigned it to (anyone else's sample would hide a stall)."""
        facts = self.facts.get(sample.job_id)
        if facts is None or not trusted_sample(worker_id, (facts.worker_id,) if facts.worker_id else ()):
            return
        self.progress[sample.job_id] = self.clock()

    async def tick(self) -> None:
        """Silent hosts, stalled jobs, stalls that ended, stalled jobs due a restart."""
        now = self.clock()
        self.running = jobwatch.forget_silent_workers(self.running, self.heard, now, self.missing_after_s)
        self.progress = {j: t for j, t in self.progress.items() if j in self.running}
        self.facts = {j: f for j, f in self.facts.items() if j in self.running}
        self.pids = {j: p for j, p in self.pids.items() if j in self.running}
        periods = jobwatch.stall_periods(self.facts)
        await self._run(lambda state, now: [
            *domain.decide_silence(state, self.watch, now, self.missing_after_s, new_id),
            *domain.decide_stalls(state, self.running, self.progress, now, self.stall_after_s, new_id, periods)])
        opened = {a.alert_id for a in self.state.open.values()}
        self.asked = {a: t for a, t in self.asked.items() if a in opened}
        if self.restart is not None:
            for stalled in jobwatch.due_restarts(self.state, self.running, self.facts, now, self.stall_after_s,
                                                 self.asked):
                await self._restart(stalled, now)

    async def _restart(self, stalled: domain.OpenAlert, now: datetime) -> None:
        """Ask the scheduler to restart a stalled job; once it has, the stall resolves and a new period begins."""
        assert self.restart is not None
        self.asked[stalled.alert_id] = now
        facts = await self._learn(stalled.target)  # the attempt running now
        running = self.running.get(stalled.target)
        if facts is None or running is None:
            return
        command = RestartStalledJob(job_id=stalled.target, attempt=facts.attempt, worker_id=running.worker_id,
                                    alert_id=stalled.alert_id)
        try:
            await self.restart(command)
        except DomainError as exc:
            log.warning("the scheduler did not restart a stalled job", job_id=stalled.target, error=exc.message)
            return
        log.warning("restarted a stalled job", job_id=stalled.target, attempt=facts.attempt)
        self.running[stalled.target] = domain.RunningJob(worker_id=running.worker_id, since=self.clock())
        self.progress.pop(stalled.target, None)
        self.asked.pop(stalled.alert_id, None)
        await self._run(lambda state, now: [
            ev.AlertResolved(alert_id=stalled.alert_id, reason="restarted", resolved_at=now)
            for a in state.open.values() if a.alert_id == stalled.alert_id])

    async def _run(self, decide: Callable[[domain.AlertBoard, datetime], list[Event]]) -> bool:
        async with self._lock:
            before = {a.alert_id: a for a in self.state.open.values()}
            try:
                decided = await run_decision(self.log, "alert", lambda state: decide(state, self.clock()),
                                             domain.evolve, load=self._reload,
                                             start=Folded(self.state, self.versions), atomic=False,
                                             retry_on=(ConcurrencyError, AppendError))
            except (ConcurrencyError, AppendError) as exc:
                log.warning("could not record alerts (log unavailable); deciding again later", error=str(exc))
                return False
            self.state, self.versions = decided.folded.state, dict(decided.folded.versions)
        for notice in notices_of(decided.events, before):
            self.notify(notice)
        for event in decided.events:
            log.warning(type(event).__name__, alert_id=event.aggregate_id,
                        **{f: getattr(event, f) for f in ("rule", "target", "job_id", "value", "reason")
                           if hasattr(event, f)})
        return True

    async def _reload(self) -> Folded[domain.AlertBoard]:
        await self.load()
        return Folded(self.state, self.versions)

