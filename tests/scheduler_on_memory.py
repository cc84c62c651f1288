"""The real scheduler (handlers, live board, committer) on the in-memory event log, with a clock of its own.

What discovery would append (worker events) is appended here by the test; what the scheduler
dispatches is kept by a MemoryDispatch. `settle` waits until every decision is on the log, folded
back, and no placement pass is due, so a test looks at a quiet board.

A test that puts the real handlers behind a transport of its own (one that drops a command's first
copy, say) passes another `log`: the same scheduler then decides on, and appends to, that log.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from contracts import events as ev
from contracts.base import Event
from eventstore.dispatch import MemoryDispatch
from eventstore.memory import MemoryLog
from eventstore.ports import EventLog
from eventstore.records import StoredEvent
from services.scheduler.board import JobBoard, apply_in_place, initial_state, record_version
from services.scheduler.handlers import Scheduler
from services.scheduler.live import LiveBoard
from services.scheduler.settings import SchedulerSettings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SETTLE_ROUNDS = 10_000


class MemoryScheduler:
    """A leading scheduler and everything it talks to, in this process."""

    def __init__(self, settings: SchedulerSettings | None = None, now: datetime = T0,
                 deterministic_ids: bool = True, log: EventLog | None = None) -> None:
        self.now = now
        self.log = log or MemoryLog(clock=lambda: self.now)
        self.dispatch = MemoryDispatch()
        self.board = LiveBoard(self.log, None)
        self._ids = 0
        extra = {"new_job_id": self._new_id} if deterministic_ids else {}
        self.scheduler = Scheduler(self.board, settings or SchedulerSettings(), self.dispatch,
                                   clock=lambda: self.now, **extra)
        self._committer: asyncio.Task | None = None

    def _new_id(self) -> str:
        self._ids += 1
        return f"j{self._ids}"

    async def __aenter__(self) -> MemoryScheduler:
        self._committer = asyncio.create_task(self.scheduler.committer.run())
        await self.board.start()
        await self.scheduler.lead()
        await self.settle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.scheduler.step_down()
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        await self.board.stop()

    @property
    def state(self) -> JobBoard:
        """The leader's live board."""
        return self.board.state

    async def settle(self) -> None:
        """Let the scheduler run until it is quiet: nothing queued, in flight, due, or unfolded."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
            if not self.scheduler.busy and self.board.quiet and self.board.position == await self.log.last_seq():
                await asyncio.sleep(0)
                if not self.scheduler.busy:
                    return
        raise AssertionError("the scheduler never settled")

    async def worker_event(self, event: ev.WorkerEvent) -> None:
        """Append a worker event as discovery would, and let the scheduler react."""
        await self.log.append("worker", event.worker_id, [event])
        await self.settle()

    async def tick(self, seconds: float) -> None:
        """Let time pass and run the scheduler's tick."""
        self.now += timedelta(seconds=seconds)
        self.scheduler.run_tick()
        await self.settle()

    async def place(self) -> list[Event]:
        """Run one placement pass; the events it appended."""
        before = await self.log.last_seq()
        self.scheduler.request_placement()
        await self.settle()
        return await self.events_since(before)

    async def events(self) -> list[StoredEvent]:
        """Every event on the log."""
        return [stored async for stored in self.log.read()]

    async def events_since(self, seq: int) -> list[Event]:
        """The events appended after `seq`."""
        return [stored.event async for stored in self.log.read(seq + 1)]

    async def replayed(self) -> JobBoard:
        """The board folded from the log alone, as a restarted scheduler would fold it."""
        state = initial_state()
        for stored in await self.events():
            apply_in_place(state, stored.event)
            record_version(state, stored.aggregate, stored.aggregate_id, stored.seq)
        return state
