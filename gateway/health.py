"""Health: the NATS connection, the streams, each service's `$SRV.PING`, projection lag, the read-model store."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import msgspec

from contracts.base import utcnow
from eventstore.projection import dead_letter_counts, malformed_total
from eventstore.readmodels import projection_checkpoints
from eventstore.readmodels.workers import worker_counts
from gateway import VERSION, monitoring
from gateway.schemas.system import (
    Health,
    NatsHealth,
    ProjectionHealth,
    ServiceHealth,
    StoreHealth,
    StreamHealth,
    WorkersHealth,
)

PING_WAIT_S = 0.25


async def ping_services(nc: Any, prefix: str, wait: float = PING_WAIT_S) -> dict[str, list[dict[str, Any]]]:
    """Every micro service of this installation that answers `$SRV.PING` within `wait`: {service: [replies]}."""
    replies: dict[str, list[dict[str, Any]]] = {}
    inbox = nc.new_inbox()

    async def collect(msg: Any) -> None:
        try:
            reply = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            return
        name = reply.get("name", "") if isinstance(reply, dict) else ""
        if name.startswith(f"{prefix}-"):
            replies.setdefault(name.removeprefix(f"{prefix}-"), []).append(reply)

    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish("$SRV.PING", b"", reply=inbox)
        await asyncio.sleep(wait)
    finally:
        await sub.unsubscribe()
    return replies


async def _stream(gw: Any, name: str) -> StreamHealth:
    try:
        state = await gw.log.stream_state(name)
    except Exception as exc:
        return StreamHealth(name=name, ok=False, messages=0, last_seq=0, error=f"{exc.__class__.__name__}: {exc}")
    return StreamHealth(name=name, ok=True, messages=state.messages, last_seq=state.last_seq)


async def _store(gw: Any) -> tuple[StoreHealth, dict[str, tuple[int, str | None]], dict[str, dict[str, int]], int]:
    try:
        checkpoints = await projection_checkpoints(gw.store)
        counts = await dead_letter_counts(gw.store)
        malformed = await malformed_total(gw.store)
    except Exception as exc:
        return StoreHealth(ok=False, dialect=gw.store.dialect, error=f"{exc.__class__.__name__}: {exc}"), {}, {}, 0
    return StoreHealth(ok=True, dialect=gw.store.dialect), checkpoints, counts, malformed


def _services(replies: dict[str, list[dict[str, Any]]], required: list[str]) -> list[ServiceHealth]:
    names = sorted(set(replies) | set(required))
    return [ServiceHealth(name=n, required=n in required, up=bool(replies.get(n)), instances=len(replies.get(n, [])),
                          versions=sorted({str(r.get("version", "")) for r in replies.get(n, [])})) for n in names]


async def _waiting_since(gw: Any, seq: int) -> datetime | None:
    """When the oldest event a projection has not applied (the one after its checkpoint) was appended."""
    try:
        return await gw.log.appended_at(seq + 1)
    except Exception:
        return None


async def _projections(gw: Any, checkpoints: dict[str, tuple[int, str | None]], counts: dict[str, dict[str, int]],
                       last: int, now: datetime) -> list[ProjectionHealth]:
    out = []
    for name, (seq, at) in sorted(checkpoints.items()):
        lag = max(0, last - seq)
        since = await _waiting_since(gw, seq) if lag else None
        behind = max(0.0, (now - since).total_seconds()) if since else None
        seen = counts.get(name, {})
        out.append(ProjectionHealth(name=name, checkpoint=seq, lag=lag, behind_s=behind, updated_at=at,
                                    malformed=seen.get("malformed", 0), dead_letters=seen.get("failed", 0)))
    return out


def assess(*, connected: bool, streams: list[StreamHealth], store: StoreHealth, services: list[ServiceHealth],
           projections: list[ProjectionHealth], max_lag: int, max_behind_s: float) -> tuple[str, list[str]]:
    """The overall status and why it is not ok: down without NATS or the event stream; degraded (503 too)
    when a stream, the store, a required service or a read model (too far or too long behind) is not fine."""
    if not connected:
        return "down", ["not connected to NATS"]
    if not streams or not streams[0].ok:
        return "down", [f"the event stream is unavailable: {streams[0].error if streams else 'no answer'}"]
    problems = [f"stream {s.name} is unavailable: {s.error}" for s in streams if not s.ok]
    if not store.ok:
        problems.append(f"the read-model store is unavailable: {store.error}")
    problems += [f"{s.name} is not answering" for s in services if s.required and not s.up]
    for p in projections:
        if p.lag > max_lag:
            problems.append(f"read model {p.name} is {p.lag} events behind (more than {max_lag})")
        elif p.behind_s is not None and p.behind_s > max_behind_s:
            problems.append(f"read model {p.name} has not applied event {p.checkpoint + 1} for {p.behind_s:.0f}s"
                            f" (more than {max_behind_s:g}s)")
    return ("degraded" if problems else "ok"), problems


def _warnings(malformed: int, projections: list[ProjectionHealth]) -> list[str]:
    notes = [f"{malformed} malformed message(s) on the event stream were skipped (stoker events tail marks them)"] \
        if malformed else []
    notes += [f"read model {p.name} quarantined {p.dead_letters} event(s) it could not apply (stoker_dead_letters)"
              for p in projections if p.dead_letters]
    return notes


MAX_HEALTH_ALERTS = 50


async def _monitored(gw: Any, connected: bool, store_ok: bool, now: datetime) -> tuple[list, list, int]:
    """Each host's newest figures and the open alerts (newest first, at most MAX_HEALTH_ALERTS of them)."""
    hosts, alerts = [], []
    try:
        if connected:
            hosts = [monitoring.summary(s, now) for s in await monitoring.latest_samples(gw.nc, gw.topology)]
        if store_ok:
            alerts = await monitoring.alert_views(gw.store, include_resolved=False, limit=10_000)
    except Exception:  # a hiccup here says nothing of the platform's own parts: the report goes on without it
        pass
    return hosts, alerts[:MAX_HEALTH_ALERTS], len(alerts)


def _alert_warnings(alerts: list, count: int) -> list[str]:
    if not count:
        return []
    named = "; ".join(f"{a.rule} on {a.target}" for a in alerts[:5])
    more = f" and {count - 5} more" if count > 5 else ""
    return [f"{count} open alert(s): {named}{more} (stoker alerts)"]


async def check(gw: Any) -> Health:
    """Look at every part now; `status` is ok only when all of them are."""
    topology = gw.topology
    settings = gw.settings.gateway
    connected = bool(gw.nc.is_connected)
    names = (topology.events_stream, topology.telemetry_stream, topology.dispatch_stream)
    streams = [await _stream(gw, n) for n in names] if connected else []
    replies = await ping_services(gw.nc, topology.prefix) if connected else {}
    store, checkpoints, counts, malformed = await _store(gw)
    last = streams[0].last_seq if streams else 0
    now = utcnow()
    projections = await _projections(gw, checkpoints, counts, last, now)
    services = _services(replies, list(settings.required_services))
    status, problems = assess(connected=connected, streams=streams, store=store, services=services,
                              projections=projections, max_lag=settings.max_projection_lag,
                              max_behind_s=settings.max_projection_behind_s)
    url = gw.nc.connected_url.geturl() if connected and gw.nc.connected_url else None
    try:
        ready = (await worker_counts(gw.store)).get("healthy", 0) if store.ok else 0
    except Exception:  # the store just failed: `store` says so on the next look
        ready = 0
    hosts, alerts, open_count = await _monitored(gw, connected, store.ok, now)
    return Health(status="healthy" if status == "ok" else "unhealthy", version=VERSION, timestamp=now,
                  database="connected" if store.ok else "disconnected",
                  storage="available" if streams and all(s.ok for s in streams) else "unavailable",
                  workers=WorkersHealth(count=ready, status="available" if ready else "none"), state=status,
                  problems=problems, warnings=_warnings(malformed, projections) + _alert_warnings(alerts, open_count),
                  malformed=malformed, hosts=hosts, open_alerts=open_count, alerts=alerts,
                  dead_letters=sum(p.dead_letters for p in projections), nats=NatsHealth(connected=connected, url=url),
                  streams=streams, services=services, projections=projections, store=store, checked_at=now)
