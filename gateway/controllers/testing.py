"""/api/v1/testing: evaluation runs of a training run's checkpoint (a test id is a job id)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, Parameter

from contracts.base import utcnow
from contracts.commands import SubmitJob
from contracts.errors import NotFound
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.telemetry import job_samples, last_job_sample
from gateway.auth import OPERATOR, VIEWER
from gateway.controllers.common import GW, SERVICE, errors, require_json_bools
from gateway.runs import (
    aggregate_episodes,
    by_episode,
    episode_log,
    episode_row,
    episode_with_events,
    run_status,
    testing_progress,
)
from gateway.schemas.jobs import JobView
from gateway.schemas.runs import (
    EpisodeLog,
    TestingResults,
    TestingStart,
    TestingStarted,
    TestingStatus,
    TestingStop,
    TestingStopped,
)
from gateway.views import elapsed_between


def checkpoint_label(job: JobView) -> str | None:
    """What an evaluation evaluates, as its start named it: a chosen checkpoint's name, else the training id."""
    return job.checkpoint_ref.name if job.checkpoint_ref is not None else job.checkpoint_of


async def episodes_of(gw: GW, job: JobView) -> list[EpisodeReport]:
    """Every episode report of an evaluation run (from the workers it was assigned to), one per episode number."""
    history = await job_samples(gw.nc, gw.topology, "episode", job.id, await gw.workers_of(job), EpisodeReport)
    return by_episode(report for _seq, report in history)


class TestingController(Controller):
    """Evaluation runs, field-compatible with the earlier testing API."""

    path = "/testing"
    tags = ["testing"]

    @post("/start", opt=OPERATOR, status_code=202, responses=errors(400, 404, *SERVICE))
    async def start(self, gw: GW, request: Request, data: JSONBody[TestingStart]) -> TestingStarted:
        """Queue an evaluation of training run `checkpoint`'s newest checkpoint (400 while it has none), or of
        the stored checkpoint so named (404 when there is none)."""
        await require_json_bools(request, "strict_params")
        source, _, _ = data.checkpoint.partition("/")
        chosen = await gw.checkpoint(data.checkpoint) if "/" in data.checkpoint else None
        await gw.job(source, "train")
        # The base name (`2048`): the worker runs `2048-eval` where it has it (contracts.workloads).
        job, _created = await gw.submit(SubmitJob(kind="eval", workload=data.workload,
                                                  params=data.params, episodes=data.episodes,
                                                  checkpoint_of=source, checkpoint_ref=chosen, map_id=data.map_id,
                                                  action_combinations=data.action_combinations,
                                                  strict_params=data.strict_params))
        return TestingStarted(test_id=job.id, status="started", map_id=job.map_id, checkpoint=data.checkpoint,
                              episodes=data.episodes, started_at=job.submitted_at, task_id=job.id,
                              state=run_status(job.status), workload=job.workload)

    @post("/stop", opt=OPERATOR, status_code=200, responses=errors(400, 404, 409, *SERVICE))
    async def stop(self, gw: GW, data: JSONBody[TestingStop | None] = None) -> TestingStopped:
        """Stop one evaluation run (409 when it has already finished), or every unfinished one."""
        ids = await gw.stop(data.test_id if data else None, "eval")
        message = f"stopping {len(ids)} evaluation run(s)" if ids else "no evaluation run to stop"
        return TestingStopped(stopped_count=len(ids), test_ids=ids, message=message)

    @get("/{test_id:str}/status", opt=VIEWER, responses=errors(404))
    async def status(self, gw: GW, test_id: FromPath[str]) -> TestingStatus:
        """Status, progress and the newest finished episode."""
        job = await gw.job(test_id, "eval")
        workers = await gw.workers_of(job)
        progress = await last_job_sample(gw.nc, gw.topology, "progress", job.id, workers, JobProgress)
        episode = await last_job_sample(gw.nc, gw.topology, "episode", job.id, workers, EpisodeReport)
        # Episodes are numbered as they began and end in any order: the count done is the progress report's.
        done = progress.iteration if progress else (episode.episode if episode else 0)
        return TestingStatus(test_id=job.id, status=run_status(job.status), map_id=job.map_id,
                             map_name=await gw.map_name(job.map_id), checkpoint=checkpoint_label(job),
                             progress=testing_progress(job, done, utcnow()),
                             latest_episode=episode_row(episode) if episode else None,
                             started_at=job.started_at or job.submitted_at, error=job.error)

    @get("/{test_id:str}/results", opt=VIEWER, responses=errors(404))
    async def results(self, gw: GW, test_id: FromPath[str]) -> TestingResults:
        """Every episode in episode order with its events, and statistics of each figure."""
        job = await gw.job(test_id, "eval")
        reports = await episodes_of(gw, job)
        duration = elapsed_between(job.started_at, job.finished_at, utcnow()) if job.started_at else None
        return TestingResults(test_id=job.id, map_id=job.map_id, map_name=await gw.map_name(job.map_id),
                              checkpoint=checkpoint_label(job), started_at=job.started_at, completed_at=job.finished_at,
                              duration_seconds=duration, episodes=[episode_with_events(r) for r in reports],
                              aggregate_metrics=aggregate_episodes(reports, job.result),
                              status=run_status(job.status), result=job.result)

    @get("/{test_id:str}/logs", opt=VIEWER, responses=errors(400, 404))
    async def logs(self, gw: GW, test_id: FromPath[str],
                   episode_num: Annotated[int, Parameter(ge=0, le=1_000_000)]) -> EpisodeLog:
        """One episode's move-by-move log."""
        job = await gw.job(test_id, "eval")
        found = [r for r in await episodes_of(gw, job) if r.episode == episode_num]
        if not found:
            raise NotFound(f"evaluation run {job.id} has no episode {episode_num} (yet)")
        return episode_log(job.id, found[-1])
