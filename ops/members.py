"""Every node of a cluster across machines lets in who the log says (ops.members_domain): `stoker up` on a
cluster node runs `follow_members`, which folds the `credential` and `jointoken` events from the start of the
log at boot, then live, and applies them to the data dir's users (`ops.joining.apply_members`: a rewrite of
the `authorization` block and a reload, only when something changed; the server closes the connections of
users that are gone). A node that was down during a revoke applies it when it comes back: its first fold
reads the whole log before it applies anything, so no earlier admission is let in again even for a moment.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.follow import cancel_and_wait, follow_forever
from eventstore.log import JetStreamLog
from eventstore.observability import get_logger
from eventstore.ports import EventLog, RawMessage
from ops import members_domain
from ops.joining import apply_members

log = get_logger(component="members")
RECHECK_S = 60.0  # at the latest, look again (a token's expiry; a failed reload tried again)
RETRY_S = 2.0
CATCH_UP_TRIES = 50  # reads that bring nothing new (0.2 s apart) before the live follower takes over


class MemberFollower:
    """The fold of who may connect, and its application to one data dir's nats-server.

    `joins=False` leaves join tokens' own credentials alone: where the join desk runs, it keeps them (it drops
    a used single-use one only after its reply is out)."""

    def __init__(self, event_log: EventLog, data_dir: Path, *, joins: bool = True) -> None:
        self.event_log, self.data_dir, self.joins = event_log, Path(data_dir), joins
        self.topology: Topology = event_log.topology
        self.state = members_domain.initial_state()
        self.position = 0
        self.dirty = asyncio.Event()
        self.applied = 0  # how many times a change was applied (a test's bounded wait watches it)

    def fold(self, msg: RawMessage) -> None:
        """Take one raw message of the log (others than `credential` and `jointoken` are skipped)."""
        self.position = msg.metadata.sequence.stream
        parsed = self.topology.parse_event_subject(msg.subject)
        if parsed is None or parsed[0] not in members_domain.AGGREGATES:
            return
        stored = self.event_log.decode(msg)
        if stored is not None:
            self.state = members_domain.evolve(self.state, stored.event)
            self.dirty.set()

    async def catch_up(self) -> None:
        """Fold the log up to its end as the stream's leader says it is now. A replica of a node that just came
        back may still lag (it ends a read early): read again until the end is reached."""
        end = await self.event_log.last_seq()
        idle = 0
        while self.position < end and idle < CATCH_UP_TRIES:
            before = self.position
            async for msg in self.event_log.read_raw(self.position + 1, until_seq=end):
                self.fold(msg)
            idle = 0 if self.position > before else idle + 1
            if idle:
                await asyncio.sleep(0.2)
        if self.position < end:  # the live follower takes the rest as it comes
            log.warning("the log's end was not reached at boot", position=self.position, end=end)

    async def apply(self, now: datetime | None = None) -> bool:
        """Apply the fold to the data dir's users; True when something changed."""
        members = members_domain.members(self.state, now or datetime.now(UTC))
        if not self.joins:
            members = msgspec.structs.replace(members, joins={}, removed_keys=frozenset())
        changed = await apply_members(self.data_dir, self.topology, members)
        if changed:
            self.applied += 1
            log.info("NATS users changed as the log says", workers=len(members.workers),
                     revoked=len(members.revoked), position=self.position)
        return changed

    async def run(self) -> None:
        """Catch up, apply, then follow the log live and apply each change (cancel to stop)."""
        while True:
            try:
                await self.catch_up()
                break
            except Exception as exc:  # a node that just came back: its stream may not answer yet
                log.warning("reading who may connect failed", error=repr(exc), retry_in_s=RETRY_S)
                await asyncio.sleep(RETRY_S)
        follower = asyncio.create_task(follow_forever(self.event_log, lambda: self.position, self.fold,
                                                      name="members"))
        try:
            self.dirty.set()
            while True:
                wait = RECHECK_S
                if self.dirty.is_set():
                    self.dirty.clear()
                    try:
                        await self.apply()
                    except Exception as exc:  # a reload refused or the data dir unwritable: tried again
                        log.warning("NATS users not applied", error=repr(exc), retry_in_s=RETRY_S)
                        self.dirty.set()
                        wait = RETRY_S
                due = members_domain.next_change(self.state, datetime.now(UTC))
                if due is not None:
                    wait = min(wait, max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.5)
                waiter = asyncio.create_task(self.dirty.wait())
                try:
                    await asyncio.wait({waiter, follower}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if follower.done():
                    follower.result()  # follow_forever ends only by raising
                self.dirty.set()  # an event, a token's expiry or the recheck: applying what did not change is free
        finally:
            await cancel_and_wait([follower])


async def follow_members(nats_url: str, credentials: str, ca_file: str | None, prefix: str, data_dir: Path, *,
                         joins: bool = True) -> None:
    """What `stoker up` on a cluster node runs for its life: connect as the admin and follow (see the module
    doc); cancel to stop."""
    nc = await connect(nats_url, "stoker-up-members", credentials=credentials, ca_file=ca_file)
    try:
        await MemberFollower(JetStreamLog(nc, Topology(prefix)), data_dir, joins=joins).run()
    finally:
        await nc.close()
