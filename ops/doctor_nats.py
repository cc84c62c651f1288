"""`stoker doctor`'s probes that talk to NATS: reachable as this identity, the clock against the server's, and,
on a joined worker, the control plane with the worker's own credential."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client

from contracts.subjects import Topology
from eventstore.config import CommonSettings
from eventstore.connect import NatsRefused, NatsUnavailable, connect
from eventstore.credentials import operator_credential
from eventstore.log import JetStreamLog
from eventstore.ports import StreamMissing
from eventstore.server import NoPlatform, read_record, resolve_nats_ca, resolve_nats_url
from ops import doctor_domain as dd
from ops import doctor_rules as rules
from ops.joined import ca_path, read_joined, seed_path
from ops.lock import holder as lock_holder

CONNECT_TIMEOUT_S = 3.0


class Where(Protocol):
    """What a probe needs to know (ops.doctor.Context)."""

    settings: CommonSettings

    @property
    def data(self) -> Path: ...


async def _connect(url: str, credential: Path | None, ca: str | None) -> tuple[Client | None, str, bool]:
    """(connection, why not, refused)."""
    try:
        return await connect(url, "stoker-doctor", reconnect=False, credentials=credential, ca_file=ca,
                             timeout=CONNECT_TIMEOUT_S), "", False
    except NatsRefused as exc:
        return None, str(exc), True
    except NatsUnavailable as exc:
        return None, str(exc), False


async def probe_nats(ctx: Where) -> dd.Check:
    """Connect as the CLI would (its credential, the CA it pins) and look at the event log."""
    if read_joined(ctx.data) is not None:
        return dd.Check(id="nats", severity="skipped",
                        evidence="this data dir is a worker joined to a platform: see the control-plane check")
    settings = ctx.settings
    credential = operator_credential(settings.credentials_path, ctx.data)
    running_here = lock_holder(ctx.data) is not None
    try:
        url = resolve_nats_url(settings.nats_url, ctx.data)
    except NoPlatform:
        # Nothing said where NATS is and no embedded server of this data dir is recorded (even where `stoker up`
        # holds the lock: it has not started its server yet). Whatever else listens on this machine's 4222 says
        # nothing about this platform, and must not be sent this data dir's credential.
        base = rules.NatsFacts(url="no NATS URL", identity=str(credential) if credential else "no credential",
                               running_here=running_here)
        return rules.nats_check(_with(base, error=f"no platform runs from {ctx.data} (no embedded nats-server is "
                                                "recorded there, and no NATS URL is configured)"))
    ca = resolve_nats_ca(settings.nats_ca, settings.nats_url, ctx.data)
    base = rules.NatsFacts(url=url, identity=str(credential) if credential else "no credential", tls=ca or "",
                           running_here=running_here)
    nc, error, refused = await _connect(url, credential, ca)
    if nc is None:
        return rules.nats_check(_with(base, error=error, refused=refused))
    try:
        state = await JetStreamLog(nc, Topology(settings.prefix)).stream_state()
        events: int | None = state.messages
    except StreamMissing:
        events = None
    except (nats.errors.Error, TimeoutError) as exc:
        return rules.nats_check(_with(base, error=f"connected, but the event log does not answer: {exc!r}"))
    finally:
        await nc.close()
    return rules.nats_check(_with(base, events=events))


def _with(facts: rules.NatsFacts, **changes: Any) -> rules.NatsFacts:
    import msgspec

    return msgspec.structs.replace(facts, **changes)


def server_time(text: str) -> float:
    """A NATS timestamp (RFC 3339 with nanoseconds) as POSIX seconds."""
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


def _varz_now(http_port: int) -> tuple[float, float]:
    before = time.time()
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/varz", timeout=3) as response:
        body = json.loads(response.read())
    after = time.time()
    return (before + after) / 2, server_time(body["now"])


async def _jetstream_now(nc: Client, stream: str) -> tuple[float, float]:
    before = time.time()
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=3)
    after = time.time()
    body = json.loads(reply.data)
    if "ts" not in body:
        raise ValueError(body.get("error", {}).get("description") or "no timestamp in the answer")
    return (before + after) / 2, server_time(body["ts"])


async def probe_clock(ctx: Where) -> dd.Check:
    """This machine's clock against the server's: its monitor's /varz `now` (the embedded server), else the
    timestamp of a JetStream API answer (any server this identity may ask about the event log)."""
    record = read_record(ctx.data)
    if record and record.get("http_port"):
        try:
            here, there = await asyncio.to_thread(_varz_now, int(record["http_port"]))
            return rules.clock_check(here - there, f"/varz of the embedded server, port {record['http_port']}")
        except (OSError, ValueError, KeyError):
            pass
    settings = ctx.settings
    joined = read_joined(ctx.data)
    if joined is not None:
        url, credential, ca = joined.nats_url, seed_path(ctx.data), str(ca_path(ctx.data))
        stream = Topology(joined.prefix).dispatch_stream
    elif not settings.nats_url:
        return rules.clock_check(None, f"no NATS server to compare with: no platform runs from {ctx.data}")
    else:
        url = resolve_nats_url(settings.nats_url, ctx.data)
        credential = operator_credential(settings.credentials_path, ctx.data)
        ca = resolve_nats_ca(settings.nats_ca, settings.nats_url, ctx.data)
        stream = Topology(settings.prefix).events_stream
    nc, error, _refused = await _connect(url, credential, ca)
    if nc is None:
        return rules.clock_check(None, f"no NATS server to compare with ({error})")
    try:
        here, there = await _jetstream_now(nc, stream)
    except (nats.errors.Error, TimeoutError, ValueError) as exc:
        return rules.clock_check(None, f"the server at {url} does not tell this identity its time ({exc})")
    finally:
        await nc.close()
    return rules.clock_check(here - there, f"a JetStream answer from {url}")


async def probe_control_plane(ctx: Where) -> dd.Check:
    """A joined worker: reach the platform's NATS over TLS with the worker's own credential."""
    joined = read_joined(ctx.data)
    if joined is None:
        return dd.Check(id="control-plane", severity="skipped",
                        evidence="this data dir has not joined a platform (`stoker worker --join TOKEN` does)")
    facts = rules.NatsFacts(url=joined.nats_url, identity=f"worker {joined.worker_id} ({seed_path(ctx.data)})",
                         tls=str(ca_path(ctx.data)))
    nc, error, refused = await _connect(joined.nats_url, seed_path(ctx.data), str(ca_path(ctx.data)))
    if nc is None:
        return rules.registration_check(joined.worker_id, _with(facts, error=error, refused=refused))
    await nc.close()
    return rules.registration_check(joined.worker_id, facts)
