"""/api/v1/hosts (every machine's newest sample and recent history) and /api/v1/alerts (open, or all)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.params import Parameter, QueryParameter

from contracts.base import utcnow
from gateway import monitoring
from gateway.auth import VIEWER
from gateway.controllers.common import GW, errors
from gateway.schemas.monitor import AlertList, HostList


class HostsController(Controller):
    """Machines as their monitors sample them."""

    path = "/hosts"
    tags = ["monitor"]

    @get("/", opt=VIEWER, responses=errors(400))
    async def list_hosts(self, gw: GW, history_s: Annotated[float, Parameter(ge=0, le=86400)] = 3600.0) -> HostList:
        """A card per machine: its newest sample (CPU, memory, disks, GPUs, processes) and `history_s` of history."""
        views = await monitoring.host_views(gw.nc, gw.topology, utcnow(), history_s)
        return HostList(items=views, history_s=history_s)


class AlertsController(Controller):
    """Alerts the monitor raised, newest first."""

    path = "/alerts"
    tags = ["monitor"]

    @get("/", opt=VIEWER, responses=errors(400))
    async def list_alerts(self, gw: GW, include_resolved: Annotated[bool, QueryParameter(name="all")] = False,
                          limit: Annotated[int, Parameter(ge=1, le=10_000)] = 200) -> AlertList:
        """The open alerts, or with `all=true` the resolved ones too, each with what to do."""
        return AlertList(items=await monitoring.alert_views(gw.store, include_resolved=include_resolved, limit=limit))
