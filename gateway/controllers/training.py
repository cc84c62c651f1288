"""/api/v1/training: start, stop, status and logs of training runs (a training id is a job id)."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody

from contracts.base import utcnow
from contracts.commands import SubmitJob
from contracts.telemetry import JobProgress
from eventstore.telemetry import job_samples, last_job_sample
from gateway.auth import OPERATOR, VIEWER
from gateway.controllers.common import GW, SERVICE, errors, require_json_bools
from gateway.runs import latest_metrics, run_status, training_logs, training_progress
from gateway.schemas.runs import (
    TrainingLogs,
    TrainingStart,
    TrainingStarted,
    TrainingStatus,
    TrainingStop,
    TrainingStopped,
)


class TrainingController(Controller):
    """Training runs, field-compatible with the earlier training API."""

    path = "/training"
    tags = ["training"]

    @post("/start", opt=OPERATOR, status_code=202, responses=errors(400, 404, *SERVICE))
    async def start(self, gw: GW, request: Request, data: JSONBody[TrainingStart]) -> TrainingStarted:
        """Queue a training run."""
        await require_json_bools(request, "strict_params")
        job, _created = await gw.submit(SubmitJob(kind="train", workload=data.workload, params=data.params,
                                                  max_iterations=data.max_iterations, map_id=data.map_id,
                                                  action_combinations=data.action_combinations,
                                                  idempotency_key=data.idempotency_key,
                                                  strict_params=data.strict_params))
        return TrainingStarted(training_id=job.id, status="started", map_id=job.map_id,
                               max_iterations=job.max_iterations, started_at=job.submitted_at, task_id=job.id,
                               state=run_status(job.status), workload=job.workload, params=job.params,
                               action_combinations=job.action_combinations)

    @post("/stop", opt=OPERATOR, status_code=200, responses=errors(400, 404, 409, *SERVICE))
    async def stop(self, gw: GW, data: JSONBody[TrainingStop | None] = None) -> TrainingStopped:
        """Stop one training run (409 when it has already finished), or every unfinished one."""
        training_id = data.training_id if data else None
        ids = await gw.stop(training_id, "train")
        message = f"stopping {len(ids)} training run(s)" if ids else "no training run to stop"
        return TrainingStopped(stopped_count=len(ids), training_ids=ids, message=message)

    @get("/{training_id:str}/status", opt=VIEWER, responses=errors(404))
    async def status(self, gw: GW, training_id: FromPath[str]) -> TrainingStatus:
        """Status, progress and the newest metrics."""
        job = await gw.job(training_id, "train")
        last = await last_job_sample(gw.nc, gw.topology, "progress", job.id, await gw.workers_of(job), JobProgress)
        return TrainingStatus(training_id=job.id, status=run_status(job.status), map_id=job.map_id,
                              map_name=await gw.map_name(job.map_id),
                              progress=training_progress(job, last, utcnow()), latest_metrics=latest_metrics(last),
                              started_at=job.started_at or job.submitted_at, workload=job.workload, error=job.error)

    @get("/{training_id:str}/logs", opt=VIEWER, responses=errors(404))
    async def logs(self, gw: GW, training_id: FromPath[str]) -> TrainingLogs:
        """Every reported iteration's loss, with statistics."""
        job = await gw.job(training_id, "train")
        samples = await job_samples(gw.nc, gw.topology, "progress", job.id, await gw.workers_of(job), JobProgress)
        return training_logs(job, [s for _seq, s in samples], utcnow())
