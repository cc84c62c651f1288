"""Discovery's handlers: decide on the registry, append with the worker's expected version, evolve, reply.

Only the lease holder runs these, and it is the only writer of worker events, so the registry is
folded from the log once when it takes over and then kept by evolving what it appends. Decisions
are serialised (registrations and state changes are rare; plain heartbeats take no lock). A
failed append re-folds the registry from the log and decides again (eventstore.decision).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from contracts.base import Event, utcnow
from contracts.commands import DeregisterWorker, RegisterWorker, WorkerAccepted
from contracts.errors import Unavailable
from contracts.telemetry import WorkerHeartbeat
from eventstore.decision import Folded, run_decision
from eventstore.log import AppendError, ConcurrencyError
from eventstore.observability import get_logger
from eventstore.ports import EventLog
from services.discovery import domain

log = get_logger(component="discovery")


class Discovery:
    """The acting discovery: registry, versions and heartbeat times of every known worker."""

    def __init__(self, event_log: EventLog, timing: domain.Timing,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.log, self.timing, self.clock = event_log, timing, clock
        self.state = domain.initial_state()
        self.versions: dict[str, int] = {}  # worker id -> stream sequence of its last event
        self.seen: dict[str, datetime] = {}  # worker id -> when its last heartbeat (or registration) came
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Fold every worker event in the log; healthy workers get `lost_after_s` from now to be heard."""
        state, versions = domain.initial_state(), {}
        subjects = self.log.topology.events("worker", "*")
        if await self.log.has_events(subjects):
            async for msg in self.log.read_raw(1, filter_subject=subjects):
                where = self.log.topology.parse_event_subject(msg.subject)
                if where is not None:  # a malformed message moves the version too: appends must expect it
                    versions[where[1]] = msg.metadata.sequence.stream
                stored = self.log.decode(msg)
                if stored is not None:
                    state = domain.evolve(state, stored.event)
        self.state, self.versions = state, versions
        self.seen = domain.seed_seen(state, self.seen, self.clock())

    async def register(self, command: RegisterWorker) -> WorkerAccepted:
        """A worker joins (again): record it healthy with its capabilities."""
        seq = await self._run(lambda state, now: domain.decide(command, state, now))
        self.seen[command.worker_id] = self.clock()
        return WorkerAccepted(worker_id=command.worker_id, status="draining" if command.draining else "healthy",
                              seq=seq)

    async def deregister(self, command: DeregisterWorker) -> WorkerAccepted:
        """A worker leaves on purpose."""
        seq = await self._run(lambda state, now: domain.decide(command, state, now))
        self.seen.pop(command.worker_id, None)
        return WorkerAccepted(worker_id=command.worker_id, status="left", seq=seq)

    async def heartbeat(self, beat: WorkerHeartbeat) -> None:
        """A worker is alive; a lost one comes back."""
        now = self.clock()
        record = self.state.workers.get(beat.worker_id)
        if record is None:
            return  # never registered (or forgotten): it registers again when its commands fail
        self.seen[beat.worker_id] = now
        if record.status == "lost":
            await self._run(lambda state, now: domain.decide_heartbeat(state, beat.worker_id, now))

    async def tick(self) -> None:
        """Declare silent workers lost and long-gone ones forgotten."""
        self.seen = domain.seed_seen(self.state, self.seen, self.clock())
        await self._run(lambda state, now: domain.decide_tick(state, self.seen, now, self.timing))

    async def _run(self, decide: Callable[[domain.Registry, datetime], list[Event]]) -> int:
        async with self._lock:
            try:
                # One append per worker, in order: each with that worker's version as the expected one.
                decided = await run_decision(self.log, "worker", lambda state: decide(state, self.clock()),
                                             domain.evolve, load=self._reload,
                                             start=Folded(self.state, self.versions), atomic=False,
                                             retry_on=(ConcurrencyError, AppendError))
            except (ConcurrencyError, AppendError):
                raise Unavailable("discovery could not record the change (log unavailable); try again") from None
            self.state, self.versions = decided.folded.state, dict(decided.folded.versions)
        for event in decided.events:
            log.info(type(event).__name__, worker_id=event.aggregate_id, seq=self.versions[event.aggregate_id])
        return decided.last_seq

    async def _reload(self) -> Folded[domain.Registry]:
        await self.load()
        return Folded(self.state, self.versions)
