"""Bodies of /api/v1/workloads: what the workers offer, with the parameters each workload declares."""

from __future__ import annotations

from typing import Any

from gateway.schemas.common import Reply


class ParamView(Reply, kw_only=True, omit_defaults=True):
    """One declared parameter: its JSON type (`integer`, `number | null`, …), default and one-line description."""

    name: str
    type: str
    default: Any = None
    description: str = ""
    nullable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusiveMinimum: float | None = None
    exclusiveMaximum: float | None = None
    enum: list[Any] | None = None


class WorkloadView(Reply, kw_only=True):
    """A registered workload: the workers that offer it and its parameters (none listed: it declares none)."""

    name: str
    workers: list[str]
    healthy_workers: int
    evaluation_of: str | None  # `2048-eval` runs the evaluations of `2048`
    declares_params: bool
    params: list[ParamView]
    params_schema: dict[str, Any] | None  # the JSON schema (msgspec.json.schema of the workload's Struct)


class WorkloadList(Reply, kw_only=True):
    """Every workload the registered workers offer, by name."""

    workloads: list[WorkloadView]
    total: int
