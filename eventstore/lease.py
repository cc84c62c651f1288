"""A leader lease in a JetStream KV bucket: one holder acts, standbys take over when it goes quiet.

The holder renews by compare-and-set every `ttl/3`. A standby watches the key's revision with its
own monotonic clock: when the revision has not moved for `ttl`, the holder is presumed dead and the
standby claims the key with a compare-and-set on that revision. No clocks are compared across hosts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.js.errors import (
    BadRequestError,
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoStreamResponseError,
    ServiceUnavailableError,
)
from nats.js.kv import KeyValue

from contracts.base import uuid7
from eventstore.observability import get_logger

log = get_logger(component="lease")
# No answer about the key for now: NATS is away, or the bucket's stream is electing a leader (a node of the
# cluster was lost or cut off). Not a reason to give up: the next try may be answered.
NO_ANSWER = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
             NoStreamResponseError, ServiceUnavailableError)


def holder_name() -> str:
    """Who holds a lease: host, pid and a random tail (a restarted process is a new holder)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid7()[-8:]}"


class Lease:
    """One key, one holder at a time."""

    def __init__(self, kv: KeyValue, key: str, holder: str, ttl: float = 3.0) -> None:
        self.kv, self.key, self.holder, self.ttl = kv, key, holder, ttl
        self.revision: int | None = None
        self._seen: tuple[int, float] | None = None  # (revision, monotonic time first seen)

    @property
    def held(self) -> bool:
        """Whether this process believes it holds the lease."""
        return self.revision is not None

    async def try_acquire(self) -> bool:
        """Claim the lease if free, ours, or abandoned; True when this process holds it afterwards."""
        try:
            entry = await self.kv.get(self.key)
        except (KeyNotFoundError, KeyDeletedError) as exc:
            last = getattr(exc, "entry", None)
            return await self._claim(last.revision if last is not None else None)
        if entry.value.decode() == self.holder:
            return await self._claim(entry.revision)
        now = time.monotonic()
        if self._seen is None or self._seen[0] != entry.revision:
            self._seen = (entry.revision, now)
            return False
        if now - self._seen[1] < self.ttl:
            return False
        log.warning("lease holder went quiet, taking over", key=self.key, previous=entry.value.decode())
        return await self._claim(entry.revision)

    async def _claim(self, revision: int | None) -> bool:
        try:
            if revision is None:
                self.revision = await self.kv.create(self.key, self.holder.encode())
            else:
                self.revision = await self.kv.update(self.key, self.holder.encode(), last=revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            self.revision = None
            return False
        return True

    async def renew(self) -> bool:
        """Renew a held lease; False (and no longer held) if someone else took it."""
        if self.revision is None:
            return False
        try:
            self.revision = await self.kv.update(self.key, self.holder.encode(), last=self.revision)
        except (KeyWrongLastSequenceError, BadRequestError):
            log.warning("lease lost", key=self.key)
            self.revision = None
            return False
        return True

    async def release(self) -> None:
        """Give the lease up so a standby takes over at once."""
        if self.revision is None:
            return
        try:
            await self.kv.delete(self.key, last=self.revision)
        except (KeyWrongLastSequenceError, BadRequestError, KeyNotFoundError):
            pass
        except NO_ANSWER as exc:  # not released: a standby takes over once the key has been quiet for ttl
            log.warning("lease not released (no answer); it expires on its own", key=self.key, error=repr(exc))
        self.revision = None

    async def wait_acquired(self, stop: asyncio.Event | None = None) -> bool:
        """Block until this process holds the lease (True) or `stop` is set (False)."""
        unanswered = 0
        while stop is None or not stop.is_set():
            try:
                if await self.try_acquire():
                    return True
                unanswered = 0
            except NO_ANSWER as exc:
                if unanswered == 0:
                    log.warning("lease not answered; trying again", key=self.key, error=repr(exc))
                unanswered += 1
                self._seen = None  # a revision's quiet time counts only from an answer
            await asyncio.sleep(self.ttl / 6)
        return False

    async def keep(self, on_lost: asyncio.Event) -> None:
        """Renew every ttl/3 until cancelled; sets `on_lost` and returns if the lease is lost or can't be renewed."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                renewed = await self.renew()
            except Exception as exc:  # no answer from NATS counts as losing the lease: another may hold it soon
                log.warning("lease renewal failed", key=self.key, error=repr(exc))
                self.revision = None
                renewed = False
            if not renewed:
                on_lost.set()
                return


async def lead_whenever_held(lease: Lease, stop: asyncio.Event,
                             lead: Callable[[Lease], Awaitable[None]]) -> None:
    """Until `stop`: wait for the lease, then `lead` while holding it (it returns when the lease is lost)."""
    while not stop.is_set():
        if await lease.wait_acquired(stop):
            await lead(lease)
