"""`stoker submit|jobs|job|logs|stop`: jobs from the command line (and `stoker worker|workers`)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import click
import msgspec

from contracts.base import is_valid_id
from contracts.codec import decode_message
from contracts.commands import JobAccepted, JobsStopping, StopJob, SubmitJob
from contracts.events import JobCheckpointed, JobSubmitted
from contracts.jobspec import CheckpointRef
from contracts.status import final_status
from contracts.subjects import Topology
from contracts.telemetry import JobProgress
from eventstore.log import StoredEvent
from eventstore.micro import call
from eventstore.observability import trace_id_of
from eventstore.readmodels import is_built
from eventstore.readmodels.jobs import job_record, list_jobs
from eventstore.records import event_record
from eventstore.stores import open_store
from eventstore.stores.base import ReadModelStore
from eventstore.stores.sqlite import NoReadModel
from eventstore.telemetry import assigned_workers, job_samples, trusted_sample
from ops.cli import Cli, pass_cli, run_async
from ops.commands.events import event_line
from ops.output import emit_json, is_terminal, progress_bar, table

JOB_COLUMNS = ("id", "kind", "workload", "status", "attempt", "worker_id", "submitted_at")


def parse_value(text: str) -> Any:
    """A --param value: JSON when it parses (numbers, true/false, lists), else the text itself."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    """`k=v` pairs as a dict; ValueError names the first bad one."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r} is not key=value")
        params[key.strip()] = parse_value(value)
    return params


def check_job_id(job_id: str) -> str:
    """A job id as given, or ValueError."""
    if not is_valid_id(job_id):
        raise ValueError(f"{job_id!r} is not a job id")
    return job_id


def as_json(cli: Cli, flag: bool) -> bool:
    """The global --json or the command's own."""
    return flag or cli.as_json


async def _submit(cli: Cli, command: SubmitJob, json_out: bool) -> None:
    async with cli.connection() as (nc, _log):
        reply = await call(nc, cli.topology, command, JobAccepted)
    if json_out:
        emit_json({"job_id": reply.job_id, "created": reply.created})
    else:
        verb = "submitted" if reply.created else "already submitted (same idempotency key)"
        click.echo(f"{verb}: job {reply.job_id}  ({command.kind} {command.workload})")
        click.echo(f"follow it: stoker logs {reply.job_id} --follow")


@click.group("submit")
def submit_group() -> None:
    """Queue a training or evaluation job."""


def _common_options(fn):
    for option in reversed([
        click.option("--param", "params", multiple=True, metavar="K=V", help="Workload parameter (repeatable)."),
        click.option("--gpus", default=0, show_default=True, type=click.IntRange(0, 64), help="GPUs it needs."),
        click.option("--priority", default=0, show_default=True, help="Higher runs first."),
        click.option("--label", "labels", multiple=True, help="Run only on workers with this label (repeatable)."),
        click.option("--idempotency-key", help="Submitting the same key again returns the same job."),
        click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), help="Seconds."),
        click.option("--retries", default=0, show_default=True, type=click.IntRange(0, 100),
                     help="Retries after a failure."),
        click.option("--stall-after", "stall_after_s", type=click.FloatRange(min=0, min_open=True, max=30 * 86400),
                     help="Seconds without progress before it counts as stalled (default: [monitor] stall_after_s)."),
        click.option("--on-stall", type=click.Choice(["alert", "restart"]), default="alert", show_default=True,
                     help="When stalled: only alert, or also restart from the last checkpoint a period later."),
        click.option("--json", "json_flag", is_flag=True, help="Machine-readable output."),
        click.option("--no-strict-params", "loose", is_flag=True,
                     help="Pass params the workload does not declare (or ill-typed) unchecked."),
    ]):
        fn = option(fn)
    return fn


@submit_group.command("train")
@click.argument("workload")
@click.option("--iterations", type=click.IntRange(min=1), help="Training iterations (max_iterations).")
@_common_options
@pass_cli
@run_async
async def submit_train(cli: Cli, workload: str, iterations: int | None, params: tuple[str, ...], json_flag: bool,
                       **options: Any) -> None:
    """Train WORKLOAD (a registered name or module:function)."""
    command = SubmitJob(kind="train", workload=workload, params=parse_params(params), max_iterations=iterations,
                        **_submit_fields(options))
    await _submit(cli, command, as_json(cli, json_flag))


@submit_group.command("eval")
@click.argument("workload")
@click.option("--checkpoint", "checkpoint", required=True, metavar="JOB|NAME",
              help="A training job (its newest good checkpoint) or a stored checkpoint's name (JOB/ATTEMPT-ITERATION,"
                   " as GET /api/v1/jobs/JOB/checkpoints lists them).")
@click.option("--episodes", type=click.IntRange(min=1), required=True, help="Episodes to play.")
@_common_options
@pass_cli
@run_async
async def submit_eval(cli: Cli, workload: str, checkpoint: str, episodes: int, params: tuple[str, ...],
                      json_flag: bool, **options: Any) -> None:
    """Evaluate a training job's newest checkpoint, or the one named (the worker runs `2048-eval` for `2048`)."""
    source, _, _ = checkpoint.partition("/")
    chosen = None
    if "/" in checkpoint:
        async with cli.connection() as (_nc, log):
            chosen = stored_checkpoint((await log.load("job", check_job_id(source)))[0], checkpoint)
    command = SubmitJob(kind="eval", workload=workload, params=parse_params(params), episodes=episodes,
                        checkpoint_of=check_job_id(source), checkpoint_ref=chosen, **_submit_fields(options))
    await _submit(cli, command, as_json(cli, json_flag))


def stored_checkpoint(events: list[StoredEvent], name: str) -> CheckpointRef:
    """The checkpoint a job's log says is stored under `name`; ValueError naming the job's others."""
    stored = [e.event for e in events if isinstance(e.event, JobCheckpointed)]
    for e in stored:
        if e.name == name:
            return CheckpointRef(name=e.name, sha256=e.sha256, size=e.size, iteration=e.iteration)
    names = ", ".join(e.name for e in stored[-5:]) or "none"
    raise ValueError(f"no stored checkpoint {name!r} (that job's newest: {names})")


def _submit_fields(options: dict[str, Any]) -> dict[str, Any]:
    return {"gpus": options["gpus"], "priority": options["priority"], "labels": tuple(options["labels"]),
            "idempotency_key": options["idempotency_key"], "timeout_s": options["timeout_s"],
            "max_retries": options["retries"], "stall_after_s": options["stall_after_s"],
            "on_stall": options["on_stall"], "strict_params": not options["loose"]}


@asynccontextmanager
async def read_model(cli: Cli, name: str) -> AsyncIterator[ReadModelStore | None]:
    """The read models opened read-only, or None while the read model `name` does not exist yet."""
    try:
        store = await open_store(cli.settings.database_url, cli.settings.sqlite_path, readonly=True)
    except NoReadModel:
        yield None
        return
    try:
        yield store if await is_built(store, name) else None
    finally:
        await store.close()


@click.command("jobs")
@click.option("--status", help="Only jobs in this status (queued, running, completed, failed, …).")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@pass_cli
@run_async
async def jobs(cli: Cli, status: str | None, limit: int, json_flag: bool) -> None:
    """The newest jobs and their status, from the jobs read model."""
    async with read_model(cli, "jobs") as store:
        rows = None if store is None else (await list_jobs(store, statuses=(status,) if status else (),
                                                           limit=limit))[0]
    if as_json(cli, json_flag):
        emit_json([job_record(r) for r in rows or []])
    elif rows is None:
        click.echo("no jobs yet (no read model: is `stoker up` running?)")
    else:
        click.echo(table([[r[c] for c in JOB_COLUMNS] for r in rows], JOB_COLUMNS))


@click.command("job")
@click.argument("job_id")
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@pass_cli
@run_async
async def job(cli: Cli, job_id: str, json_flag: bool) -> None:
    """A job's timeline: every event in its log, oldest first."""
    check_job_id(job_id)
    async with cli.connection() as (_nc, log):
        events, _version = await log.load("job", job_id)
    if not events:
        raise ValueError(f"no job {job_id}")
    json_out = as_json(cli, json_flag)
    trace_id = submission_trace(events)
    if trace_id and not json_out:
        click.echo(f"trace {trace_id}")
    for stored in events:
        emit_json(event_record(stored)) if json_out else click.echo(event_line(stored))


def submission_trace(events: list[StoredEvent]) -> str:
    """The trace id the job was submitted in (find it in any OpenTelemetry backend); empty if untraced."""
    first = events[0].event if events else None
    return trace_id_of(first.traceparent) if isinstance(first, JobSubmitted) else ""


def progress_line(sample: JobProgress, first: tuple[float, datetime] | None) -> str:
    """`[####....]  40.0%  1200/3000  loss 0.31  score 812  85.2 it/s  ETA 3m12s`."""
    parts = [progress_bar(sample.iteration, sample.total), f"{sample.iteration}/{sample.total or '?'}"]
    if sample.loss is not None:
        parts.append(f"loss {sample.loss:.4g}")
    if "score" in sample.metrics:
        parts.append(f"score {sample.metrics['score']:.4g}")
    speed = iteration_rate(sample, first)
    if speed is not None:
        parts.append(f"{speed:.3g} it/s")
    eta = estimate_eta(sample, first)
    if eta is not None:
        parts.append(f"ETA {int(eta // 60)}m{int(eta % 60):02d}s")
    return "  ".join(parts)


def iteration_rate(sample: JobProgress, first: tuple[float, datetime] | None) -> float | None:
    """Iterations per second over the attempt so far; None before two samples set it apart."""
    if first is None:
        return None
    elapsed = (sample.at - first[1]).total_seconds()
    done = sample.iteration - first[0]
    return done / elapsed if done > 0 and elapsed > 0 else None


def outcome_lines(event: Any) -> list[str]:
    """A final event's whole result (each entry in full, JSON) or error: nothing cut short."""
    lines = []
    result = getattr(event, "result", None)
    if isinstance(result, dict) and result:
        lines.append("result:")
        width = max(len(str(k)) for k in result)
        lines += [f"  {k:<{width}}  {msgspec.json.encode(v).decode()}" for k, v in result.items()]
    error = getattr(event, "error", None)
    if error:
        lines += ["error:", *(f"  {line}" for line in str(error).splitlines())]
    return lines


def estimate_eta(sample: JobProgress, first: tuple[float, datetime] | None) -> float | None:
    """Seconds left at the attempt's average rate so far; None when it cannot be told."""
    if first is None or not sample.total:
        return None
    elapsed = (sample.at - first[1]).total_seconds()
    done = sample.iteration - first[0]
    return (sample.total - sample.iteration) * elapsed / done if done > 0 and elapsed > 0 else None


@click.command("logs")
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep showing progress until the job ends.")
@click.option("--json", "json_flag", is_flag=True, help="JSON lines.")
@pass_cli
@run_async
async def logs(cli: Cli, job_id: str, follow: bool, json_flag: bool) -> None:
    """A job's progress: its history, then (with --follow) live until it ends."""
    printer = ProgressPrinter(as_json(cli, json_flag))
    check_job_id(job_id)
    async with cli.connection() as (nc, log):
        events, version = await log.load("job", job_id)
        if not events:
            raise ValueError(f"no job {job_id}")
        # Only the workers the job was assigned to speak for it (a JobAssigned names each; a follow adds more).
        workers = assigned_workers(events)
        live = await nc.subscribe(cli.topology.job_telemetry("progress", job_id))
        history = await job_samples(nc, cli.topology, "progress", job_id, workers, JobProgress)
        for _seq, sample in history:
            printer.show(sample, live=False)
        final = next((e for e in reversed(events) if final_status(e.event)), None)
        if follow and final is None:
            relay = asyncio.create_task(_relay(cli.topology, live, printer, workers))
            try:
                async for stored in log.subscribe(version + 1, filter_subject=cli.topology.events("job", job_id)):
                    workers.extend(w for w in assigned_workers([stored]) if w not in workers)
                    if final_status(stored.event):
                        final = stored
                        break
            finally:
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
            # A worker reports the end only once its samples are stored: those the live relay had not shown
            # yet (still queued, or missed) are all in the stream now.
            seen = history[-1][0] if history else 0
            for _seq, sample in await job_samples(nc, cli.topology, "progress", job_id, workers, JobProgress,
                                                  from_seq=seen + 1):
                printer.show(sample)
        printer.end(final or events[-1])


async def _relay(topology: Topology, sub: Any, printer: ProgressPrinter, workers: list[str]) -> None:
    async for msg in sub.messages:
        parsed = topology.parse_job_telemetry(msg.subject)
        if parsed is None or not trusted_sample(parsed[2], workers):
            continue  # a worker the job is not on
        try:
            printer.show(decode_message(JobProgress, msg.data))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue


class ProgressPrinter:
    """Progress as JSON lines, plain lines, or (live, on a terminal) one bar redrawn in place."""

    def __init__(self, json_out: bool) -> None:
        self.json_out, self.tty = json_out, is_terminal() and not json_out
        self.first: tuple[float, datetime] | None = None
        self.attempt = 0
        self.latest: datetime | None = None
        self.last: JobProgress | None = None

    def show(self, sample: JobProgress, live: bool = True) -> None:
        """Print one sample (older than one already shown: skipped)."""
        if self.latest is not None and sample.at <= self.latest:
            return
        self.latest, self.last = sample.at, sample
        if sample.attempt != self.attempt:
            self.attempt, self.first = sample.attempt, (sample.iteration, sample.at)
        if self.json_out:
            emit_json(sample)
        elif self.tty and live:
            sys.stdout.write("\r" + progress_line(sample, self.first) + "\x1b[K")
            sys.stdout.flush()
        else:
            click.echo(f"{sample.at:%H:%M:%S}  attempt {sample.attempt}  {progress_line(sample, self.first)}")

    def end(self, last: StoredEvent) -> None:
        """Say where the job stands: its final (or latest) event."""
        if self.json_out:
            emit_json(event_record(last))
            return
        click.echo(("\n" if self.tty else "") + event_line(last))
        if self.last is not None and (speed := iteration_rate(self.last, self.first)) is not None:
            first = self.first or (0, self.last.at)
            seconds = (self.last.at - first[1]).total_seconds()
            click.echo(f"attempt {self.attempt}: {self.last.iteration - first[0]:g} iterations in {seconds:.1f} s"
                       f" ({speed:.3g} it/s)")
        for line in outcome_lines(last.event):
            click.echo(line)


@click.command("stop")
@click.argument("job_id", required=False)
@click.option("--all", "everything", is_flag=True, help="Stop every unfinished job.")
@click.option("--kind", type=click.Choice(["train", "eval"]), help="With --all: only jobs of this kind.")
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@pass_cli
@run_async
async def stop(cli: Cli, job_id: str | None, everything: bool, kind: str | None, json_flag: bool) -> None:
    """Stop a job (it checkpoints first), or every unfinished one with --all."""
    if bool(job_id) == everything:
        raise ValueError("name one job, or pass --all")
    command = StopJob(job_id=check_job_id(job_id) if job_id else None, kind=kind if everything else None)
    async with cli.connection() as (nc, _log):
        reply = await call(nc, cli.topology, command, JobsStopping)
    if as_json(cli, json_flag):
        emit_json({"job_ids": reply.job_ids})
    else:
        click.echo(f"stopping {len(reply.job_ids)} job(s)" + "".join(f"\n  {j}" for j in reply.job_ids))


def register(group: click.Group) -> None:
    """Add the job commands, and the worker commands beside them."""
    from ops.commands import worker

    for command in (submit_group, jobs, job, logs, stop):
        group.add_command(command)
    worker.register(group)
