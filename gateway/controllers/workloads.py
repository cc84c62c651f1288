"""/api/v1/workloads: every workload the registered workers offer, with its declared parameters."""

from __future__ import annotations

from litestar import Controller, get

from contracts.params import param_rows
from contracts.workloads import EVAL_SUFFIX
from eventstore.readmodels.workers import offered_workloads
from gateway.auth import VIEWER
from gateway.controllers.common import GW, errors
from gateway.schemas.workloads import ParamView, WorkloadList, WorkloadView


def workload_view(offer: dict) -> WorkloadView:
    """An offered workload as the API shows it."""
    schema = offer["params_schema"]
    name = offer["name"]
    base = name[:-len(EVAL_SUFFIX)] if name.endswith(EVAL_SUFFIX) and len(name) > len(EVAL_SUFFIX) else None
    return WorkloadView(name=name, workers=offer["workers"], healthy_workers=offer["healthy_workers"],
                        evaluation_of=base, declares_params=schema is not None,
                        params=[ParamView(**row) for row in param_rows(schema)] if schema else [],
                        params_schema=schema)


class WorkloadsController(Controller):
    """The workloads of the fleet."""

    path = "/workloads"
    tags = ["workloads"]

    @get("/", opt=VIEWER, responses=errors())
    async def list_workloads(self, gw: GW) -> WorkloadList:
        """Every workload registered workers (healthy or lost, not departed) offer, with its parameter schema."""
        items = [workload_view(o) for o in await offered_workloads(gw.store)]
        return WorkloadList(workloads=items, total=len(items))
