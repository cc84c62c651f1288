"""The worker registry's decider: registrations, heartbeats and silence in, worker events out. Pure.

Registration emits `WorkerRegistered` every time (docs/protocol.md): it is how a worker that
restarted, or that was lost, left or forgotten, says "I am here, with these capabilities", and how
a worker that is shutting down says it takes no new jobs (`draining`). It is rare (a worker
registers at start, when told, and once as it leaves), so the log does not fill with it.

Heartbeats are telemetry, not events: the time each worker was last heard from (`seen`) is kept
beside the state, and the time-based decisions are functions of (state, seen, now).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.base import Event
from contracts.commands import DeregisterWorker, RegisterWorker
from contracts.errors import InvalidCommand, NotFound
from contracts.events import MAX_SLOTS
from contracts.params import MAX_SCHEMA_BYTES, schema_size

Status = Literal["healthy", "lost", "left"]


class WorkerRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One known worker: what it offers, whether it is healthy, and since when."""

    capabilities: ev.WorkerCapabilities
    status: Status
    since: datetime  # when it entered `status` (registered, lost or left)


class Registry(msgspec.Struct, frozen=True, kw_only=True):
    """The fold of the worker events."""

    workers: dict[str, WorkerRecord] = {}


class Timing(msgspec.Struct, frozen=True, kw_only=True):
    """How long silence lasts before a worker is lost, and how long it stays listed after that."""

    lost_after_s: float = 10.0
    forget_after_s: float = 300.0


def initial_state() -> Registry:
    """No workers."""
    return Registry()


def decide(command: RegisterWorker | DeregisterWorker, state: Registry, now: datetime) -> list[Event]:
    """The events one command causes; raises InvalidCommand / NotFound when it cannot be carried out."""
    if isinstance(command, RegisterWorker):
        validate_capabilities(command.capabilities)
        return [ev.WorkerRegistered(worker_id=command.worker_id, capabilities=command.capabilities,
                                    registered_at=now, draining=command.draining)]
    if isinstance(command, DeregisterWorker):
        record = state.workers.get(command.worker_id)
        if record is None:
            raise NotFound(f"no worker {command.worker_id}")
        if record.status == "left":
            return []
        return [ev.WorkerDeregistered(worker_id=command.worker_id, reason=command.reason, deregistered_at=now)]
    raise InvalidCommand(f"discovery does not handle {type(command).__name__}")


def validate_capabilities(capabilities: ev.WorkerCapabilities) -> None:
    """GPU indices are distinct (no type says so); slots within MAX_SLOTS (a command built here is not decoded)."""
    indices = [gpu.index for gpu in capabilities.gpus]
    if len(set(indices)) != len(indices):
        raise InvalidCommand(f"capabilities.gpus: GPU indices must be distinct, got {indices}")
    if capabilities.slots > MAX_SLOTS:
        raise InvalidCommand(f"capabilities.slots: at most {MAX_SLOTS}, got {capabilities.slots}")
    for name, schema in (capabilities.workload_params or {}).items():
        if schema_size(schema) > MAX_SCHEMA_BYTES:
            raise InvalidCommand(f"capabilities.workload_params[{name!r}]: over {MAX_SCHEMA_BYTES} bytes")


def decide_heartbeat(state: Registry, worker_id: str, now: datetime) -> list[Event]:
    """A heartbeat brings a lost worker back; from a healthy, departed or unknown worker it changes nothing."""
    record = state.workers.get(worker_id)
    if record is not None and record.status == "lost":
        return [ev.WorkerReturned(worker_id=worker_id, returned_at=now)]
    return []


def decide_tick(state: Registry, seen: Mapping[str, datetime], now: datetime, timing: Timing) -> list[Event]:
    """Silence: healthy workers unheard for `lost_after_s` are lost; lost or departed ones are forgotten later."""
    lost_after, forget_after = timedelta(seconds=timing.lost_after_s), timedelta(seconds=timing.forget_after_s)
    out: list[Event] = []
    for worker_id, record in sorted(state.workers.items()):
        if record.status == "healthy":
            last = seen.get(worker_id)
            if last is not None and now - last >= lost_after:
                out.append(ev.WorkerLost(worker_id=worker_id, last_seen=last, lost_at=now))
        elif now - record.since >= forget_after:
            out.append(ev.WorkerForgotten(worker_id=worker_id, forgotten_at=now))
    return out


def seed_seen(state: Registry, seen: Mapping[str, datetime], now: datetime) -> dict[str, datetime]:
    """Heartbeat times with every healthy worker not heard from yet counted as heard `now`.

    Used when a discovery takes over: the workers get `lost_after_s` to show up before they are lost,
    instead of all being declared lost at once.
    """
    out = {w: t for w, t in seen.items() if w in state.workers}
    for worker_id, record in state.workers.items():
        if record.status == "healthy":
            out.setdefault(worker_id, now)
    return out


def evolve(state: Registry, event: Event) -> Registry:
    """The registry after one event (a new value; the old one is untouched)."""
    workers = state.workers
    record = workers.get(getattr(event, "worker_id", ""))
    if isinstance(event, ev.WorkerRegistered):
        changed = WorkerRecord(capabilities=event.capabilities, status="healthy", since=event.registered_at)
    elif record is None:
        return state
    elif isinstance(event, ev.WorkerLost):
        changed = msgspec.structs.replace(record, status="lost", since=event.lost_at)
    elif isinstance(event, ev.WorkerReturned):
        changed = msgspec.structs.replace(record, status="healthy", since=event.returned_at)
    elif isinstance(event, ev.WorkerDeregistered):
        changed = msgspec.structs.replace(record, status="left", since=event.deregistered_at)
    elif isinstance(event, ev.WorkerForgotten):
        return Registry(workers={w: r for w, r in workers.items() if w != event.worker_id})
    else:
        return state
    return Registry(workers={**workers, event.worker_id: changed})
