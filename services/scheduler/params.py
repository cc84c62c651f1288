"""Checking a submission's params against the parameters its workload declares. Pure: reads the board only.

This is the one place params are checked: every submission (REST, CLI, dashboard, a script's SubmitJob)
reaches the scheduler's decider, whose board holds every registered worker's offer, schemas included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.errors import InvalidParams
from contracts.params import check_params as check_params_against
from contracts.params import params_problem
from contracts.workloads import eval_name
from services.scheduler.board import JobBoard


def check_params(state: JobBoard, workload: str, kind: str, params: Mapping[str, Any]) -> None:
    """Refuse params the workload's declared parameters do not allow (InvalidParams names them and the known).

    The schema is the one a registered worker offers for the workload the job would run (`X-eval` for an
    evaluation of `X` where offered). Params fitting any offered version of it pass; a workload no worker
    has described (or one without declared parameters) is not checked.
    """
    schemas = offered_schemas(state, workload, kind)
    if not schemas:
        return
    problems = [check_params_against(params, schema) for schema in schemas]
    if any(not p for p in problems):
        return
    raise InvalidParams(params_problem(run_name(state, workload, kind), problems[0], schemas[0]))


def run_name(state: JobBoard, workload: str, kind: str) -> str:
    """The workload a job of `workload` runs: `X-eval` for an evaluation of `X` where a worker offers it."""
    return eval_name(workload, {n for w in state.workers.values() for n in w.workloads or ()}) if kind == "eval" \
        else workload


def offered_schemas(state: JobBoard, workload: str, kind: str) -> list[dict[str, Any]]:
    """The distinct parameter schemas registered workers offer for the workload a job of `workload` runs."""
    name = run_name(state, workload, kind)
    digests = {d: None for w in state.workers.values() if (d := (w.workload_params or {}).get(name)) is not None}
    return [state.param_schemas[d] for d in digests if d in state.param_schemas]
