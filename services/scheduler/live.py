"""The board kept live: a snapshot, the log's tail, then every new event as it is appended.

The leader applies its own decisions at once (`apply_own`) and records their event ids; when the
log hands those events back they are only counted, not applied twice. Everything else on the log
(worker events, job events from another writer) is folded as it arrives and reported to
`on_foreign`, which is how the leader reacts to lost workers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from contracts.base import Event, uuid7
from eventstore.follow import cancel_and_wait, follow_forever
from eventstore.log import MSG_ID, StoredEvent
from eventstore.observability import get_logger
from eventstore.ports import EventLog, RawMessage
from services.scheduler.board import JobBoard, apply_in_place, initial_state, record_version
from services.scheduler.snapshot import SnapshotStore

log = get_logger(component="scheduler-board")


class LiveBoard:
    """The scheduler's state as a fold of the log, following it live."""

    def __init__(self, event_log: EventLog, snapshots: SnapshotStore[JobBoard] | None,
                 on_foreign: Callable[[StoredEvent], None] = lambda stored: None) -> None:
        self.log, self.snapshots, self.on_foreign = event_log, snapshots, on_foreign
        self.state = initial_state()
        self.position = 0  # stream sequence of the last event folded (or seen back)
        self.snapshot_seq = 0
        self.own: set[str] = set()  # ids of events applied by apply_own, not yet seen on the log
        self._moved = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Load the snapshot (if any) and follow the log from just after it."""
        loaded = await self.snapshots.load() if self.snapshots is not None else None
        self.state, self.position = (loaded[1], loaded[0]) if loaded else (initial_state(), 0)
        self.snapshot_seq = self.position
        self.own.clear()
        self._task = asyncio.create_task(self._follow(), name="scheduler-follow")
        log.info("board loaded", snapshot_seq=self.snapshot_seq, jobs=len(self.state.jobs))

    async def stop(self) -> None:
        """Stop following the log."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    async def rebuild(self) -> None:
        """Throw the board away and fold it again from the snapshot and the log."""
        await self.stop()
        await self.start()

    def apply_own(self, events: Sequence[Event]) -> list[str]:
        """Apply decided events now; returns the event ids to append them with."""
        ids = [uuid7() for _ in events]
        for event in events:
            apply_in_place(self.state, event)
        self.own.update(ids)
        return ids

    @property
    def quiet(self) -> bool:
        """Every event applied here is on the log and was seen back: the board is the fold up to `position`."""
        return not self.own

    async def wait_position(self, seq: int, timeout: float = 30.0) -> None:
        """Wait until the board has folded the log up to `seq`."""
        deadline = time.monotonic() + timeout
        while self.position < seq:
            self._moved.clear()
            await asyncio.wait_for(self._moved.wait(), max(0.0, deadline - time.monotonic()))

    async def catch_up(self, timeout: float = 30.0) -> None:
        """Wait until the board has folded everything the log holds now."""
        await self.wait_position(await self.log.last_seq(), timeout)

    async def save_snapshot(self) -> None:
        """Store the board as of `position` (call only when quiet)."""
        if self.snapshots is not None and self.quiet:
            await self.snapshots.save(self.position, self.state)
            self.snapshot_seq = self.position

    async def _follow(self) -> None:
        await follow_forever(self.log, lambda: self.position, self._on_message, name="scheduler-board")

    def _on_message(self, msg: RawMessage) -> None:
        seq = msg.metadata.sequence.stream
        if seq <= self.position:
            return
        event_id = (msg.headers or {}).get(MSG_ID)
        if event_id in self.own:
            self.own.discard(event_id)
            where = self.log.topology.parse_event_subject(msg.subject)
            if where is not None:
                record_version(self.state, where[0], where[1], seq)
            self._advance(seq)
            return
        stored = self.log.decode(msg)  # a malformed event is logged and skipped
        if stored is not None:
            self._fold(stored)
        else:
            # Skipped, but it moved its subject's last sequence: the next append must expect it.
            where = self.log.topology.parse_event_subject(msg.subject)
            if where is not None:
                record_version(self.state, where[0], where[1], seq)
        self._advance(seq)

    def _fold(self, stored: StoredEvent) -> None:
        try:
            apply_in_place(self.state, stored.event)
            record_version(self.state, stored.aggregate, stored.aggregate_id, stored.seq)
        except Exception:
            log.exception("event could not be folded, skipped", seq=stored.seq, type=stored.type)
            return
        try:
            self.on_foreign(stored)
        except Exception:
            log.exception("reaction to an event failed", seq=stored.seq, type=stored.type)

    def _advance(self, seq: int) -> None:
        self.position = seq
        self._moved.set()
