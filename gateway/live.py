"""What flows over /ws: topics, which stream subjects feed each, and how a stream message is rendered."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from contracts.base import is_valid_id
from contracts.codec import decode_message
from contracts.subjects import Topology
from contracts.telemetry import EpisodeReport, JobProgress, WorkerHeartbeat
from eventstore.ports import EventLog, RawMessage

EVENTS = "events"
TELEMETRY = "telemetry"
STREAMS = (EVENTS, TELEMETRY)
TELEMETRY_KINDS: dict[str, type] = {"progress": JobProgress, "episode": EpisodeReport,
                                    "heartbeat": WorkerHeartbeat}
ADMIN_TOPICS = frozenset({"events"})
RUNS = "runs"  # the earlier API's messages (gateway/runfeed.py), fed by the hub apart from the other topics
NETWORK = "network"  # this machine's "Open on your phone" link, sent again when its address changes (gateway/phone.py)
FIXED_TOPICS = frozenset({"jobs", "workers", "progress", "events", RUNS, NETWORK})
_encoder = msgspec.json.Encoder()


class Outgoing(NamedTuple):
    """One rendered stream message: its stream and sequence, the topics it belongs to, its JSON text."""

    stream: str
    seq: int
    topics: tuple[str, ...]
    text: str


def valid_topic(topic: str) -> bool:
    """`jobs`, `workers`, `progress`, `events`, `runs`, `network` or `job:<id>`."""
    if topic in FIXED_TOPICS:
        return True
    kind, _, key = topic.partition(":")
    return kind == "job" and is_valid_id(key)


def topic_role(topic: str) -> str:
    """The role a topic needs."""
    return "admin" if topic in ADMIN_TOPICS else "viewer"


def topic_subjects(topology: Topology, topic: str) -> dict[str, list[str]]:
    """The subjects of each stream that feed a topic (what a resume replays)."""
    if topic == "jobs":
        return {EVENTS: [topology.events("job")], TELEMETRY: []}
    if topic == "workers":
        return {EVENTS: [topology.events("worker")], TELEMETRY: [topology.telemetry("heartbeat")]}
    if topic == "progress":
        return {EVENTS: [], TELEMETRY: [topology.telemetry("progress")]}
    if topic == "events":
        return {EVENTS: [topology.all_events], TELEMETRY: []}
    if topic in (RUNS, NETWORK):  # live only: a resume replays nothing of it
        return {EVENTS: [], TELEMETRY: []}
    job_id = topic.partition(":")[2]
    return {EVENTS: [topology.events("job", job_id)],
            TELEMETRY: [topology.telemetry("progress", job_id), topology.telemetry("episode", job_id)]}


def event_topics(aggregate: str, aggregate_id: str) -> tuple[str, ...]:
    """The topics an event of this aggregate is published on."""
    if aggregate == "job":
        return (f"job:{aggregate_id}", "jobs", "events")
    if aggregate == "worker":
        return ("workers", "events")
    return ("events",)


def telemetry_topics(kind: str, key: str) -> tuple[str, ...]:
    """The topics a telemetry sample of this kind is published on."""
    if kind == "progress":
        return (f"job:{key}", "progress")
    if kind == "episode":
        return (f"job:{key}",)
    return ("workers",)


def subject_topics(topology: Topology, stream: str, subject: str) -> tuple[str, ...]:
    """The topics a stream message belongs to, from its subject alone (no decoding)."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != topology.prefix:
        return ()
    if stream == EVENTS:
        return event_topics(parts[2], parts[3]) if parts[1] == "events" else ()
    return telemetry_topics(parts[2], parts[3]) if parts[2] in TELEMETRY_KINDS else ()


def feeds_runs(topology: Topology, stream: str, subject: str) -> str | None:
    """What a stream message tells the `runs` feed: "event" (a job event), "progress", "episode", or None."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != topology.prefix:
        return None
    if stream == EVENTS:
        return "event" if parts[1] == "events" and parts[2] == "job" else None
    return parts[2] if parts[2] in ("progress", "episode") else None


def render_event(event_log: EventLog, msg: RawMessage) -> Outgoing | None:
    """An event as a `{"type": "event", …}` message; None for a malformed one."""
    stored = event_log.decode(msg)
    if stored is None:
        return None
    body = {"type": "event", "stream": EVENTS, "seq": stored.seq, "subject": stored.subject,
            "time": stored.time, "aggregate": stored.aggregate, "id": stored.aggregate_id,
            "event_type": stored.type, "event": stored.event}
    return Outgoing(EVENTS, stored.seq, event_topics(stored.aggregate, stored.aggregate_id),
                    _encoder.encode(body).decode())


def decode_sample(kind: str, data: bytes) -> Any | None:
    """A telemetry sample of this kind, or None for a malformed one."""
    try:
        return decode_message(TELEMETRY_KINDS[kind], data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def render_telemetry(topology: Topology, msg: RawMessage) -> Outgoing | None:
    """A progress, episode or heartbeat sample as a message of that type; None for anything else."""
    parts = msg.subject.split(".")
    if len(parts) != 4 or parts[0] != topology.prefix or parts[2] not in TELEMETRY_KINDS:
        return None
    kind, key = parts[2], parts[3]
    sample = decode_sample(kind, msg.data)
    if sample is None:
        return None
    data: Any = sample
    if kind == "episode":
        # Move logs can be megabytes; live clients get the figures, REST serves the log.
        data = {**msgspec.to_builtins(sample), "log": [], "moves_logged": len(sample.log)}
    seq = msg.metadata.sequence.stream
    body = {"type": kind, "stream": TELEMETRY, "seq": seq, "id": key, "data": data}
    return Outgoing(TELEMETRY, seq, telemetry_topics(kind, key), _encoder.encode(body).decode())


def render(event_log: EventLog, stream: str, msg: RawMessage) -> Outgoing | None:
    """Render a message of either stream."""
    if stream == EVENTS:
        return render_event(event_log, msg)
    return render_telemetry(event_log.topology, msg)


def control(kind: str, **fields: Any) -> str:
    """A server message that is not from a stream (welcome, subscribed, ping, error, …)."""
    return _encoder.encode({"type": kind, **fields}).decode()
