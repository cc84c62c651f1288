"""/api/v1/jobs: submit, list, inspect and stop jobs; their timeline, progress, episodes and checkpoints."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from contracts.base import MAX_SAFE_INT
from contracts.commands import SubmitJob
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.readmodels.jobs import job_checkpoints, list_jobs
from eventstore.telemetry import SamplePlan, job_samples, last_job_samples, sample_plan
from gateway.auth import OPERATOR, VIEWER
from gateway.controllers.common import GW, SERVICE, errors, require_json_bools
from gateway.schemas.jobs import (
    EpisodeHistory,
    EpisodeSample,
    JobCheckpoints,
    JobKind,
    JobPage,
    JobStatus,
    JobTimeline,
    JobView,
    ProgressHistory,
    ProgressSample,
    StopResult,
    SubmitJobBody,
)
from gateway.views import checkpoint_view, job_view, row_progress, timeline_entry

Limit = Annotated[int, Parameter(ge=1, le=500, description="page size")]
Since = Annotated[int, Parameter(ge=0, le=MAX_SAFE_INT, description="only what came after this sequence")]


PROGRESSING = ("running", "stopping")


def progress_plan(gw: GW, items: list[JobView]) -> tuple[tuple[int, ...], SamplePlan | None]:
    """Which rows show progress (running or stopping) and where their samples are: their current worker's,
    else the old subject's history."""
    running = tuple(i for i, job in enumerate(items) if job.status in PROGRESSING)
    if not running:
        return running, None
    return running, sample_plan(gw.topology, "progress",
                                ((items[i].id, (items[i].worker_id,) if items[i].worker_id else ()) for i in running))


async def with_progress(gw: GW, items: list[JobView],
                        plan: tuple[tuple[int, ...], SamplePlan | None] | None = None) -> list[JobView]:
    """The jobs, the running ones with their newest progress report from their current worker (one batched
    direct get for the page; the old subject's history counts only when that worker has sent none)."""
    running, samples_plan = plan or progress_plan(gw, items)
    if samples_plan is None:
        return items
    samples = await last_job_samples(gw.nc, gw.topology, "progress", samples_plan, JobProgress)
    out = list(items)
    for i, sample in zip(running, samples, strict=True):
        if sample is not None:
            total = out[i].max_iterations if out[i].kind == "train" else out[i].episodes
            out[i] = msgspec.structs.replace(out[i], progress=row_progress(sample, total))
    return out


class JobsController(Controller):
    """Jobs: the scheduler's queue and history."""

    path = "/jobs"
    tags = ["jobs"]

    @post("/", opt=OPERATOR, status_code=201, responses={
        200: ResponseSpec(JobView, description="an existing job with the same idempotency_key",
                          generate_examples=False), **errors(400, 404, *SERVICE)})
    async def submit(self, gw: GW, request: Request, data: JSONBody[SubmitJobBody]) -> Response[JobView]:
        """Queue a training or evaluation run."""
        await require_json_bools(request, "strict_params")
        command = SubmitJob(**msgspec.structs.asdict(data))
        view, created = await gw.submit(command)
        return Response(view, status_code=201 if created else 200)

    @get("/", opt=VIEWER, responses=errors(400))
    async def list_jobs(self, gw: GW, status: FromQuery[list[JobStatus] | None] = None,
                        kind: FromQuery[JobKind | None] = None,
                        workload: Annotated[str | None, Parameter(max_length=200)] = None,
                        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
                        limit: Limit = 50) -> JobPage:
        """Jobs newest first, filtered by status, kind and workload, a page at a time."""
        key = (tuple(status or ()), kind, workload, cursor, limit)
        # A dashboard polls this; the rows only change when the projector's checkpoint moves.
        seq = gw.jobs_seq
        cached = gw.pages.get(key, seq)
        if cached is None:
            rows, next_cursor = await list_jobs(gw.store, statuses=key[0], kind=kind, workload=workload,
                                                cursor=cursor, limit=limit)
            page = JobPage(items=[job_view(r) for r in rows], next_cursor=next_cursor)
            cached = (page, progress_plan(gw, page.items))
            gw.pages.put(key, seq, cached)
        page, plan = cached
        # Progress is telemetry, newer than any cached page: the running rows get theirs now.
        return msgspec.structs.replace(page, items=await with_progress(gw, page.items, plan))

    @get("/{job_id:str}", opt=VIEWER, responses=errors(404))
    async def get_job(self, gw: GW, job_id: FromPath[str]) -> JobView:
        """One job (a running one with its newest progress)."""
        return (await with_progress(gw, [await gw.job(job_id)]))[0]

    @post("/{job_id:str}/stop", opt=OPERATOR, status_code=202, responses=errors(404, 409, *SERVICE))
    async def stop(self, gw: GW, job_id: FromPath[str]) -> StopResult:
        """Ask a job to stop (a running one checkpoints first); 409 when it has already finished."""
        return StopResult(job_ids=await gw.stop(job_id))

    @get("/{job_id:str}/events", opt=VIEWER, responses=errors(404))
    async def timeline(self, gw: GW, job_id: FromPath[str]) -> JobTimeline:
        """Every event of the job, oldest first."""
        await gw.job(job_id)
        events, _version = await gw.log.load("job", job_id)
        return JobTimeline(job_id=job_id, events=[timeline_entry(e) for e in events])

    @get("/{job_id:str}/progress", opt=VIEWER, responses=errors(400, 404))
    async def progress(self, gw: GW, job_id: FromPath[str], since: Since = 0,
                       limit: Annotated[int, Parameter(ge=1, le=100_000)] = 10_000) -> ProgressHistory:
        """Progress samples from telemetry (kept for a week), oldest first."""
        job = await gw.job(job_id)
        samples = await job_samples(gw.nc, gw.topology, "progress", job_id, await gw.workers_of(job), JobProgress,
                                    from_seq=since + 1, limit=limit)
        items = [ProgressSample(seq=seq, attempt=s.attempt, worker_id=s.worker_id, iteration=s.iteration,
                                total=s.total, loss=s.loss, metrics=dict(s.metrics), at=s.at) for seq, s in samples]
        return ProgressHistory(job_id=job_id, samples=items, next_since=items[-1].seq if items else since)

    @get("/{job_id:str}/episodes", opt=VIEWER, responses=errors(400, 404))
    async def episodes(self, gw: GW, job_id: FromPath[str], since: Since = 0,
                       limit: Annotated[int, Parameter(ge=1, le=10_000)] = 1_000) -> EpisodeHistory:
        """An evaluation's episode reports from telemetry (kept for a week), oldest first, with their move logs;
        `since` takes the sequence numbers of /progress and of the live socket (one telemetry stream)."""
        job = await gw.job(job_id)
        reports = await job_samples(gw.nc, gw.topology, "episode", job_id, await gw.workers_of(job), EpisodeReport,
                                    from_seq=since + 1, limit=limit)
        items = [EpisodeSample(seq=seq, attempt=r.attempt, episode=r.episode, score=r.score, figures=dict(r.figures),
                               log=list(r.log), at=r.at) for seq, r in reports]
        return EpisodeHistory(job_id=job_id, episodes=items, next_since=items[-1].seq if items else since)

    @get("/{job_id:str}/checkpoints", opt=VIEWER, responses=errors(404))
    async def checkpoints(self, gw: GW, job_id: FromPath[str]) -> JobCheckpoints:
        """The job's stored checkpoints, oldest first."""
        await gw.job(job_id)
        rows = await job_checkpoints(gw.store, job_id)
        return JobCheckpoints(job_id=job_id, checkpoints=[checkpoint_view(r) for r in rows])
