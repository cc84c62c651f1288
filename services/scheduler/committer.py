"""Group commit of the leader's decisions into the event log.

Decisions are applied to the in-memory board at once and queued here; a writer sends them in the
order they were decided, several flushes in flight at a time, except that events of a job waiting for
that job's earlier append do not hold back other jobs' (each aggregate's events stay in order). A
flush is one atomic batch when many events wait (an atomic batch costs a fixed few ms of server time
but little per event), or else one append per event, those of different jobs in flight together
(about 1 ms each): the system is fast when idle and its throughput grows with load. An event waits while an earlier
event of the same job is in flight: it needs that event's sequence as its expected version.
A failed append fails its flush and everything still queued; the caller rebuilds the board.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from opentelemetry import context as otel_context

from contracts.base import Event
from eventstore.log import MAX_BATCH, PendingAppend
from eventstore.observability import get_logger
from eventstore.ports import EventLog

log = get_logger(component="committer")


class CommitFailed(Exception):
    """The events were not (or not surely) appended; the decision must be made again on a rebuilt board."""


class _Item:
    __slots__ = ("aggregate_id", "events", "future", "ids", "trace")

    def __init__(self, aggregate_id: str, events: Sequence[Event], ids: Sequence[str],
                 future: asyncio.Future[int]) -> None:
        self.aggregate_id, self.events, self.ids, self.future = aggregate_id, events, ids, future
        self.trace = otel_context.get_current()  # the decision's trace: its append continues it


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # nobody may await a failed placement; don't warn about it


def _takeable(queue: Sequence[_Item], busy: dict[str, int], limit: int) -> tuple[list[int], int]:
    """Positions of the queued items that may go now (up to `limit` events), and how many events they hold."""
    chosen: list[int] = []
    waiting: set[str] = set()
    count = 0
    for index, item in enumerate(queue):
        if item.aggregate_id in busy or item.aggregate_id in waiting:
            waiting.add(item.aggregate_id)  # nothing of this aggregate may overtake its item in flight
            continue
        if count + len(item.events) > limit:
            break
        chosen.append(index)
        count += len(item.events)
    return chosen, count


def _one_per_aggregate(queue: Sequence[_Item], chosen: list[int]) -> list[int]:
    """The first chosen item of each aggregate (a later one needs the version the first one's append gives)."""
    seen: set[str] = set()
    out = []
    for index in chosen:
        aggregate_id = queue[index].aggregate_id
        if aggregate_id not in seen:
            seen.add(aggregate_id)
            out.append(index)
    return out


class Committer:
    """Appends queued decisions of one aggregate type, in order, with expected versions."""

    def __init__(self, event_log: EventLog, *, aggregate: str = "job", batch_min_events: int = 16,
                 max_in_flight: int = 8, on_versions: Callable[[dict[str, int]], None] = lambda v: None,
                 on_failure: Callable[[BaseException], None] = lambda e: None) -> None:
        self._log, self._aggregate = event_log, aggregate
        self._batch_min, self._max_in_flight = batch_min_events, max_in_flight
        self._on_versions, self._on_failure = on_versions, on_failure
        self._queue: deque[_Item] = deque()
        self._versions: dict[str, int] = {}  # aggregates with items queued or in flight: their version
        self._items: dict[str, int] = {}  # how many items of each such aggregate there are
        self._busy: dict[str, int] = {}  # how many of them are in flight
        self._last: dict[str, asyncio.Future[int]] = {}
        self._flights: dict[asyncio.Task, list[_Item]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_seq = 0  # highest stream sequence this committer wrote

    def enqueue(self, aggregate_id: str, events: Sequence[Event], ids: Sequence[str],
                version: int) -> asyncio.Future[int]:
        """Queue events of one aggregate (atomic together); the future gives the last one's sequence."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self._versions.setdefault(aggregate_id, version)
        self._items[aggregate_id] = self._items.get(aggregate_id, 0) + 1
        self._last[aggregate_id] = future
        self._queue.append(_Item(aggregate_id, events, ids, future))
        self._idle.clear()
        self._wake.set()
        return future

    def pending_for(self, aggregate_id: str) -> asyncio.Future[int] | None:
        """The future of the aggregate's last queued item, if any is still on its way."""
        return self._last.get(aggregate_id)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return self._idle.is_set()

    async def drained(self) -> None:
        """Wait until nothing is queued or in flight."""
        await self._idle.wait()

    async def run(self) -> None:
        """Send queued decisions forever; on cancellation, fail whatever has not landed."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while len(self._flights) < self._max_in_flight:
                    items, batch = self._take()
                    if not items:
                        break
                    flight = asyncio.create_task(self._write(items, batch))
                    self._flights[flight] = items
                    flight.add_done_callback(self._landed)
                    await asyncio.sleep(0)  # it puts its messages on the wire before the next flush is taken
                if not self._queue and not self._flights:
                    self._idle.set()
        finally:
            for flight in self._flights:
                flight.cancel()
            stranded = [i for items in self._flights.values() for i in items]
            self._fail([*stranded, *self._queue], CommitFailed("the scheduler is stopping"), report=False)
            self._queue.clear()

    def _take(self) -> tuple[list[_Item], bool]:
        """What to send next, in decided order: every item but those of a job with an item in flight (and
        whatever of that job follows them: each needs the one before's version), so that one job waiting on
        its own append (a short job's start, then its end) holds back no other job's (the next job's
        assignment, which its worker's confirmation waits for)."""
        chosen, count = _takeable(self._queue, self._busy, MAX_BATCH)
        batch = count >= self._batch_min
        if not batch:
            chosen = _one_per_aggregate(self._queue, chosen)  # only one item per job can fly as a single append
        picked = set(chosen)
        items = [self._queue[index] for index in chosen]
        self._queue = deque(item for index, item in enumerate(self._queue) if index not in picked)
        for item in items:
            self._busy[item.aggregate_id] = self._busy.get(item.aggregate_id, 0) + 1
        return items, batch

    def _landed(self, flight: asyncio.Task) -> None:
        for item in self._flights.pop(flight, ()):
            left = self._busy.get(item.aggregate_id, 0) - 1
            if left > 0:
                self._busy[item.aggregate_id] = left
            else:
                self._busy.pop(item.aggregate_id, None)
        self._wake.set()

    async def _write(self, items: list[_Item], batch: bool) -> None:
        try:
            if batch:
                await self._append_batch(items)
                return
            results = await asyncio.gather(*(self._append_one(i) for i in items), return_exceptions=True)
        except Exception as exc:
            results = [exc]
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            self._fail([*items, *self._queue], errors[0])
            self._queue.clear()

    async def _append_one(self, item: _Item) -> None:
        pending = PendingAppend(self._aggregate, item.aggregate_id, item.events, self._versions[item.aggregate_id],
                                item.trace)
        result = await self._log.append_batch([pending], event_ids=item.ids)
        self._acked(result.versions, result.last_seq)
        self._settle(item, result.last_seq)

    async def _append_batch(self, items: list[_Item]) -> None:
        appends, guarded = [], set()
        for item in items:
            version = None if item.aggregate_id in guarded else self._versions[item.aggregate_id]
            guarded.add(item.aggregate_id)
            appends.append(PendingAppend(self._aggregate, item.aggregate_id, item.events, version, item.trace))
        result = await self._log.append_batch(appends, event_ids=[i for item in items for i in item.ids])
        self._acked(result.versions, result.last_seq)
        remaining = sum(len(i.events) for i in items)
        for item in items:
            remaining -= len(item.events)
            self._settle(item, result.last_seq - remaining)

    def _acked(self, versions: dict[str, int], last_seq: int) -> None:
        prefix = f"{self._aggregate}."
        for key, version in versions.items():
            aggregate_id = key.removeprefix(prefix)
            if aggregate_id in self._versions:
                self._versions[aggregate_id] = version
        self.last_seq = max(self.last_seq, last_seq)
        self._on_versions(versions)

    def _settle(self, item: _Item, seq: int, exc: BaseException | None = None) -> None:
        if item.future.done():
            return
        left = self._items.get(item.aggregate_id, 0) - 1
        if left > 0:
            self._items[item.aggregate_id] = left
        else:
            for book in (self._items, self._versions, self._last):
                book.pop(item.aggregate_id, None)
        if exc is None:
            item.future.set_result(seq)
        else:
            item.future.set_exception(exc)

    def _fail(self, items: list[_Item], exc: BaseException, report: bool = True) -> None:
        failed = [i for i in items if not i.future.done()]
        if not failed:
            return
        log.error("append failed; the board will be rebuilt from the log", error=repr(exc), items=len(failed))
        for item in failed:
            self._settle(item, 0, CommitFailed(f"append failed: {exc!r}"))
        if report:
            self._on_failure(exc)
