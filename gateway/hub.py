"""The live fan-out: one ordered consumer per stream, every message rendered once, offered to subscribers."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import msgspec

from contracts.events import JobAssigned
from eventstore.follow import cancel_and_wait, follow_forever
from eventstore.observability import get_logger
from eventstore.ports import EventLog
from eventstore.telemetry import assigned_workers
from gateway.live import (
    EVENTS,
    NETWORK,
    RUNS,
    STREAMS,
    TELEMETRY,
    Assignments,
    Outgoing,
    control,
    decode_sample,
    feeds_runs,
    render,
    subject_topics,
)
from gateway.runfeed import RunFeed

_encoder = msgspec.json.Encoder()
log = get_logger(component="gateway")

SLOW_CONSUMER = 4009
HOLD_MAX = 10_000  # telemetry messages held while one job's assignments are read (more are not shown)


class Subscriber:
    """One socket's view of the hub: its topics, a bounded queue, and the last sequence queued per stream."""

    def __init__(self, queue_size: int, token_id: str = "") -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.token_id = token_id
        self.topics: set[str] = set()
        self.sent = dict.fromkeys(STREAMS, 0)
        self.held: list[Outgoing] | None = None  # live messages kept back while a resume replays
        self.closing = asyncio.Event()
        self.close_code = 1000
        self.close_reason = ""

    def close(self, code: int, reason: str) -> None:
        """Ask the socket's session to close (the first reason wins)."""
        if not self.closing.is_set():
            self.close_code, self.close_reason = code, reason
            self.closing.set()

    def offer(self, message: Outgoing) -> None:
        """Take a live message without waiting; a full queue closes this subscriber, never slows the hub."""
        if self.held is not None:
            self.held.append(message)
            if len(self.held) > self.queue_size * 10:
                self.close(SLOW_CONSUMER, "too many live messages while catching up")
            return
        self.push(message)

    def push(self, message: Outgoing) -> None:
        """Queue a message unless this stream already got it (resume and overlapping topics)."""
        if message.seq <= self.sent[message.stream] or self.closing.is_set():
            return
        try:
            self.queue.put_nowait(message.text)
        except asyncio.QueueFull:
            self.close(SLOW_CONSUMER, f"slow consumer: {self.queue_size} messages waiting")
            return
        self.sent[message.stream] = message.seq

    async def push_waiting(self, message: Outgoing) -> None:
        """Queue a replayed message, waiting for room (a resume goes at the client's own pace)."""
        if message.seq <= self.sent[message.stream] or self.closing.is_set():
            return
        await self.queue.put(message.text)
        self.sent[message.stream] = message.seq

    def release_held(self) -> None:
        """After a replay: queue the live messages kept back, then take live ones directly."""
        held, self.held = self.held or [], None
        for message in held:
            self.push(message)

    def say(self, text: str) -> None:
        """Queue a control message (welcome, acknowledgements, pings, errors)."""
        try:
            self.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.close(SLOW_CONSUMER, f"slow consumer: {self.queue_size} messages waiting")


class Hub:
    """Follows the event and telemetry streams from now on and fans each message out by topic."""

    def __init__(self, event_log: EventLog) -> None:
        self.log = event_log
        self.positions = dict.fromkeys(STREAMS, 0)
        self.subscribers: set[Subscriber] = set()
        self._by_topic: dict[str, set[Subscriber]] = defaultdict(set)
        self._tasks: list[asyncio.Task[None]] = []
        self.runs = RunFeed()
        self.phone = None  # gateway.phone.PhoneLink: what the `network` topic sends
        self._pushes: set[asyncio.Task[None]] = set()
        self.assignments = Assignments()  # whose samples of each job are believed (JobAssigned names them)
        self._waiting: list | None = None  # telemetry held while a job's workers are learned (None: flowing)
        self._events_moved = asyncio.Event()  # set when the events stream's position moves on

    async def start(self) -> None:
        """Start following both streams from their current ends."""
        topology = self.log.topology
        sources = {EVENTS: (topology.events_stream, topology.all_events),
                   TELEMETRY: (topology.telemetry_stream, f"{topology.prefix}.telemetry.>")}
        for key, (stream, subject) in sources.items():
            self.positions[key] = await self.log.last_seq(stream)
            self._tasks.append(asyncio.create_task(self._follow(key, stream, subject), name=f"hub-{key}"))

    async def stop(self) -> None:
        """Stop following; close every subscriber as the server goes away."""
        await cancel_and_wait([*self._tasks, *self._pushes])
        for subscriber in list(self.subscribers):
            subscriber.close(1001, "the gateway is shutting down")

    async def _follow(self, key: str, stream: str, subject: str) -> None:
        # Keep serving through errors: the consumer resumes after the last dispatched message. It yields
        # every few messages, so socket writers run during a burst and a fast client never looks slow.
        await follow_forever(self.log, lambda: self.positions[key], lambda msg: self.dispatch(key, msg),
                             name=f"hub-{key}", filter_subject=subject, stream=stream)

    def dispatch(self, key: str, msg) -> None:
        """Render one message and offer it to every subscriber of its topics (a job's sample only from a
        worker the job was assigned to)."""
        seq = msg.metadata.sequence.stream
        if seq <= self.positions[key]:
            return
        self.passed(key, seq)
        if key == TELEMETRY:
            if self._waiting is not None:  # held, in order, while a job's workers are learned
                if len(self._waiting) < HOLD_MAX:
                    self._waiting.append(msg)
                return
            if self._must_ask(msg.subject):
                self._hold([msg])
                return
            if not self.assignments.believes(self.log.topology, msg.subject):
                return
        self._deliver(key, msg)

    def passed(self, key: str, seq: int) -> None:
        """The stream `key` is read up to `seq`."""
        self.positions[key] = seq
        if key == EVENTS:
            self._events_moved.set()

    async def events_after(self, seq: int, timeout: float) -> bool:
        """Wait until the events stream is read past `seq` (True) or `timeout` seconds pass (False)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self.positions[EVENTS] <= seq:
            self._events_moved.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._events_moved.wait(), left)
            except TimeoutError:
                return self.positions[EVENTS] > seq
        return True

    def _deliver(self, key: str, msg) -> None:
        self._feed_runs(key, msg)
        self._feed_network(key, msg)
        # Nobody watching: nothing to decode (telemetry can be high-rate).
        if not any(t in self._by_topic for t in subject_topics(self.log.topology, key, msg.subject)):
            return
        message = render(self.log, key, msg)
        if message is None:
            return
        for topic in message.topics:
            for subscriber in self._by_topic.get(topic, ()):
                subscriber.offer(message)

    def _must_ask(self, subject: str) -> bool:
        """Whether a watched job sample comes from a worker the hub does not know on the job, and has not asked
        the job's events about (assigned before the hub started, or its JobAssigned not heard yet)."""
        topology = self.log.topology
        if self.assignments.must_ask(topology, subject) is None:
            return False
        return RUNS in self._by_topic or any(t in self._by_topic for t in subject_topics(topology, TELEMETRY, subject))

    def _hold(self, waiting: list) -> None:
        """Hold telemetry (the first message's and what follows, in order) while its job's events are read."""
        self._waiting = waiting
        task = asyncio.create_task(self._learn(waiting[0].subject), name="hub-learn")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _learn(self, subject: str) -> None:
        topology = self.log.topology
        job = topology.parse_job_telemetry(subject)
        assert job is not None and job[2] is not None
        try:
            events, _version = await self.log.load("job", job[1])
            self.assignments.note(job[1], assigned_workers(events))
        except Exception as exc:  # the log is unavailable: not shown now; the next sample asks again
            log.warning("cannot read a job's assignments", job_id=job[1], error=repr(exc))
            self._release(failed=subject)
            return
        self.assignments.asked(job[1], job[2])
        self._release()

    def _release(self, failed: str | None = None) -> None:
        """Deliver the held telemetry in order, holding again at the next sample that must be asked about."""
        waiting, self._waiting = self._waiting or [], None
        for i, msg in enumerate(waiting):
            if msg.subject != failed and self._must_ask(msg.subject):
                self._hold(waiting[i:])
                return
            if self.assignments.believes(self.log.topology, msg.subject):
                self._deliver(TELEMETRY, msg)

    def _feed_runs(self, key: str, msg) -> None:
        """Job events always (the feed must know each run's kind); samples only while `runs` has subscribers."""
        what = feeds_runs(self.log.topology, key, msg.subject)
        watching = self._by_topic.get(RUNS)
        if what is None or (what != "event" and not watching):
            return
        if what == "event":
            stored = self.log.decode(msg)
            if stored is not None and isinstance(stored.event, JobAssigned):
                self.assignments.note(stored.event.job_id, (stored.event.worker_id,))
            messages = self.runs.on_event(stored.event) if stored is not None else []
        else:
            sample = decode_sample(what, msg.data)
            messages = [] if sample is None else self.runs.on_progress(sample) if what == "progress" \
                else self.runs.on_episode(sample)
        for message in messages:
            text = _encoder.encode(message).decode()
            for subscriber in watching or ():
                subscriber.say(text)

    def _feed_network(self, key: str, msg) -> None:
        """A NetworkChanged of this machine: the phone link learns it, and `network` subscribers get a new link."""
        if key != EVENTS or self.phone is None or msg.subject.split(".")[2:3] != ["network"]:
            return
        stored = self.log.decode(msg)
        if stored is None or not self.phone.on_event(stored.event):
            return
        for subscriber in self._by_topic.get(NETWORK, ()):
            self.push_network(subscriber)

    def push_network(self, subscriber: Subscriber) -> None:
        """Send the subscriber the current phone link (a `{"type": "network", …}` message), in the background."""
        if self.phone is None:
            return
        task = asyncio.create_task(self._send_network(subscriber), name="hub-network")
        self._pushes.add(task)
        task.add_done_callback(self._pushes.discard)

    async def _send_network(self, subscriber: Subscriber) -> None:
        try:
            view = await self.phone.view(subscriber.token_id)
        except PermissionError as exc:
            subscriber.say(control("error", code=403, detail=str(exc)))
            return
        except Exception as exc:  # the log is unavailable: the next change or subscribe tries again
            log.warning("cannot make the phone link", error=repr(exc))
            return
        subscriber.say(control("network", **msgspec.to_builtins(view)))

    def join(self, subscriber: Subscriber) -> None:
        """Register a socket's subscriber."""
        self.subscribers.add(subscriber)

    def leave(self, subscriber: Subscriber) -> None:
        """Forget a subscriber and its topics."""
        self.subscribers.discard(subscriber)
        self.unsubscribe(subscriber, list(subscriber.topics))

    def subscribe(self, subscriber: Subscriber, topics: list[str]) -> None:
        """Start offering the topics' messages to the subscriber."""
        for topic in topics:
            subscriber.topics.add(topic)
            self._by_topic[topic].add(subscriber)

    def unsubscribe(self, subscriber: Subscriber, topics: list[str]) -> None:
        """Stop offering the topics' messages."""
        for topic in topics:
            subscriber.topics.discard(topic)
            members = self._by_topic.get(topic)
            if members is not None:
                members.discard(subscriber)
                if not members:
                    del self._by_topic[topic]

    def revoke(self, token_id: str) -> None:
        """Close every socket authenticated with a token that was just revoked."""
        for subscriber in list(self.subscribers):
            if subscriber.token_id == token_id:
                subscriber.close(4401, "the token was revoked")
