"""Reports to the scheduler: delivered in order per attempt, retried until answered, kept on disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client

from contracts.commands import ConfirmAssignment, JobReport, ReportAccepted, ReportJobFinished
from contracts.dispatch import Assignment
from contracts.errors import CommandFailed, DomainError, Unavailable
from contracts.subjects import Topology
from eventstore.micro import call
from eventstore.observability import get_logger

log = get_logger(component="outbox")
MAX_INTERNAL_ERRORS = 20
_record_decoder = msgspec.json.Decoder(dict)


async def deliver(nc: Client, topology: Topology, report: JobReport | ConfirmAssignment, timeout: float,
                  cancelled: Callable[[], bool] = lambda: False, reply_type: type[Any] = ReportAccepted) -> Any:
    """Send a report (or a confirmation) until the scheduler answers (it may be failing over); None if it never can."""
    delay, internal = 0.05, 0
    while not cancelled():
        try:
            return await call(nc, topology, report, reply_type, timeout=timeout)
        except Unavailable:
            pass
        except CommandFailed as exc:
            internal += 1
            if exc.code < 500 or internal > MAX_INTERNAL_ERRORS:
                log.error("scheduler refused a report", report=type(report).__name__, job_id=report.job_id,
                          error=exc.message)
                return None
        except DomainError as exc:
            log.error("scheduler refused a report", report=type(report).__name__, job_id=report.job_id,
                      error=exc.message)
            return None
        except (nats.errors.Error, OSError) as exc:
            if nc.is_closed:
                log.error("report lost: connection closed", job_id=report.job_id, error=repr(exc))
                return None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    return None


class Outbox:
    """One attempt's ordered pipeline: each step (a report, an upload then a report) runs after the last."""

    def __init__(self) -> None:
        self._tail: asyncio.Future[None] | None = None

    def then(self, step: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run `step` once every earlier step has finished."""
        previous = self._tail

        async def run() -> None:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(previous)
            await step()

        task = asyncio.create_task(run())
        self._tail = task
        return task

    async def drain(self) -> None:
        """Wait for every step queued so far."""
        if self._tail is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._tail)


class AttemptLog:
    """An append-only journal of the attempts this worker holds, so a restarted worker can settle them.

    One small append per change (no file per attempt: dispatch runs hundreds of jobs a second), read
    back and compacted when opened, and compacted again now and then while it runs.
    """

    def __init__(self, directory: Path, compact_every: int = 20_000) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "attempts.jsonl"
        self.compact_every = compact_every
        self.live: dict[tuple[str, int], dict] = self._read()
        self.previous = [(key, record.get("finished")) for key, record in self.live.items()]
        self._fd = -1
        self._compact()

    def _read(self) -> dict[tuple[str, int], dict]:
        live: dict[tuple[str, int], dict] = {}
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return live
        for line in lines:
            try:
                entry = _record_decoder.decode(line)
                key = (str(entry["job_id"]), int(entry["attempt"]))
            except (msgspec.DecodeError, KeyError, ValueError, TypeError):
                continue  # a torn last line from a crash
            if entry.get("op") == "-":
                live.pop(key, None)
            else:
                live[key] = {**live.get(key, {}), **entry}
        return live

    def _compact(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in self.live.values()))
        os.replace(tmp, self.path)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._appends = 0

    def _append(self, entry: dict) -> None:
        os.write(self._fd, msgspec.json.encode(entry) + b"\n")
        self._appends += 1
        if self._appends >= self.compact_every:
            self._compact()

    def record(self, assignment: Assignment) -> None:
        """Remember an accepted assignment."""
        entry = {"op": "+", "job_id": assignment.job_id, "attempt": assignment.attempt}
        self.live[(assignment.job_id, assignment.attempt)] = entry
        self._append(entry)

    def finish(self, report: ReportJobFinished) -> None:
        """Remember how the attempt ended until the scheduler has it."""
        entry = {"op": "=", "job_id": report.job_id, "attempt": report.attempt, "finished": report}
        self.live[(report.job_id, report.attempt)] = entry
        self._append(entry)

    def forget(self, job_id: str, attempt: int) -> None:
        """The scheduler has the outcome; nothing left to settle."""
        if self.live.pop((job_id, attempt), None) is not None:
            self._append({"op": "-", "job_id": job_id, "attempt": attempt})

    def leftovers(self) -> list[tuple[str, int, ReportJobFinished | None]]:
        """Attempts a previous run of this worker did not settle: (job, attempt, its outcome if known)."""
        out = []
        for (job_id, attempt), finished in self.previous:
            try:
                report = msgspec.convert(finished, ReportJobFinished) if finished else None
            except msgspec.ValidationError:
                report = None
            out.append((job_id, attempt, report))
        return out

    def close(self) -> None:
        """Close the journal."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
