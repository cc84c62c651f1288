"""Telemetry: fire-and-forget samples into STOKER_TELEMETRY, and reading them back by subject.

A job's samples (progress, episodes) sit on `<kind>.<job_id>.<worker_id>`: any admitted worker may publish
for any job id, but only under its own id, so readers believe a sample only from a worker the job was
assigned to (`trusted_sample`); `job_samples` and `last_job_sample` are how every reader reads them.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from contracts.codec import decode_message, encode
from contracts.subjects import Topology
from eventstore.observability import get_logger

log = get_logger(component="telemetry")
T = TypeVar("T")


async def publish_sample(nc: Client, topology: Topology, kind: str, key: str, sample: msgspec.Struct) -> None:
    """Publish one sample without waiting for an acknowledgement (telemetry is disposable)."""
    await nc.publish(topology.telemetry(kind, key), encode(sample))


async def last_sample(nc: Client, topology: Topology, kind: str, key: str, cls: type[T]) -> T | None:
    """The newest sample on one subject, or None."""
    return await _last_on(nc, topology, topology.telemetry(kind, key), cls)


def trusted_sample(worker_id: str | None, assigned: Collection[str]) -> bool:
    """Whether to believe a job's sample whose subject names `worker_id` (None: the old subject, no worker).

    Only a worker a JobAssigned of the job named speaks for it. Samples on the old two-token subject were
    stored before subjects named their worker; since then only admin may publish there, so they are history.
    """
    return worker_id is None or worker_id in assigned


def assigned_workers(events: Iterable[object]) -> list[str]:
    """The workers a job's events assigned it to, the latest assigned last (`events`: StoredEvents or events)."""
    from contracts.events import JobAssigned

    out: list[str] = []
    for item in events:
        event = getattr(item, "event", item)
        if isinstance(event, JobAssigned):
            out = [w for w in out if w != event.worker_id] + [event.worker_id]
    return out


async def _last_on(nc: Client, topology: Topology, subject: str, cls: type[T]) -> T | None:
    js = nc.jetstream()
    try:
        msg = await js.get_last_msg(topology.telemetry_stream, subject, direct=True)
    except NotFoundError:
        return None
    try:
        return decode_message(cls, msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("skipping malformed sample", subject=msg.subject, reason=str(exc))
        return None


async def last_job_sample(nc: Client, topology: Topology, kind: str, job_id: str, workers: Sequence[str],
                          cls: type[T]) -> T | None:
    """A job's newest believed sample: its newest worker's last one, else an earlier worker's, else old history.

    One direct get when the job's last worker has sent one (the job list gets one per row).
    """
    for subject in _sample_subjects(topology, kind, job_id, tuple(workers)):
        sample = await _last_on(nc, topology, subject, cls)
        if sample is not None:
            return sample
    return None


MULTI_LAST_CHUNK = 256  # subjects per batched direct get (the server answers one message per subject found)


class SamplePlan(msgspec.Struct, frozen=True):
    """Where many jobs' newest samples are looked for: each job's subjects in believed order, and all of them
    once (what a batched read asks for). Made once per job-list page, read again at every request."""

    jobs: tuple[tuple[str, tuple[str, ...]], ...]  # (job_id, workers)
    rows: tuple[tuple[str, ...], ...]
    subjects: tuple[str, ...]


def sample_plan(topology: Topology, kind: str, jobs: Iterable[tuple[str, Sequence[str]]]) -> SamplePlan:
    """The subjects to read for [(job_id, workers)]: a job's newest worker first, old history last."""
    held = tuple((job_id, tuple(workers)) for job_id, workers in jobs)
    rows = tuple(_sample_subjects(topology, kind, job_id, workers) for job_id, workers in held)
    return SamplePlan(held, rows, tuple(dict.fromkeys(s for row in rows for s in row)))


async def last_job_samples(nc: Client, topology: Topology, kind: str,
                           jobs: Sequence[tuple[str, Sequence[str]]] | SamplePlan, cls: type[T], *,
                           timeout: float = 5.0) -> list[T | None]:
    """`last_job_sample` of many jobs at once: [(job_id, workers)] (or their plan) → each job's newest believed
    sample, or None.

    One batched direct get (`multi_last`) per MULTI_LAST_CHUNK subjects instead of one or more per job: a page
    of 50 running jobs was 100 requests, now it is one. A server that cannot answer batches (before 2.11) gets
    the one-by-one reads.
    """
    plan = jobs if isinstance(jobs, SamplePlan) else sample_plan(topology, kind, jobs)
    found: dict[str, T] = {}
    try:
        for start in range(0, len(plan.subjects), MULTI_LAST_CHUNK):
            chunk = plan.subjects[start:start + MULTI_LAST_CHUNK]
            for subject, data in await _multi_last(nc, topology.telemetry_stream, chunk, timeout):
                try:
                    found[subject] = decode_message(cls, data)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("skipping malformed sample", subject=subject, reason=str(exc))
    except BatchGetUnsupported as exc:
        log.info("batched direct get refused; reading samples one by one", reason=str(exc))
        return [await last_job_sample(nc, topology, kind, job_id, workers, cls) for job_id, workers in plan.jobs]
    return [next((found[s] for s in row if s in found), None) for row in plan.rows]


class BatchGetUnsupported(Exception):
    """The server answered a batched direct get with something other than messages and an end of batch."""


class _BatchReplies:
    """One connection's subscription for the replies of every batched direct get (`<inbox>.<n>` each), so a
    request costs no subscription of its own (a SUB and an UNSUB, and a task in nats-py, per job-list page)."""

    def __init__(self, nc: Client) -> None:
        self._nc = weakref.ref(nc)  # the registry's value must not keep its key, the connection, alive
        self.inbox = nc.new_inbox()
        self.numbers = itertools.count(1)
        self.waiting: dict[str, tuple[list[tuple[str, bytes]], asyncio.Future[None]]] = {}
        self.subscribed: asyncio.Task | None = None

    def connection(self) -> Client:
        nc = self._nc()
        if nc is None:
            raise nats.errors.ConnectionClosedError
        return nc

    async def ensure_subscribed(self) -> None:
        if self.subscribed is None or (self.subscribed.done() and self.subscribed.exception() is not None):
            self.subscribed = asyncio.ensure_future(self.connection().subscribe(f"{self.inbox}.*", cb=self.take))
        await asyncio.shield(self.subscribed)

    async def take(self, msg) -> None:
        waiting = self.waiting.get(msg.subject)
        if waiting is None:  # a batch given up on (timed out): its late replies go nowhere
            return
        out, done = waiting
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None and "Nats-Subject" in headers:
            out.append((headers["Nats-Subject"], msg.data))
        elif not done.done():
            if status in ("204", "404"):
                done.set_result(None)
            else:
                done.set_exception(BatchGetUnsupported(f"{status} {headers.get('Description', '')}".strip()
                                                       if status else msg.data[:200].decode(errors="replace")))

    async def get(self, stream: str, subjects: Sequence[str], timeout: float) -> list[tuple[str, bytes]]:
        await self.ensure_subscribed()
        reply = f"{self.inbox}.{next(self.numbers)}"
        out: list[tuple[str, bytes]] = []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[reply] = (out, done)
        try:
            request = msgspec.json.encode({"multi_last": list(subjects), "batch": len(subjects)})
            await self.connection().publish(f"$JS.API.DIRECT.GET.{stream}", request, reply=reply)
            try:
                await asyncio.wait_for(done, timeout)
            except TimeoutError:
                raise nats.errors.TimeoutError from None
        finally:
            del self.waiting[reply]
        return out


_BATCH_REPLIES: weakref.WeakKeyDictionary[Client, _BatchReplies] = weakref.WeakKeyDictionary()


async def _multi_last(nc: Client, stream: str, subjects: Sequence[str], timeout: float) -> list[tuple[str, bytes]]:
    """[(subject, data)] of the last message on each subject that has one: one request, a reply per message,
    then a header-only end of batch (204; 404 when nothing matched)."""
    replies = _BATCH_REPLIES.get(nc)
    if replies is None:
        replies = _BATCH_REPLIES[nc] = _BatchReplies(nc)
    return await replies.get(stream, subjects, timeout)


@lru_cache(maxsize=65536)
def _sample_subjects(topology: Topology, kind: str, job_id: str, workers: tuple[str, ...]) -> tuple[str, ...]:
    """Where a job's samples are looked for, in the order believed: newest worker first, old history last."""
    return (*(topology.job_telemetry(kind, job_id, w) for w in reversed(workers)), topology.telemetry(kind, job_id))


async def job_samples(nc: Client, topology: Topology, kind: str, job_id: str, workers: Collection[str],
                      cls: type[T], *, from_seq: int = 1, limit: int = 100_000) -> list[tuple[int, T]]:
    """A job's believed samples, oldest first, as (stream sequence, sample): old history, then its workers' own.

    Samples on `<kind>.<job>.<w>` from a worker the job was never assigned to are dropped.
    """
    old = await _read(nc, topology, topology.telemetry(kind, job_id), cls, from_seq, limit)

    def believed(subject: str) -> bool:
        parsed = topology.parse_job_telemetry(subject)
        return parsed is not None and trusted_sample(parsed[2], workers)

    new = await _read(nc, topology, topology.job_telemetry(kind, job_id), cls, from_seq, limit, believed)
    return sorted(old + new, key=lambda pair: pair[0])[:limit]


async def sample_history(nc: Client, topology: Topology, kind: str, key: str, cls: type[T], *,
                         from_seq: int = 1, limit: int = 100_000) -> list[tuple[int, T]]:
    """Samples on one subject, oldest first, as (stream sequence, sample); malformed ones are skipped."""
    return await _read(nc, topology, topology.telemetry(kind, key), cls, from_seq, limit)


async def _read(nc: Client, topology: Topology, subject: str, cls: type[T], from_seq: int, limit: int,
                keep: Callable[[str], bool] | None = None) -> list[tuple[int, T]]:
    from eventstore.log import JetStreamLog

    out: list[tuple[int, T]] = []
    reader = JetStreamLog(nc, topology).read_raw(from_seq, filter_subject=subject, stream=topology.telemetry_stream)
    async for msg in reader:
        if keep is not None and not keep(msg.subject):
            continue
        seq = msg.metadata.sequence.stream
        try:
            out.append((seq, decode_message(cls, msg.data)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("skipping malformed sample", subject=subject, seq=seq, reason=str(exc))
        if len(out) >= limit:
            await reader.aclose()
            break
    return out


async def first_seq_since(nc: Client, topology: Topology, kind: str, key: str, since: datetime) -> int | None:
    """The stream sequence of the first sample on one subject stored at or after `since` (None: there is none).

    A binary search of direct gets (about log2 of the stream's length), so a window of recent history is
    read without reading the days of samples before it.
    """
    js, stream, subject = nc.jetstream(), topology.telemetry_stream, topology.telemetry(kind, key)

    async def at_or_after(seq: int):
        try:
            return await js.get_msg(stream, seq=max(1, seq), subject=subject, next=True, direct=True)
        except NotFoundError:
            return None

    first = await at_or_after(1)
    if first is None:
        return None
    lo, hi, found = int(first.seq), None, None
    last = await js.get_last_msg(stream, subject, direct=True)
    if last.time is not None and last.time < since:
        return None
    hi = int(last.seq)
    while lo <= hi:
        mid = (lo + hi) // 2
        msg = await at_or_after(mid)
        if msg is None or int(msg.seq) > hi:
            hi = mid - 1
        elif msg.time is not None and msg.time < since:
            lo = int(msg.seq) + 1
        else:
            found, hi = int(msg.seq), mid - 1
    return found


async def sample_keys(nc: Client, topology: Topology, kind: str) -> list[str]:
    """The ids that have samples of one kind kept in telemetry (`host`: every machine a monitor samples)."""
    pattern = topology.telemetry(kind, "*")
    try:
        info = await nc.jetstream().stream_info(topology.telemetry_stream, subjects_filter=pattern)
    except NotFoundError:
        return []
    subjects = info.state.subjects or {}
    return sorted(subject.rsplit(".", 1)[-1] for subject in subjects)
