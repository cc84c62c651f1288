"""Handing assignments and stop requests to workers: a port, on JetStream and in memory.

A message's id names the decision (`dispatch_id`): publishing the same message again (a retry, a new
leader re-publishing unstarted assignments) is deduplicated by the dispatch stream.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from nats.aio.client import Client

from contracts.codec import encode
from contracts.dispatch import Assignment, DispatchMessage
from contracts.subjects import Topology
from eventstore.observability import get_logger, inject_trace
from eventstore.records import MSG_ID

log = get_logger(component="dispatch")


class DispatchPublisher(Protocol):
    """Puts one message on its worker's dispatch queue (best effort: a failure is logged, not raised)."""

    async def publish(self, message: DispatchMessage) -> None:
        """Queue the message for its worker."""


def dispatch_id(message: DispatchMessage) -> str:
    """The message's dedup id: one per decision to assign (job, attempt, worker and the decision's time), one
    per job and attempt to stop.

    The scheduler publishes an assignment while its `JobAssigned` is still being appended (the worker's
    confirmation waits for that append): should the append fail, the same attempt decided again is a new
    message, not a duplicate of one that never counted. A new leader re-publishing the logged decision
    repeats its id.
    """
    if isinstance(message, Assignment):
        decided = round(message.assigned_at.timestamp() * 1_000_000)
        return f"{message.job_id}.{message.attempt}.{message.worker_id}.{decided}.assign"
    return f"{message.job_id}.{message.attempt}.stop"


class JetStreamDispatch:
    """Publishes to `Topology.dispatch(worker_id)` on the dispatch stream, retrying with a backoff."""

    def __init__(self, nc: Client, topology: Topology, retries: int = 3, timeout: float = 5.0) -> None:
        self.js, self.topology, self.retries = nc.jetstream(timeout=timeout), topology, retries

    async def publish(self, message: DispatchMessage) -> None:
        """Hand one message to its worker's queue; after `retries` failed tries it is logged and dropped."""
        headers = inject_trace({MSG_ID: dispatch_id(message)})  # the caller's span: the job's trace
        subject, data = self.topology.dispatch(message.worker_id), encode(message)
        for attempt in range(self.retries + 1):
            try:
                await self.js.publish(subject, data, headers=dict(headers))
                return
            except Exception as exc:
                if attempt == self.retries:
                    log.error("dispatch failed", job_id=message.job_id, worker_id=message.worker_id, error=repr(exc))
                    return
                await asyncio.sleep(min(2.0, 0.1 * 2 ** attempt))


class MemoryDispatch:
    """Keeps what was dispatched, in order, each message once (as the stream's dedup does)."""

    def __init__(self) -> None:
        self.sent: list[DispatchMessage] = []
        self._ids: set[str] = set()

    async def publish(self, message: DispatchMessage) -> None:
        """Record the message unless one with its id was recorded already."""
        key = dispatch_id(message)
        if key not in self._ids:
            self._ids.add(key)
            self.sent.append(message)

    def to(self, worker_id: str) -> list[DispatchMessage]:
        """What one worker was sent."""
        return [m for m in self.sent if m.worker_id == worker_id]
