"""The alerter's handlers: decide on the alert board, append each alert with its expected version, evolve.

Only the lease holder runs these, and it is the only writer of alert events, so the board is folded
from the log once when it takes over and then kept by evolving what it appends. Decisions are
serialised by a lock; a failed append folds the board again and decides again (eventstore.decision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from contracts.base import Event, new_id, utcnow
from contracts.telemetry import HostSample, JobProgress, WorkerHeartbeat
from eventstore.decision import Folded, run_decision
from eventstore.log import AppendError, ConcurrencyError
from eventstore.observability import get_logger
from eventstore.ports import EventLog
from services.monitor import domain
from services.monitor.notices import Notice, notices_of, reminder_notice

log = get_logger(component="monitor")


class Alerter:
    """The acting alerter: open alerts, what the rules are waiting on, running jobs and their progress."""

    def __init__(self, event_log: EventLog, rules: Sequence[domain.Rule], *, missing_after_s: float,
                 stall_after_s: float, clock: Callable[[], datetime] = utcnow,
                 notify: Callable[[Notice], None] | None = None) -> None:
        self.log, self.rules, self.clock = event_log, tuple(rules), clock
        self.missing_after_s, self.stall_after_s = missing_after_s, stall_after_s
        self.notify = notify or (lambda notice: None)
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
        seen = {a.target: now for a in state.open.values() if a.rule != domain.STALL_RULE}
        self.watch = domain.Watch(seen={**seen, **self.watch.seen}, pending=self.watch.pending,
                                  reminded=self.watch.reminded)

    async def sample(self, sample: HostSample) -> None:
        """A host's sample: rules raise and resolve; a silent host is back."""
        steps: list[domain.Step] = []

        def decide(state: domain.AlertBoard, now: datetime) -> list[Event]:
            steps.append(domain.decide_sample(state, self.watch, sample, self.rules, now, new_id))
            return steps[-1].events

        if await self._run(decide) and steps:  # when the append failed, the same breach is decided again
            self.watch = steps[-1].watch
            for reminder in steps[-1].reminders:
                log.warning("alert still open", alert_id=reminder.alert_id, rule=reminder.rule,
                            target=reminder.target, value=reminder.value)
                self.notify(reminder_notice(reminder, self.clock()))

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        """A worker says which jobs it runs now."""
        now = self.clock()
        self.heard[beat.worker_id] = now
        self.running = domain.track_running(self.running, beat.worker_id, beat.running, now)

    def job_progress(self, sample: JobProgress) -> None:
        """A job made progress."""
        self.progress[sample.job_id] = self.clock()

    async def tick(self) -> None:
        """Silent hosts, stalled jobs, stalls that ended."""
        now = self.clock()
        self.running = domain.forget_silent_workers(self.running, self.heard, now, self.missing_after_s)
        self.progress = {j: t for j, t in self.progress.items() if j in self.running}
        await self._run(lambda state, now: [
            *domain.decide_silence(state, self.watch, now, self.missing_after_s, new_id),
            *domain.decide_stalls(state, self.running, self.progress, now, self.stall_after_s, new_id)])

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

