"""Every client operation once, with no I/O: a generator that yields the requests (and pauses) it needs.

`Client` runs an operation with blocking HTTP and `AsyncClient` with asyncio: both send what the
generator yields and send the answer back in, so the two flavours cannot drift apart. The bodies and
replies are the gateway's own schemas (gateway/schemas), shared rather than copied.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import msgspec

from contracts.status import is_final
from gateway.client.errors import JobFailed, StokerError, Timeout, error_for
from gateway.schemas.common import ErrorBody
from gateway.schemas.jobs import (
    EpisodeHistory,
    EpisodeSample,
    JobPage,
    JobTimeline,
    JobView,
    ProgressHistory,
    ProgressSample,
    StopResult,
    SubmitJobBody,
)
from gateway.schemas.runs import TestingResults, TrainingLogs

T = TypeVar("T")
API = "/api/v1"
TRACEBACK_LINES = 20  # how much of a failed job's traceback `wait` raises with
POLL_FIRST_S, POLL_MAX_S = 0.05, 1.0  # `wait` asks again this often, backing off
PAGE = 500  # jobs per page while listing
SAMPLES_PAGE = 10_000  # progress samples per page while reading a job's history
EPISODES_PAGE = 1_000  # episode reports (each with its move log) per page


@dataclass(frozen=True)
class Call:
    """One HTTP request and the schema its answer decodes into (None: no body wanted)."""

    method: str
    path: str
    reply: Any = None
    params: Sequence[tuple[str, str | int]] = ()
    body: Any = None

    def content(self) -> bytes | None:
        """The JSON body, if any."""
        return None if self.body is None else msgspec.json.encode(self.body)


@dataclass(frozen=True)
class Pause:
    """Wait this long before going on (`wait` between polls)."""

    seconds: float


Op = Generator[Call | Pause, Any, T]


def answer(call: Call, status: int, content: bytes) -> Any:
    """The typed reply to `call`, or the error its status and body stand for."""
    if status >= 400:
        raise error_for(status, error_detail(content))
    if call.reply is None:
        return None
    try:
        return msgspec.json.decode(content, type=call.reply)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise StokerError(f"the gateway's answer to {call.method} {call.path} is not a {call.reply.__name__}: "
                          f"{exc} (is the client newer than the gateway?)", status) from None


def error_detail(content: bytes) -> str:
    """The gateway's message from an error body (with the invalid fields it lists), else the raw text."""
    try:
        body = msgspec.json.decode(content, type=ErrorBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return content.decode(errors="replace")[:500]
    return f"{body.detail}: {msgspec.json.encode(body.extra).decode()}" if body.extra else body.detail


def job_path(job_id: str, *rest: str) -> str:
    """A job's resource path; the id is quoted, so no id can reach another route."""
    return "/".join([f"{API}/jobs", quote(job_id, safe=""), *rest])


def submit(body: SubmitJobBody) -> Op[JobView]:
    """Queue a job; the same `idempotency_key` gives back the same job."""
    return (yield Call("POST", f"{API}/jobs", JobView, body=body))


def submit_evaluation(checkpoint: str, fields: dict[str, Any]) -> Op[JobView]:
    """Queue an evaluation of `checkpoint`'s newest checkpoint; its workload is the training run's unless given."""
    if fields.get("workload") is None:
        fields["workload"] = (yield from job(checkpoint)).workload
    return (yield from submit(SubmitJobBody(kind="eval", checkpoint_of=checkpoint, **fields)))


def job(job_id: str) -> Op[JobView]:
    """One job."""
    return (yield Call("GET", job_path(job_id), JobView))


def jobs(status: str | Sequence[str] | None, kind: str | None, workload: str | None,
         limit: int | None) -> Op[list[JobView]]:
    """Jobs newest first, filtered, every page up to `limit` jobs."""
    statuses = [status] if isinstance(status, str) else list(status or ())
    found: list[JobView] = []
    cursor: str | None = None
    while limit is None or len(found) < limit:
        size = PAGE if limit is None else min(PAGE, limit - len(found))
        params: list[tuple[str, str | int]] = [("status", s) for s in statuses] + [("limit", size)]
        params += [(k, v) for k, v in (("kind", kind), ("workload", workload), ("cursor", cursor)) if v is not None]
        page: JobPage = yield Call("GET", f"{API}/jobs", JobPage, params=params)
        found += page.items
        cursor = page.next_cursor
        if cursor is None:
            break
    return found


def stop(job_id: str) -> Op[list[str]]:
    """Ask a job to stop (a running one checkpoints first); the ids asked to stop."""
    return (yield Call("POST", job_path(job_id, "stop"), StopResult)).job_ids


def _history(job_id: str, what: str, reply: type[ProgressHistory | EpisodeHistory], since: int,
             page: int) -> Op[list[Any]]:
    """Every item of a telemetry history route (`progress`, `episodes`) after sequence `since` (every page)."""
    found: list[Any] = []
    while True:
        history = yield Call("GET", job_path(job_id, what), reply, params=[("since", since), ("limit", page)])
        items = history.samples if isinstance(history, ProgressHistory) else history.episodes
        found += items
        if len(items) < page:
            return found
        since = history.next_since


def logs(job_id: str, since: int = 0) -> Op[list[ProgressSample]]:
    """Every progress report of the job after telemetry sequence `since`, oldest first (every page)."""
    return (yield from _history(job_id, "progress", ProgressHistory, since, SAMPLES_PAGE))


def episodes(job_id: str, since: int = 0) -> Op[list[EpisodeSample]]:
    """Every episode report of an evaluation after telemetry sequence `since`, oldest first (every page)."""
    return (yield from _history(job_id, "episodes", EpisodeHistory, since, EPISODES_PAGE))


def reported_after(job_id: str, since: int) -> Op[tuple[list[ProgressSample], list[EpisodeSample]]]:
    """The progress and episode reports after telemetry sequence `since` (what a follow reads once the job is
    over: the socket may not have brought the last of them)."""
    return (yield from logs(job_id, since)), (yield from episodes(job_id, since))


def results(job_id: str) -> Op[TestingResults | TrainingLogs]:
    """An evaluation's episodes and statistics, or a training run's losses and statistics."""
    found = yield from job(job_id)
    if found.kind == "eval":
        return (yield Call("GET", f"{API}/testing/{quote(job_id, safe='')}/results", TestingResults))
    return (yield Call("GET", f"{API}/training/{quote(job_id, safe='')}/logs", TrainingLogs))


def traceback_tail(job_id: str) -> Op[str]:
    """The end of the traceback of the job's last failure (from its timeline), or ""."""
    timeline: JobTimeline = yield Call("GET", job_path(job_id, "events"), JobTimeline)
    failures = [entry.event for entry in timeline.events if entry.type == "JobFailed"]
    text = str(failures[-1].get("traceback") or "") if failures else ""
    return "\n".join(text.rstrip().splitlines()[-TRACEBACK_LINES:])


def settle(job_id: str, timeout: float | None, *, raise_failure: bool) -> Op[JobView]:
    """The job once it is over (completed, failed, stopped, timed out); a failure raised if asked."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_FIRST_S
    while True:
        found = yield from job(job_id)
        if is_final(found.status):
            if raise_failure and found.status in ("failed", "timed_out"):
                raise JobFailed(found, (yield from traceback_tail(job_id)))
            return found
        if deadline is not None and time.monotonic() + delay > deadline:
            raise Timeout(f"job {job_id} is still {found.status} after {timeout:g} s")
        yield Pause(delay)
        delay = min(delay * 1.5, POLL_MAX_S)
