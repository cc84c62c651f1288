"""/api/v1/workers: the fleet, and registration for agents that join over HTTP."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.params import FromPath, JSONBody

from contracts.commands import RegisterWorker, WorkerAccepted
from contracts.errors import NotFound
from eventstore.readmodels.jobs import jobs_on_workers
from eventstore.readmodels.workers import last_heartbeats, list_workers
from gateway.auth import OPERATOR, VIEWER
from gateway.controllers.common import GW, SERVICE, errors
from gateway.schemas.workers import RegisterWorkerBody, WorkerList, WorkerRegistration, WorkerView
from gateway.views import worker_view


async def workers(gw: GW, worker_id: str | None = None) -> list[WorkerView]:
    """Workers with their newest heartbeat and the jobs they hold."""
    records = await list_workers(gw.store, worker_id)
    running = await jobs_on_workers(gw.store) if records else {}
    beats = await last_heartbeats(gw.nc, gw.topology, [r["id"] for r in records])
    return [worker_view(r, running.get(r["id"], []), beats[r["id"]]) for r in records]


class WorkersController(Controller):
    """Workers as discovery registered them."""

    path = "/workers"
    tags = ["workers"]

    @get("/", opt=VIEWER, responses=errors())
    async def list_workers(self, gw: GW) -> WorkerList:
        """Every known worker: healthy, lost or left."""
        return WorkerList(items=await workers(gw))

    @get("/{worker_id:str}", opt=VIEWER, responses=errors(404))
    async def get_worker(self, gw: GW, worker_id: FromPath[str]) -> WorkerView:
        """One worker."""
        found = await workers(gw, worker_id)
        if not found:
            raise NotFound(f"no worker {worker_id}")
        return found[0]

    @post("/register", opt=OPERATOR, status_code=200, responses=errors(400, *SERVICE))
    async def register(self, gw: GW, data: JSONBody[RegisterWorkerBody]) -> WorkerRegistration:
        """Register (or register again) a worker; idempotent, like RegisterWorker over NATS."""
        reply = await gw.call(RegisterWorker(worker_id=data.worker_id, capabilities=data.capabilities),
                              WorkerAccepted)
        return WorkerRegistration(worker_id=reply.worker_id, status=reply.status, seq=reply.seq)
