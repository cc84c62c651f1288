"""`create_app(settings)`: the Litestar app; everything is built in its lifespan, nothing at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import nats.errors
from litestar import Litestar, MediaType, Request, Response, Router
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute

from contracts.errors import DomainError
from contracts.status import UNFINISHED_STATUSES
from contracts.subjects import Topology
from eventstore.connect import NatsUnavailable
from eventstore.follow import cancel_and_wait
from eventstore.log import AppendError, JetStreamLog
from eventstore.observability import get_logger, tracing_on
from eventstore.readmodels import ensure_tables
from eventstore.readmodels.jobs import list_jobs
from eventstore.server import resolve_nats_url
from eventstore.service import connect_with_retry, nats_security
from eventstore.stores import open_store
from eventstore.stores.base import ReadModelStore
from gateway import VERSION
from gateway.auth import Authenticator, FailureLimiter, role_guard
from gateway.controllers.common import provide_gateway
from gateway.controllers.jobs import JobsController
from gateway.controllers.maps import MapsController
from gateway.controllers.monitor import AlertsController, HostsController
from gateway.controllers.network import NetworkController
from gateway.controllers.system import SystemController, TokensController
from gateway.controllers.testing import TestingController
from gateway.controllers.training import TrainingController
from gateway.controllers.workers import WorkersController
from gateway.controllers.workloads import WorkloadsController
from gateway.core import Gateway, PageCache
from gateway.dashboard import dashboard_router
from gateway.hub import Hub
from gateway.maps import MapFiles
from gateway.metrics import metrics
from gateway.openapi import finish_schema
from gateway.phone import PhoneLink
from gateway.schemas.common import ErrorBody
from gateway.settings import Settings
from gateway.tokens import follow_tokens, load_registry
from gateway.ws import live_socket

log = get_logger(component="gateway")
UNAVAILABLE = (NatsUnavailable, AppendError, nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
               nats.errors.NoRespondersError)


MULTIPART_SLACK = 64 * 1024  # a multipart body's boundaries and part headers around the file


async def seed_runs(hub: Hub, store: ReadModelStore) -> None:
    """Tell the hub's `runs` feed the runs that were unfinished before it listened (their kind, start), and
    the hub the workers they are on."""
    cursor: str | None = None
    for _page in range(hub.runs.size // 500):
        rows, cursor = await list_jobs(store, statuses=UNFINISHED_STATUSES, cursor=cursor, limit=500)
        hub.runs.seed(rows)
        for row in rows:  # whose samples of them the feed believes (a later JobAssigned adds to it)
            if row["worker_id"]:
                hub.assignments.note(row["id"], (row["worker_id"],))
        if cursor is None:
            return


async def start_gateway(settings: Settings, store: ReadModelStore | None = None) -> Gateway:
    """Connect, open the store, fold the tokens and start the live hub."""
    common = settings.common
    nc = await connect_with_retry(resolve_nats_url(common.nats_url, common.data_path), "stoker-gateway",
                                  **nats_security(common))
    event_log = JetStreamLog(nc, Topology(common.prefix))
    await event_log.require_streams([event_log.topology.events_stream, event_log.topology.telemetry_stream])
    store = store or await open_store(common.database_url, common.sqlite_path)
    await ensure_tables(store)
    registry = await load_registry(event_log)
    hub = Hub(event_log)
    hub.phone = phone = PhoneLink(event_log, registry, settings.gateway.host, settings.gateway.port,
                                  settings.gateway.public_url, settings.gateway.phone_token_minutes)
    await phone.load()
    registry.listeners.append(lambda record: hub.revoke(record.token_id))
    await hub.start()
    await seed_runs(hub, store)
    limiter = FailureLimiter(settings.gateway.auth_max_failures, settings.gateway.auth_window_s)
    gw = Gateway(settings=settings, nc=nc, log=event_log, store=store, registry=registry,
                 auth=Authenticator(registry, limiter), hub=hub, pages=PageCache(settings.gateway.job_page_cache),
                 map_files=MapFiles(nc.jetstream(), event_log.topology.map_bucket, common.replicas), phone=phone)
    gw.tasks.append(asyncio.create_task(follow_tokens(event_log, registry), name="tokens"))
    gw.tasks.append(asyncio.create_task(gw.watch_checkpoint(), name="checkpoint"))
    return gw


async def stop_gateway(gw: Gateway, close_store: bool) -> None:
    """Stop the hub and the token follower; close NATS (and the store when the gateway opened it)."""
    await gw.hub.stop()
    await cancel_and_wait(gw.tasks)
    if close_store:
        await gw.store.close()
    await gw.nc.close()


def domain_error(_request: Request, exc: DomainError) -> Response[ErrorBody]:
    """A service's typed error as its HTTP status (the one place that maps them)."""
    return Response(ErrorBody(status_code=exc.code, detail=exc.message), status_code=exc.code)


def unavailable(_request: Request, exc: Exception) -> Response[ErrorBody]:
    """NATS trouble is a 503, never a 500."""
    detail = f"the event log or a service is unavailable: {exc.__class__.__name__}: {exc}".rstrip(": ")
    return Response(ErrorBody(status_code=503, detail=detail), status_code=503)


def internal_error(request: Request, exc: Exception) -> Response[ErrorBody]:
    """Anything unexpected: logged with its traceback, answered without it."""
    log.error("request failed", path=request.url.path, error=repr(exc), exc_info=exc)
    return Response(ErrorBody(status_code=500, detail="internal error; the gateway log has the details"),
                    status_code=500)


def openapi_config() -> OpenAPIConfig:
    """/schema: the OpenAPI document, with bearer tokens as the security scheme."""
    return OpenAPIConfig(
        title="stoker", version=VERSION, path="/schema",
        description="Long ML training and evaluation jobs on a fleet of machines. "
                    "Send `Authorization: Bearer <token>`.",
        components=Components(security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer")}),
        security=[{"BearerToken": []}])


def create_app(settings: Settings | None = None, *, store: ReadModelStore | None = None) -> Litestar:
    """The gateway app; `store` injects an already-open read-model store (tests, embedding)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        gw = await start_gateway(settings, store)
        app.state.gateway = gw
        try:
            yield
        finally:
            await stop_gateway(gw, close_store=store is None)

    api = Router(path="/api/v1", guards=[role_guard], route_handlers=[
        JobsController, TrainingController, TestingController, WorkersController, SystemController, TokensController,
        HostsController, AlertsController,
        NetworkController, WorkloadsController])
    # Uploads may be as large as a map may be (plus the multipart framing); every other body stays small.
    maps = Router(path="/api/v1", guards=[role_guard], route_handlers=[MapsController],
                  request_max_body_size=settings.gateway.maps_max_bytes + MULTIPART_SLACK)
    origins = list(settings.gateway.cors_origins)
    cors = CORSConfig(allow_origins=origins, allow_headers=["Authorization", "Content-Type"],
                      allow_methods=["GET", "POST", "DELETE", "OPTIONS"]) if origins else None
    handlers = {DomainError: domain_error, **dict.fromkeys(UNAVAILABLE, unavailable), 500: internal_error}
    app = Litestar(route_handlers=[api, maps, live_socket, metrics, dashboard_router()], lifespan=[lifespan],
                   openapi_config=openapi_config(),
                   dependencies={"gw": Provide(provide_gateway, sync_to_thread=False)}, cors_config=cors,
                   exception_handlers=handlers, request_max_body_size=1024 * 1024, before_request=answer_options,
                   plugins=tracing_plugins())
    finish_schema(app)
    return app


def tracing_plugins() -> list[Any]:
    """With tracing on, every HTTP request is a server span (W3C `traceparent` honoured), and the
    commands it sends continue that trace; without it, nothing is added to the request path."""
    if not tracing_on():
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    # HTTP only, and no span per ASGI send/receive: a WebSocket's lifetime is not one operation, and
    # health is polled too often to be worth a span each time.
    return [OpenTelemetryPlugin(OpenTelemetryConfig(
        scopes={ScopeType.HTTP}, exclude_spans=["receive", "send"], exclude=["^/api/v1/health$"]))]


async def answer_options(request: Request) -> Response | None:
    """OPTIONS lists every method of the path (Litestar's own `Allow` names only the first handler's)."""
    if request.method != "OPTIONS":
        return None
    template = request.scope.get("path_template", "")
    methods = {m for route in request.app.routes if isinstance(route, HTTPRoute) and route.path_format == template
               for m in route.methods}
    allowed = ", ".join(sorted(methods | {"OPTIONS"}))
    return Response(None, status_code=204, headers={"Allow": allowed}, media_type=MediaType.TEXT)
