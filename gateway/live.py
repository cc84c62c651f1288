"""What flows over /ws: topics, which stream subjects feed each, and how a stream message is rendered."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, NamedTuple

import msgspec

from contracts.base import is_valid_id
from contracts.codec import decode_message
from contracts.subjects import Topology
from contracts.telemetry import EpisodeReport, JobProgress, WorkerHeartbeat
from eventstore.ports import EventLog, RawMessage
from eventstore.telemetry import trusted_sample

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
        return {EVENTS: [], TELEMETRY: [topology.job_telemetry("progress")]}
    if topic == "events":
        return {EVENTS: [topology.all_events], TELEMETRY: []}
    if topic in (RUNS, NETWORK):  # live only: a resume replays nothing of it
        return {EVENTS: [], TELEMETRY: []}
    job_id = topic.partition(":")[2]
    return {EVENTS: [topology.events("job", job_id)],
            TELEMETRY: [topology.job_telemetry("progress", job_id), topology.job_telemetry("episode", job_id)]}


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


def sample_kind_key(topology: Topology, subject: str) -> tuple[str, str] | None:
    """A telemetry subject's kind and id (a job's for progress and episodes, which name their worker after it)."""
    job = topology.parse_job_telemetry(subject)
    if job is not None:
        return (job[0], job[1]) if job[2] is not None else None  # live samples all name their worker
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != topology.prefix or parts[1] != "telemetry" or parts[2] not in TELEMETRY_KINDS:
        return None
    return parts[2], parts[3]


def subject_topics(topology: Topology, stream: str, subject: str) -> tuple[str, ...]:
    """The topics a stream message belongs to, from its subject alone (no decoding)."""
    if stream == EVENTS:
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != topology.prefix or parts[1] != "events":
            return ()
        return event_topics(parts[2], parts[3])
    found = sample_kind_key(topology, subject)
    return telemetry_topics(*found) if found is not None else ()


def feeds_runs(topology: Topology, stream: str, subject: str) -> str | None:
    """What a stream message tells the `runs` feed: "event" (a job event), "progress", "episode", or None."""
    if stream == EVENTS:
        parts = subject.split(".")
        ok = len(parts) == 4 and parts[0] == topology.prefix and parts[1] == "events" and parts[2] == "job"
        return "event" if ok else None
    job = topology.parse_job_telemetry(subject)
    return job[0] if job is not None and job[2] is not None else None


class Assignments:
    """The workers each job was assigned to, as far as the hub knows: the feed shows a job's sample only
    from one of them (a worker may publish for any job id, but only on subjects naming itself).

    Kept for the `size` most recently noted jobs. A sample from a worker not known to be on its job is
    looked up in the job's events once per job and worker (`must_ask`): the hub may have started after the
    assignment, or heard the sample before the JobAssigned (its two streams are followed apart).
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._jobs: OrderedDict[str, tuple[set[str], set[str]]] = OrderedDict()  # job: (its workers, asked)

    def knows(self, job_id: str) -> bool:
        """Whether the job's workers are known (possibly none)."""
        return job_id in self._jobs

    def _entry(self, job_id: str) -> tuple[set[str], set[str]]:
        entry = self._jobs.setdefault(job_id, (set(), set()))
        self._jobs.move_to_end(job_id)
        while len(self._jobs) > self.size:
            self._jobs.popitem(last=False)
        return entry

    def note(self, job_id: str, workers: Iterable[str]) -> None:
        """The job was assigned to these workers (more add to those known)."""
        self._entry(job_id)[0].update(workers)

    def asked(self, job_id: str, worker_id: str) -> None:
        """The job's events were read after a sample from this worker: it is on the job or never was."""
        self._entry(job_id)[1].add(worker_id)

    def must_ask(self, topology: Topology, subject: str) -> str | None:
        """The job whose events to read before judging this sample (a worker not yet known, not yet asked)."""
        job = topology.parse_job_telemetry(subject)
        if job is None or job[2] is None:
            return None
        workers, asked = self._jobs.get(job[1], ((), ()))
        return job[1] if job[2] not in workers and job[2] not in asked else None

    def believes(self, topology: Topology, subject: str) -> bool:
        """Whether a telemetry message may be shown: not a job's sample, or one from a worker the job is on."""
        job = topology.parse_job_telemetry(subject)
        return job is None or trusted_sample(job[2], self._jobs.get(job[1], ((),))[0])


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
    found = sample_kind_key(topology, msg.subject)
    if found is None:
        return None
    kind, key = found
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
