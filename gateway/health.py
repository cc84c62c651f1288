"""Health: the NATS connection, the streams, each service's `$SRV.PING`, projection lag, the read-model store."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from contracts.base import utcnow
from gateway import queries
from gateway.schemas.system import (
    Health,
    NatsHealth,
    ProjectionHealth,
    ServiceHealth,
    StoreHealth,
    StreamHealth,
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
        info = await gw.log.js.stream_info(name)
    except Exception as exc:
        return StreamHealth(name=name, ok=False, messages=0, last_seq=0, error=f"{exc.__class__.__name__}: {exc}")
    return StreamHealth(name=name, ok=True, messages=int(info.state.messages), last_seq=int(info.state.last_seq))


async def _store(gw: Any) -> tuple[StoreHealth, dict[str, tuple[int, str | None]]]:
    try:
        checkpoints = await queries.projection_checkpoints(gw.store)
    except Exception as exc:
        return StoreHealth(ok=False, dialect=gw.store.dialect, error=f"{exc.__class__.__name__}: {exc}"), {}
    return StoreHealth(ok=True, dialect=gw.store.dialect), checkpoints


def _services(replies: dict[str, list[dict[str, Any]]], required: list[str]) -> list[ServiceHealth]:
    names = sorted(set(replies) | set(required))
    return [ServiceHealth(name=n, required=n in required, up=bool(replies.get(n)), instances=len(replies.get(n, [])),
                          versions=sorted({str(r.get("version", "")) for r in replies.get(n, [])})) for n in names]


async def check(gw: Any) -> Health:
    """Look at every part now; `status` is ok only when all of them are."""
    topology = gw.topology
    connected = bool(gw.nc.is_connected)
    names = (topology.events_stream, topology.telemetry_stream, topology.dispatch_stream)
    streams = [await _stream(gw, n) for n in names] if connected else []
    replies = await ping_services(gw.nc, topology.prefix) if connected else {}
    store, checkpoints = await _store(gw)
    last = streams[0].last_seq if streams else 0
    projections = [ProjectionHealth(name=n, checkpoint=seq, lag=max(0, last - seq), updated_at=at)
                   for n, (seq, at) in sorted(checkpoints.items())]
    services = _services(replies, list(gw.settings.gateway.required_services))
    if not connected or not streams or not streams[0].ok:
        status = "down"
    elif not all(s.ok for s in streams) or not store.ok or not all(s.up for s in services if s.required):
        status = "degraded"
    else:
        status = "ok"
    url = gw.nc.connected_url.geturl() if connected and gw.nc.connected_url else None
    return Health(status=status, nats=NatsHealth(connected=connected, url=url), streams=streams, services=services,
                  projections=projections, store=store, checked_at=utcnow())
